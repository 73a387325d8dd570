"""Starting parameters from disk (checkpoint.read_params / restore_pretrained_params): an
orbax checkpoint of a params pytree and a flax msgpack file restore the same values, and a
mismatch or a wrong path says what is wrong."""

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from adaptive_data import checkpoint as ckpt


def _params():
    rng = np.random.default_rng(0)
    return {
        "embed": {"embedding": rng.normal(size=(7, 4)).astype(np.float32)},
        "block_0": {"wi_gate": {"kernel": rng.normal(size=(4, 6)).astype(np.float32)}},
    }


def _save_both(params, tmp_path):
    orbax_dir = tmp_path / "orbax_params"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(orbax_dir, params)
    checkpointer.wait_until_finished()
    msgpack_file = tmp_path / "params.msgpack"
    msgpack_file.write_bytes(flax.serialization.to_bytes(params))
    return str(orbax_dir), str(msgpack_file)


def test_orbax_and_msgpack_params_restore_the_same_values(tmp_path):
    params = _params()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    for path in _save_both(params, tmp_path):
        restored = ckpt.restore_pretrained_params(path, abstract)
        assert jax.tree.structure(restored) == jax.tree.structure(params)
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
            np.testing.assert_array_equal(np.asarray(a), b)


def test_params_of_another_shape_and_missing_paths_are_refused(tmp_path):
    params = _params()
    paths = _save_both(params, tmp_path)
    wider = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    wider["embed"]["embedding"] = jax.ShapeDtypeStruct((10, 4), np.float32)  # V + 3 rows
    for path in paths:
        with pytest.raises(
            ckpt.ConfigMismatchError, match=r"first difference at 'embed/embedding'"
        ):
            ckpt.restore_pretrained_params(path, wider)
    with pytest.raises(FileNotFoundError, match="StandardCheckpointer"):
        ckpt.read_params(str(tmp_path / "nothing_here"))
