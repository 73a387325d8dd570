"""One device mesh over every device of every process, and the shardings derived from it.

The mesh has axes ``("data", "fsdp")`` with ``fsdp = config.mesh.fsdp`` devices per
parameter shard group (1: parameters replicated, plain data parallelism) and
``data = device_count / fsdp``. Batches are split over both axes (every device holds
``global_batch / device_count`` examples); parameters and optimiser/method state are
replicated, or with FSDP split along their largest divisible dimension over ``fsdp``: a
rule by shape alone, so it fits any model; a model entry may override it leaf by leaf
(``ModelSpec.partition``). Every state sharding is derived from ``jax.eval_shape`` of the
state's init function, so the same code runs on 1 CPU, 8 simulated CPU devices, several
processes and a pod.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
# FSDP shards only leaves of at least this many elements (small ones stay replicated).
FSDP_MIN_SIZE = 2**14


def make_mesh(fsdp: int = 1) -> Mesh:
    """A ("data", "fsdp") mesh over all devices; ``fsdp`` must divide the device count."""
    n = jax.device_count()
    if fsdp < 1 or n % fsdp:
        raise ValueError(
            f"config.mesh.fsdp={fsdp} must be a positive divisor of the number of devices ({n})."
        )
    return jax.make_mesh(
        (n // fsdp, fsdp), BATCH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (example) axis split over every device."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _leaf_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """The default rule: leaves of at least ``FSDP_MIN_SIZE`` elements split over "fsdp"
    along their largest dimension divisible by ``fsdp``; everything else replicated."""
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def leaf_path(path) -> str:
    """The "/"-joined keys of a ``jax.tree_util`` key path, e.g. ``params/block_0/mlp/kernel``
    (dict keys, attribute names and sequence indices alike)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def state_shardings(abstract_state: Any, mesh: Mesh, partition=None) -> Any:
    """Shardings of every leaf of a state pytree (from ``jax.eval_shape``).

    ``partition(path, shape, fsdp) -> PartitionSpec | None`` (a model entry's
    ``ModelSpec.partition``; ``path`` from ``leaf_path``) decides a leaf first; None (no
    rule, or no answer for that leaf) falls back to the default rule by shape.
    """
    fsdp = mesh.shape["fsdp"]

    def leaf_sharding(path, x):
        shape = tuple(x.shape)
        spec = None if partition is None else partition(leaf_path(path), shape, fsdp)
        return NamedSharding(mesh, _leaf_spec(shape, fsdp) if spec is None else spec)

    return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_state)


def check_divisible(value: int, key: str) -> None:
    """Global batch sizes must split evenly over processes and devices."""
    for count, what in (
        (jax.process_count(), "number of processes"),
        (jax.device_count(), "number of devices"),
    ):
        if value % count:
            raise ValueError(
                f"{key}={value} is not divisible by the {what} ({count}); set "
                f"{key} to a multiple of {count}."
            )


def to_global(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Global arrays from this process's rows (``global_batch / process_count`` each)."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def process_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous slice of a batch every process built in full."""
    n = len(next(iter(batch.values())))
    per_process = n // jax.process_count()
    start = jax.process_index() * per_process
    return {k: v[start : start + per_process] for k, v in batch.items()}


def to_host(tree: Any) -> Any:
    """Numpy values of a pytree of replicated arrays, also when they span several processes.

    (``jax.device_get`` refuses arrays that are not fully addressable; a replicated
    array has a full copy on every device, so this process's first shard is the value.)
    """

    def leaf(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.sharding.is_fully_replicated:
                raise ValueError(f"to_host needs a replicated array, got sharding {x.sharding}.")
            return np.asarray(x.addressable_shards[0].data)
        return np.asarray(x)

    return jax.tree.map(leaf, tree)
