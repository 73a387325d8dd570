"""Timing loops (see experiments/README.md) and the wall-clock budget of a script.

- "synced": ``repeats`` calls after ``warmup`` calls, each followed by
  ``jax.block_until_ready``; the median (and min) per call is reported;
- "pipelined" (training steps only): ``steps`` calls dispatched back to back, one
  ``block_until_ready`` at the end; the mean per step is reported.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax


def time_calls(call: Callable[[], Any], *, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` synced calls of ``call()`` after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    return times


def tree_signature(tree):
    """(treedef, [(shape, dtype, weak_type)]): what decides whether jit recompiles."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(tuple(x.shape), str(x.dtype), bool(jax.typeof(x).weak_type)) for x in leaves]


def signature_diff(before, after) -> str:
    """Human-readable difference of two ``tree_signature``s ('' if equal)."""
    if before[0] != after[0]:
        return "tree structure changed"
    diffs = [f"leaf {i}: {a} -> {b}" for i, (a, b) in enumerate(zip(before[1], after[1])) if a != b]
    return "; ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")


@dataclasses.dataclass
class StepTiming:
    synced_s: list[float]
    pipelined_s: float | None  # mean per step, or None if not measured
    recompile: str  # '' if the step's output state has its input's signature


def time_train_step(
    compiled, state, batches, *, warmup: int, repeats: int, pipelined_steps: int = 0
) -> tuple[StepTiming, Any]:
    """Times a donated ``step(state, batches) -> (state, metrics)``, threading the state.

    Also checks that the returned state has the signature of the input state (else the
    driver's ``jax.jit`` would compile the step a second time at step 2).
    """
    before = tree_signature(state)
    state, metrics = compiled(state, batches)
    jax.block_until_ready((state, metrics))
    recompile = signature_diff(before, tree_signature(state))
    for _ in range(max(warmup - 1, 0)):
        state, metrics = compiled(state, batches)
    jax.block_until_ready((state, metrics))
    synced = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batches)
        jax.block_until_ready((state, metrics))
        synced.append(time.perf_counter() - t0)
    pipelined = None
    if pipelined_steps > 0:
        t0 = time.perf_counter()
        for _ in range(pipelined_steps):
            state, metrics = compiled(state, batches)
        jax.block_until_ready((state, metrics))
        pipelined = (time.perf_counter() - t0) / pipelined_steps
    return StepTiming(synced, pipelined, recompile), state


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


class Budget:
    """Wall-clock budget of a script: ``exhausted()`` once ``seconds`` have passed (0: never)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self) -> bool:
        return self.seconds > 0 and self.elapsed() > self.seconds
