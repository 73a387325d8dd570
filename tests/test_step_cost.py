"""A run's training FLOPs (``adaptive_data.step_cost``) against a count by hand: each step's
program from the schedule of the config (selection warm-up, outer update every k steps
until it stops), each program's FLOPs compiled once. A few tiny compiles."""

import pytest

from adaptive_data import step_cost

from conftest import tiny_config

STEPS, WARMUP, EVERY, STOP_AFTER = 13, 3, 4, 12


def _anograd_config():
    return tiny_config(
        "method=anograd,runlocal",
        **{
            "train.steps": STEPS,
            "select.warmup_steps": WARMUP,
            "outer.every": EVERY,
            "outer.stop_after": STOP_AFTER,
        },
    )


def _phase_by_hand(t: int) -> str:
    """The program step t runs (configs/default.py): uniform before the selection warm-up
    ends; after it, the outer update at steps that are multiples of outer.every before
    outer.stop_after."""
    if t < WARMUP:
        return "warmup"
    return "select_outer" if t % EVERY == 0 and t < STOP_AFTER else "select"


def test_run_flops_is_the_sum_over_steps_of_the_program_each_step_runs():
    config = _anograd_config()
    per_phase = step_cost.step_flops(
        config,
        lambda method: {
            "warmup": {"active": False, "outer_update": False},
            "select": {"active": True, "outer_update": False},
            "select_outer": {"active": True, "outer_update": True},
        },
    )
    # Three different programs: a misattributed step would change the total.
    assert per_phase["warmup"] < per_phase["select"] < per_phase["select_outer"], per_phase
    phases = [_phase_by_hand(t) for t in range(STEPS)]
    assert phases.count("select_outer") == 2  # steps 4 and 8; 12 is past stop_after
    expected = 0.0
    for phase in phases:
        expected += per_phase[phase]
    assert step_cost.run_flops(config) == pytest.approx(expected, rel=1e-12)


def test_cost_ratio_is_one_for_base_and_above_one_for_the_exact_filter():
    config = _anograd_config()
    assert step_cost.cost_ratio(config, "base") == 1.0
    base = tiny_config("method=base,runlocal", **{"train.steps": STEPS})
    assert step_cost.run_flops(base) == pytest.approx(
        STEPS * step_cost.step_flops(base)["warmup"], rel=1e-12
    )
    assert step_cost.cost_ratio(config, "align_filter") > 1.5  # B gradients per b examples


class _Compiled:
    def __init__(self, cost):
        self._cost = cost

    def cost_analysis(self):
        if isinstance(self._cost, Exception):
            raise self._cost
        return self._cost


@pytest.mark.parametrize(
    "cost, expected",
    [
        ({"flops": 12.0, "bytes accessed": 3.0}, 12.0),
        ([{"flops": 7.0}], 7.0),  # older jax: one dict per program
        ([], None),
        ({"bytes accessed": 3.0}, None),
        (RuntimeError("no cost analysis on this backend"), None),
    ],
)
def test_xla_flops_reads_the_count_or_says_there_is_none(cost, expected):
    assert step_cost.xla_flops(_Compiled(cost)) == expected
