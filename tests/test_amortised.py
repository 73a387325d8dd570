"""Amortised selection (docs/algorithms.md, "Compute accounting"): the outer update every
N steps, frozen after a step, or on a fraction of its batches. Checked against a naive
schedule, the example ids each update sees, and XLA's FLOP count of the compiled steps."""

import dataclasses

import jax
import numpy as np
import pytest

from adaptive_data import methods, run_setup
from adaptive_data.core.outer.base import OuterMethod

from conftest import tiny_config

DOMAINS = ("generic_a", "generic_b", "target")
WEIGHTING_METHODS = ("anograd", "soba", "dds")


def _setup(name: str, **overrides) -> run_setup.RunSetup:
    config = tiny_config(f"method={name},runlocal", **overrides)
    return run_setup.build(config, domains=DOMAINS, target_domain="target")


def test_outer_updates_follow_every_and_stop_after():
    warmup, every, stop_after, steps = 3, 4, 15, 30
    method = _setup(
        "anograd",
        **{
            "select.warmup_steps": warmup,
            "outer.every": every,
            "outer.stop_after": stop_after,
        },
    ).method
    updated = [s for s in range(steps) if method.flags(s)["outer_update"]]
    assert updated == [4, 8, 12]  # naive: after the warm-up, multiples of 4, before 15
    # Frozen phi still scores: selection stays active after stop_after.
    assert all(method.flags(s)["active"] for s in range(warmup, steps))
    never = _setup("anograd", **{"select.warmup_steps": warmup, "outer.every": every}).method
    assert [s for s in range(steps) if never.flags(s)["outer_update"]][-1] == 28


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2])
def test_batch_fraction_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match=r"config.outer.batch_fraction=.*must be a number"):
        _setup("anograd", **{"outer.batch_fraction": bad})


def test_stop_after_must_be_positive():
    with pytest.raises(ValueError, match=r"config.outer.stop_after=0: must be an int >= 1"):
        _setup("anograd", **{"outer.stop_after": 0})


@pytest.mark.parametrize("name", WEIGHTING_METHODS)
def test_outer_update_sees_a_random_fraction_of_each_batch(name, method_batches):
    """At fraction 1/2 the outer update gets 2 distinct examples of its documented generic
    batch and 2 distinct target examples; over seeds, different subsets."""
    setup = _setup(name, **{"outer.batch_fraction": 0.5})
    original = setup.method
    seen = []

    def update(phi, state, theta, generic, target, key):  # records, updates nothing
        del theta, key
        seen.append((np.asarray(generic["example_id"]), np.asarray(target["example_id"])))
        return phi, state, {}

    method = dataclasses.replace(original, outer=OuterMethod(original.outer.init, update))
    subsets = set()
    for seed in range(4):
        batches = method_batches(method, seed=0)
        state = setup.initial_state()
        state = state.replace(step=state.step + seed)  # another step key, same parameters
        with jax.disable_jit():
            methods.train_step(state, batches, method=method, active=True, outer_update=True)
        generic_ids, target_ids = seen[-1]
        documented = np.asarray(batches["generic"]["example_id"])
        if original.outer_batch == "uniform":
            documented = documented[: original.batch_size]
        b_target = batches["target"]["example_id"].shape[0]
        assert len(set(generic_ids)) == len(generic_ids) == np.ceil(0.5 * original.batch_size)
        assert len(set(target_ids)) == len(target_ids) == np.ceil(0.5 * b_target)
        assert set(target_ids) <= set(np.asarray(batches["target"]["example_id"]))
        if original.outer_batch != "selected":
            assert set(generic_ids) <= set(documented)
        subsets.add((tuple(sorted(generic_ids)), tuple(sorted(target_ids))))
    assert len(subsets) > 1


def _step_flops(setup: run_setup.RunSetup, outer_update: bool) -> float:
    method = setup.method
    batches = {
        s: {
            "inputs": jax.ShapeDtypeStruct((n, 16), np.int32),
            "targets": jax.ShapeDtypeStruct((n, 16), np.int32),
            "mask": jax.ShapeDtypeStruct((n, 16), np.float32),
            "num_bytes": jax.ShapeDtypeStruct((n,), np.int32),
            "domain": jax.ShapeDtypeStruct((n,), np.int32),
        }
        for s, (_, n) in method.streams.items()
    }
    compiled = (
        methods.jit_train_step(method)
        .lower(setup.abstract_state(), batches, active=True, outer_update=outer_update)
        .compile()
    )
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


@pytest.mark.parametrize("name", WEIGHTING_METHODS)
def test_skipped_and_subsampled_outer_updates_cost_less(name):
    """A step without the outer update does not compute it, and at batch fraction 1/4 the
    outer update's own FLOPs (step with it minus step without) shrink by about 4x."""
    full = _setup(name, **{"train.batch_size": 8, "train.target_batch_size": 8})
    quarter = _setup(
        name,
        **{"train.batch_size": 8, "train.target_batch_size": 8, "outer.batch_fraction": 0.25},
    )
    skipped = _step_flops(full, outer_update=False)
    outer_full = _step_flops(full, outer_update=True) - skipped
    outer_quarter = _step_flops(quarter, outer_update=True) - skipped
    assert skipped > 0 and outer_full > 0.5 * skipped  # the outer update is no small part
    assert 2.5 < outer_full / outer_quarter < 5.0
