"""Mesh and sharding rules (the multi-device runs themselves are in test_distributed.py)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from adaptive_data import sharding


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
