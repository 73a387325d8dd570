"""Mesh and sharding rules (the multi-device runs themselves are in test_distributed.py)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from adaptive_data import run_setup, sharding

from conftest import tiny_config


def test_fsdp_shards_large_leaves_along_their_largest_divisible_dimension():
    big = sharding.FSDP_MIN_SIZE
    assert sharding._leaf_spec((big // 64, 64), fsdp=4) == P("fsdp", None)
    assert sharding._leaf_spec((64, big // 64), fsdp=4) == P(None, "fsdp")
    assert sharding._leaf_spec((259, 128), fsdp=4) == P(None, "fsdp")  # 259 is not divisible
    assert sharding._leaf_spec((10, 10), fsdp=4) == P()  # small: replicated
    assert sharding._leaf_spec((big // 64, 64), fsdp=1) == P()  # no FSDP


def test_state_shardings_on_one_device_are_replicated():
    mesh = sharding.make_mesh(1)
    state = {
        "w": jax.ShapeDtypeStruct((256, 256), np.float32),
        "step": jax.ShapeDtypeStruct((), np.int32),
    }
    specs = jax.tree.map(lambda s: s.spec, sharding.state_shardings(state, mesh))
    assert specs == {"w": P(), "step": P()}


def test_bad_fsdp_and_indivisible_batch_name_the_key():
    with pytest.raises(ValueError, match=r"config.mesh.fsdp=\d+ must be a positive divisor"):
        sharding.make_mesh(jax.device_count() + 1)
    if jax.device_count() > 1:
        with pytest.raises(ValueError, match=r"config.train.batch_size=\d+ is not divisible"):
            sharding.check_divisible(jax.device_count() + 1, "config.train.batch_size")
    sharding.check_divisible(jax.device_count() * 4, "config.train.batch_size")


def test_to_global_and_to_host_round_trip():
    mesh = sharding.make_mesh(1)
    local = {"x": np.arange(8, dtype=np.int32).reshape(4, 2)}
    arrays = sharding.to_global(local, sharding.batch_sharding(mesh))
    np.testing.assert_array_equal(sharding.to_host(arrays)["x"], local["x"])
    assert sharding.process_rows(local)["x"].shape == (4, 2)


def _specs_by_path(shardings):
    leaves = jax.tree_util.tree_leaves_with_path(shardings)
    return {sharding.leaf_path(path): s.spec for path, s in leaves}


@pytest.mark.usefixtures("example_model_only_here")
def test_a_model_the_package_has_never_seen_is_sharded_by_shape_or_by_its_own_rule():
    """examples/rope_lm.py (parameter names the package does not know): without a rule every
    leaf of the train state follows the default rule by shape; with the entry's rule its
    MLP kernels (parameters and Adam moments alike) take the entry's layout."""
    config = tiny_config(
        "method=anograd,model=rope_lm,extra_modules=examples.rope_lm,runlocal",
        **{"model.width": 64, "model.mlp_dim": 128, "model.num_heads": 4},
    )
    setup = run_setup.build(config, domains=("generic", "target"), target_domain="target")
    abstract = setup.abstract_state()
    shapes = {
        sharding.leaf_path(p): tuple(x.shape)
        for p, x in jax.tree_util.tree_leaves_with_path(abstract)
    }
    mesh = jax.sharding.AbstractMesh((2, 4), sharding.BATCH_AXES)
    by_shape = _specs_by_path(sharding.state_shardings(abstract, mesh))
    assert by_shape == {path: sharding._leaf_spec(shape, 4) for path, shape in shapes.items()}
    # The untied head [D=64, V=259]: V is not divisible by 4, so it splits along D.
    assert by_shape["params/head/kernel"] == P("fsdp", None)
    with_rule = _specs_by_path(sharding.state_shardings(abstract, mesh, setup.model.partition))
    mlp_in = [p for p in shapes if p.endswith(("wi_gate/kernel", "wi_up/kernel"))]
    mlp_out = [p for p in shapes if p.endswith("wo/kernel")]
    # Parameters, Adam's mu and nu: three of each kernel per block.
    assert len(mlp_in) == 2 * 3 * config.model.num_layers
    assert len(mlp_out) == 3 * config.model.num_layers
    for path, spec in with_rule.items():
        if path in mlp_in:
            assert spec == P(None, "fsdp"), path
        elif path in mlp_out:
            assert spec == P("fsdp", None), path
        else:
            assert spec == by_shape[path], path
    # The rule differs from the default here: the kernels are below FSDP_MIN_SIZE.
    assert all(by_shape[p] == P() for p in mlp_in + mlp_out)
