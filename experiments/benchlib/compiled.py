"""Ahead-of-time compilation: lower + compile times, XLA's memory and FLOP counts, and the
driver's training step of a method compiled for timing.

Every function is jitted, lowered and compiled ahead of time (``jit(f).lower(*args)
.compile()``); ``lower_s`` is tracing + lowering, ``compile_s`` the XLA compile. Memory is
XLA's compiled memory analysis (deterministic; argument, output, temp and alias bytes of
the executable).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax

from adaptive_data import methods, run_setup
from adaptive_data.step_cost import xla_flops

from .configs import param_count
from .data import DOMAINS, TARGET_DOMAIN, method_batches
from .machine import MB, device_limit_mb

# CPU donation is not always possible; the warning says nothing about speed.
warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")


@dataclasses.dataclass
class Compiled:
    fn: Any  # the jax.stages.Compiled executable
    lower_s: float
    compile_s: float
    memory: dict[str, float]
    xla_flops: float | None


def compile_fn(
    fn: Callable, args: Sequence[Any], *, donate_argnums=(), **static_kwargs
) -> Compiled:
    """jit (unless ``fn`` is jitted already) + lower + compile ahead of time, with
    ``static_kwargs`` bound; times each phase, reads memory and FLOPs."""
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn, donate_argnums=donate_argnums)
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, **static_kwargs)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return Compiled(compiled, t1 - t0, t2 - t1, memory_analysis(compiled), xla_flops(compiled))


def memory_analysis(compiled) -> dict[str, float]:
    """MiB of the executable's buffers from XLA's memory analysis ({} if unavailable).

    ``peak_mb`` = argument + output + temp - alias: everything the executable holds
    while it runs (temp is XLA's buffer assignment, reuse included; a buffer aliased to
    an input, e.g. a donated state, is counted once). XLA's own ``peak_memory_in_bytes``
    is kept as ``reported_peak`` (on CPU it does not include the temp buffers).
    """
    try:
        stats = compiled.memory_analysis()
    except Exception:  # backend without memory analysis
        return {}
    if stats is None:
        return {}
    out = {
        name: getattr(stats, f"{name}_size_in_bytes", 0) / MB
        for name in ("argument", "output", "temp", "alias", "generated_code")
    }
    out["reported_peak"] = (getattr(stats, "peak_memory_in_bytes", 0) or 0) / MB
    out["peak_mb"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def check_fits(compiled: Compiled, what: str) -> None:
    """Raises MemoryError before running an executable that XLA says cannot fit."""
    limit, need = device_limit_mb(), compiled.memory.get("peak_mb")
    if limit is not None and need is not None and need > limit:
        raise MemoryError(
            f"{what}: XLA needs {need:,.0f} MiB > device limit {limit:,.0f} MiB "
            "(use a smaller big batch, or chunking)"
        )


@dataclasses.dataclass
class TrainStep:
    """A method's jitted, compiled training step, ready to time."""

    method: methods.Method
    config: Any
    compiled: Compiled
    state: Any
    batches: dict[str, Any]
    num_params: int

    @property
    def big_batch(self) -> int:
        return int(self.method.streams["generic"][1])


def build_train_step(config, *, seed: int = 0) -> TrainStep:
    """The driver's step of ``config.method`` (``methods.jit_train_step``, state donated),
    compiled for the flags of step 1; single device, no mesh."""
    setup = run_setup.build(config, domains=DOMAINS, target_domain=TARGET_DOMAIN)
    method, state = setup.method, setup.initial_state()
    # Step 1 is after the selection warm-up (make_config sets it to 0): scoring and
    # selection on; the outer update on when outer.every divides 1.
    batches = method_batches(method, config.model.max_length, seed=seed + 1)
    compiled = compile_fn(methods.jit_train_step(method), (state, batches), **method.flags(1))
    check_fits(compiled, f"step of {config.method}")
    return TrainStep(method, config, compiled, state, batches, param_count(state.params))
