"""What the benchmarks run: the default config set up for timing, and the method lists.

``ALL_METHODS`` and ``SELECTION_METHODS`` derive from the registry
(``adaptive_data.methods.names``), so a registered method is benchmarked by default.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from adaptive_data import config_args, methods

from .paths import REPO_ROOT

# Every registered method that trains on its own (finetune, cds and rho need other runs'
# workdirs), and those of them that select.
ALL_METHODS = methods.names(needs_other_runs=False)
SELECTION_METHODS = methods.names(needs_other_runs=False, selecting=True)


def load_config(arg: str = "") -> Any:
    """``configs/default.py:get_config(arg)``."""
    return config_args.load_config(REPO_ROOT / "configs" / "default.py", arg)


def resolve_dtype(dtype: str) -> str:
    """``auto``: bfloat16 on accelerators, float32 on CPU; else the name unchanged."""
    if dtype == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype must be auto, float32 or bfloat16, got {dtype!r}")
    return dtype


def make_config(
    method: str,
    *,
    size: str,
    batch_size: int,
    downsampling: int,
    dtype: str,
    target_batch_size: int | None = None,
    chunk_size: int | None = None,
):
    """The default config of ``method`` at ``size``, set up for benchmarking.

    The selection warm-up is 0 and the outer update runs every step, so that every
    timed step does the full work of the method (during warm-up the driver runs a
    separately compiled step without the scorer and the outer update).
    """
    config = load_config(f"method={method},size={size}")
    config.train.batch_size = int(batch_size)
    config.train.target_batch_size = int(target_batch_size or batch_size)
    config.train.steps = 100_000  # only shapes the learning-rate schedule
    config.train.warmup_steps = 10
    config.select.downsampling = int(downsampling)
    config.select.warmup_steps = 0
    config.outer.every = 1
    config.model.dtype = dtype
    if chunk_size is not None:
        config.align_filter.chunk_size = int(chunk_size)
    return config


def param_count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
