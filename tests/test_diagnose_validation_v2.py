"""The pre-registered validation of the preflight test (experiments/diagnose_validation_v2.py):
its design (tasks, frontier extension, multiplier, labels, scores) against hand counts."""

import math
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import diagnose_validation_v2 as dv2  # noqa: E402

from adaptive_data.data import embedded_corpus  # noqa: E402


@pytest.mark.slow  # splits the whole corpus for every domain and share (about a minute)
def test_the_design_has_16_domain_tasks_and_8_different_controls_drawn_from_the_pool():
    specs = dv2.task_specs(quick=False)
    domain = [s for s in specs if not s.control]
    controls = [s for s in specs if s.control]
    assert len(domain) == 16 and len(controls) == 8
    assert {s.task for s in domain} == set(embedded_corpus.DOMAINS)
    assert sorted(s.share for s in domain if s.task == "jargon") == [0.0, 0.03]
    # Every control is its own target (no two share a task and size), drawn from the pool.
    assert len({(s.task, s.max_target_train) for s in controls}) == 8
    for s in controls:
        assert embedded_corpus.TASKS[s.task].target_domain is None
    assert len({s.name for s in specs}) == 24
    assert dv2.SEEDS == (0, 1)


def test_the_frontier_grows_only_while_a_method_lies_beyond_it_and_spends_more():
    costs = {"align_filter": 5.6, "anograd": 3.9}
    frontier = {1: 3.0, 2: 2.8}
    # Both methods worse than base at 2x: the frontier brackets them already.
    assert dv2.needed_budgets(frontier, {"align_filter": 2.9, "anograd": 2.85}, costs) is None
    # anograd beyond the 2x point, which spends less than its 3.9x: the 4x point.
    assert dv2.needed_budgets(frontier, {"align_filter": 2.9, "anograd": 2.7}, costs) == 4
    # Beyond 4x, only align_filter (5.6x) still needs the 8x point; anograd (3.9x) does not.
    frontier[4] = 2.6
    assert dv2.needed_budgets(frontier, {"align_filter": 2.9, "anograd": 2.5}, costs) is None
    assert dv2.needed_budgets(frontier, {"align_filter": 2.5, "anograd": 2.9}, costs) == 8
    frontier[8] = 2.4
    assert dv2.needed_budgets(frontier, {"align_filter": 2.3, "anograd": 2.9}, costs) is None


def test_the_multiplier_interpolates_the_frontier_in_log_budget():
    frontier = {1: 3.0, 2: 2.8, 4: 2.6}
    # bpb 2.7 lies halfway between the 2x and 4x points in log budget: sqrt(8) budgets.
    multiplier, where = dv2.compute_multiplier(frontier, 2.7, cost=2.0)
    assert where == "inside"
    assert multiplier == pytest.approx(math.sqrt(8) / 2.0)
    # Worse than base at 1x: extrapolated below the frontier, worth less than 1x.
    multiplier, where = dv2.compute_multiplier(frontier, 3.1, cost=1.5)
    assert where == "below" and multiplier < 1 / 1.5


def _row(task, seed, control, **values):
    return {"task": task, "seed": seed, "control": control, "group": task, **values}


def test_labels_come_from_the_seed_mean_gain_and_the_geometric_mean_multiplier():
    rows = [
        _row("t", 0, False, align_filter_gain=0.012, align_filter_multiplier=0.5,
             anograd_gain=0.001, anograd_multiplier=1.5),
        _row("t", 1, False, align_filter_gain=-0.001, align_filter_multiplier=3.0,
             anograd_gain=0.004, anograd_multiplier=0.8),
    ]  # fmt: skip
    dv2.add_labels(rows)
    for row in rows:
        # Mean gain 0.0055 > 0.005; geometric mean multiplier sqrt(1.5) > 1.
        assert row["align_filter_helps"] and row["align_filter_pays"]
        assert row["align_filter_multiplier_seed_mean"] == pytest.approx(math.sqrt(1.5))
        assert row["align_filter_gain_seed_sd"] == pytest.approx(np.std([0.012, -0.001], ddof=1))
        # Mean gain 0.0025 < 0.005; geometric mean sqrt(1.2) > 1.
        assert not row["anograd_helps"] and row["anograd_pays"]


def test_classification_counts_by_hand():
    figures = dv2.classification([True, True, False, False, True], [True, False, False, True, True])
    assert figures == {"accuracy": 3 / 5, "precision": 2 / 3, "recall": 2 / 3}
    none_predicted = dv2.classification([False, False], [True, False])
    assert math.isnan(none_predicted["precision"]) and none_predicted["recall"] == 0.0


def test_evaluate_scores_the_verdict_next_to_always_yes_and_the_trivial_rule():
    """Four tasks, two seeds: domain tasks a (helps, pays) and b (helps, does not pay),
    control c (does not help) and control d (helps, pays). The verdict says yes on a and d
    for both questions, and on b for equal steps only."""
    rows = []
    truth = {"a": (True, True), "b": (True, False), "c": (False, False), "d": (True, True)}
    predictor = {"a": 0.3, "b": 0.2, "c": -0.1, "d": 0.25}
    for task, (helps, pays) in truth.items():
        for seed in (0, 1):
            rows.append(
                _row(
                    task, seed, task in "cd",
                    cosine_gain=predictor[task] + 0.01 * seed,
                    **{
                        f"{m}_{k}": v
                        for m in dv2.FAMILY_OF
                        for k, v in {
                            "gain": 0.02 if helps else 0.0,
                            "multiplier": 2.0 if pays else 0.5,
                            "predicted_multiplier": 2 * predictor[task],
                            "verdict_helps": task != "c",
                            "verdict_pays": task in "ad",
                        }.items()
                    },
                )
            )  # fmt: skip
    dv2.add_labels(rows)
    summary = dv2.evaluate(rows)
    for method in dv2.FAMILY_OF:
        steps, compute = summary[method]["equal_steps"], summary[method]["compute"]
        assert steps["verdict"]["accuracy"] == 1.0 and compute["verdict"]["accuracy"] == 1.0
        # always yes: right where the label is yes (6 of 8 task-seeds, then 4 of 8).
        assert steps["always_yes"]["accuracy"] == 6 / 8
        assert compute["always_yes"]["accuracy"] == 4 / 8
        assert steps["always_no"]["accuracy"] == 2 / 8
        # yes unless drawn from the pool: right on a, b and c (equal steps); a and c (compute).
        assert steps["trivial_rule"]["accuracy"] == 6 / 8
        assert compute["trivial_rule"]["accuracy"] == 4 / 8
        # The predictor ranks the positives above the negative: AUC 1 over all tasks; the
        # domain tasks alone have no negative for equal steps.
        assert steps["all_tasks"]["auc"] == 1.0
        assert math.isnan(steps["domain_tasks"]["auc"])
        assert compute["domain_tasks"]["auc"] == 1.0 and compute["domain_tasks"]["tasks"] == 2
