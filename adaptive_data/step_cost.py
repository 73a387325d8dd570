"""What a run's training costs in FLOPs, as XLA counts them on the compiled train step.

A method's train step compiles to one program per set of static flags (``Method.flags``:
selection active or not, outer update or not), so a run's cost is the FLOPs of each program
times the number of steps that run it. Only shapes matter: the state and the batches are
abstract (``jax.ShapeDtypeStruct``), nothing is read or trained.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence

import jax

from adaptive_data import config_args, methods, run_setup

# The domain vocabulary of the abstract setup: only its size and the target's id matter.
_DOMAINS = ("generic_a", "generic_b", "target")


def xla_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled program as XLA's cost analysis counts them (None
    when the backend gives no count)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 (some backends raise instead of returning nothing)
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def _abstract_batch(n: int, length: int, document_score: bool) -> dict[str, jax.ShapeDtypeStruct]:
    i32, f32 = jax.numpy.int32, jax.numpy.float32
    batch = {
        "inputs": jax.ShapeDtypeStruct((n, length), i32),
        "targets": jax.ShapeDtypeStruct((n, length), i32),
        "mask": jax.ShapeDtypeStruct((n, length), f32),
        "num_bytes": jax.ShapeDtypeStruct((n,), i32),
        "domain": jax.ShapeDtypeStruct((n,), i32),
    }
    if document_score:  # Method.document_scorer: a host-side score per example
        batch["document_score"] = jax.ShapeDtypeStruct((n,), f32)
    return batch


def _warmup_and_active(method) -> dict[str, dict[str, bool]]:
    return {
        "warmup": {"active": False, "outer_update": False},
        "active": method.flags(max(method.selection_warmup_steps, 0)),
    }


# ``phases(method) -> {name: static flags of the step}``.
Phases = Callable[[methods.Method], Mapping[str, Mapping[str, bool]]]


def step_flops(config, phases: Phases = _warmup_and_active) -> dict[str, float | None]:
    """XLA FLOPs of one train step of ``config``'s method in each of its phases.

    Args:
      config: a validated run config (its method, model and batch sizes are what count).
      phases: ``phases(method) -> {name: static flags of the step}``; default ``warmup``
        (no selection, no outer update) and ``active`` (the step after the selection
        warm-up).

    Returns:
      ``{name: FLOPs of one step}`` (None where the backend counts none).
    """
    setup = _abstract_setup(config)
    return _compiled_flops(setup, config.model.max_length, phases(setup.method))


def _abstract_setup(config) -> run_setup.RunSetup:
    return run_setup.build(config, domains=_DOMAINS, target_domain="target")


def _compiled_flops(
    setup: run_setup.RunSetup, max_length: int, flags_by_phase: Mapping[str, Mapping[str, bool]]
) -> dict[str, float | None]:
    """XLA FLOPs of ``setup``'s train step compiled with each phase's static flags."""
    method = setup.method
    batches = {
        stream: _abstract_batch(n, max_length, method.document_scorer is not None)
        for stream, (_, n) in method.streams.items()
    }
    step = methods.jit_train_step(method)
    state = setup.abstract_state()
    return {
        phase: xla_flops(step.lower(state, batches, **flags).compile())
        for phase, flags in flags_by_phase.items()
    }


def run_flops(config) -> float:
    """Training FLOPs of ``config``'s run: ``sum over steps t < train.steps`` of the FLOPs
    of the program step t runs (``Method.flags(t)``), reference runs not included.

    Raises:
      ValueError: the backend gives no FLOP count.
    """
    setup = _abstract_setup(config)
    counts = collections.Counter(
        tuple(sorted(setup.method.flags(t).items())) for t in range(int(config.train.steps))
    )
    flops = _compiled_flops(setup, config.model.max_length, {key: dict(key) for key in counts})
    if any(v is None for v in flops.values()):
        raise ValueError(
            f"XLA gives no FLOP count for config.method={config.method!r} on "
            f"{jax.default_backend()}: the run's cost cannot be measured on this backend."
        )
    return float(sum(flops[key] * n for key, n in counts.items()))


def cost_ratios(config, names: Sequence[str]) -> dict[str, float]:
    """``{method: run FLOPs of config run with it / those of base}`` for each of ``names``:
    how many times base's compute each method spends for the same number of model
    updates (base's program compiled once)."""
    base = run_flops(config_args.override(config, {"method": "base"}))
    return {
        name: run_flops(config_args.override(config, {"method": name})) / base for name in names
    }


def cost_ratio(config, method: str) -> float:
    """``cost_ratios`` of one method."""
    return cost_ratios(config, [method])[method]
