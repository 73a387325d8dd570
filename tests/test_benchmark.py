"""experiments/benchmark.py: early stopping on target_valid, ties within seed noise, FLOPs
accounting and the grid's method list (the end-to-end run is the quick preset in CI)."""

import math
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import benchmark  # noqa: E402

from adaptive_data.methods import METHODS  # noqa: E402


def test_grid_covers_every_registered_method_but_finetune():
    assert set(benchmark.GRID_METHODS) == set(METHODS) - {"finetune"}
    assert {
        "classifier",
        "cds",
        "dsir",
        "rho",
        "anograd",
        "soba",
        "dds",
        "l2rw",
        "align_filter",
        "domain_mixture",
    } == set(benchmark.SELECTION_METHODS)


def test_finetuned_bpb_is_read_at_the_best_target_valid_step_not_the_best_test_step():
    rows = [
        {"step": 0, "eval/target_valid_bpb": 3.0, "eval/target_bpb": 3.1},
        {"step": 10, "eval/target_valid_bpb": 2.5, "eval/target_bpb": 2.9},
        {"step": 20, "eval/target_valid_bpb": 2.7, "eval/target_bpb": 2.4},
        {"step": 25, "train/loss": 1.0},
    ]
    assert benchmark.finetuned_test_bpb(rows) == 2.9


def test_flops_count_each_phase_for_its_steps():
    per_step = {"warmup": 10.0, "active": 25.0}
    assert benchmark.run_flops(per_step, steps=100, warmup=20) == 20 * 10.0 + 80 * 25.0
    assert benchmark.run_flops(per_step, steps=5, warmup=20) == 50.0
    assert benchmark.run_flops(per_step, steps=30, warmup=20) == 20 * 10.0 + 10 * 25.0


def _row(method, seed, bpb):
    nan = math.nan
    return {
        "target": "t",
        "method": method,
        "seed": seed,
        "target_bpb": bpb,
        "target_bpb_finetuned": bpb,
        "generic_bpb": nan,
        "target_valid_bpb": bpb,
        "target_bpb_half": nan,
        "target_share_selected": nan,
        "target_share_pool": nan,
        "wall_s": 1.0,
        "train_flops": 1.0,
    }


def test_differences_within_the_seed_spread_are_ties():
    rows = [
        _row("base", 0, 2.00),
        _row("base", 1, 2.10),
        _row("base", 2, 2.20),
        _row("mixing", 0, 2.05),
        _row("anograd", 0, 1.50),
    ]
    agg = benchmark.aggregate(rows)
    assert agg[("t", "base")]["target_bpb"] == pytest.approx(2.10)
    assert agg[("t", "base")]["target_bpb_spread"] == pytest.approx(0.10)
    assert benchmark.noise_level(agg, "t", "target_bpb") == pytest.approx(0.10)
    # anograd is clearly better; mixing (2.05) and base (2.10) differ by less than 0.1.
    assert benchmark.ranking(agg, "t", "target_bpb") == (
        "anograd (1.5000) < mixing (2.0500) = base (2.1000)"
    )
