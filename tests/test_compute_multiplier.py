"""The compute-multiplier study (experiments/compute_multiplier.py): inverting a frontier,
the log-scale interval of ratios, rate tuning that extends its grid at an edge, the
budget-to-rate rule, the multipliers of a row, and the FLOPs of an amortised schedule
(against a naive count of its compiled step kinds). The end-to-end run is in the slow tier."""

import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from adaptive_data import stats

from conftest import REPO_ROOT, tiny_config

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import compute_multiplier  # noqa: E402


def test_frontier_flops_interpolates_linearly_in_log_flops():
    # bpb = 3 - 0.2 * log2(F): F = 2 ** ((3 - y) / 0.2) exactly.
    flops = [1e9, 2e9, 4e9, 8e9]
    bpb = [3.0 - 0.2 * math.log2(f / 1e9) for f in flops]
    for y in (2.95, 2.7, 2.45, 3.0):
        point = stats.frontier_flops(flops, bpb, y)
        assert point.where == "inside"
        assert point.flops == pytest.approx(1e9 * 2 ** ((3.0 - y) / 0.2), rel=1e-9)
    below = stats.frontier_flops(flops, bpb, 3.1)
    above = stats.frontier_flops(flops, bpb, 2.2)
    assert (below.where, above.where) == ("below", "above")
    assert below.flops == pytest.approx(1e9 * 2**-0.5)
    assert above.flops == pytest.approx(1e9 * 2**4)


def test_frontier_flops_outside_a_frontier_that_does_not_descend_is_the_bound():
    """A target absent from the pool: more generic compute made the target bpb worse
    between 1x and 2x. A method worse than 1x needs at most 1x (not the 3x a rising line
    would give); one better than a frontier that rises at its end needs at least 8x."""
    below = stats.frontier_flops([1, 2], [3.0, 3.1], 3.2)
    assert (below.flops, below.where) == (1.0, "below")
    above = stats.frontier_flops([1, 2, 4, 8], [3.0, 2.9, 2.8, 2.85], 2.5)
    assert (above.flops, above.where) == (8.0, "above")
    flat = stats.frontier_flops([1, 2], [3.0, 3.0], 2.9)
    assert (flat.flops, flat.where) == (2.0, "above")


def test_frontier_flops_takes_the_first_crossing_of_a_noisy_frontier():
    # Not monotone: 2.8 is first reached between the 1x and 2x points.
    point = stats.frontier_flops([1, 2, 4, 8], [3.0, 2.7, 2.9, 2.5], 2.8)
    assert point.where == "inside"
    assert point.flops == pytest.approx(2 ** (2 / 3))
    with pytest.raises(ValueError, match="two distinct budgets"):
        stats.frontier_flops([1, 1], [3.0, 2.0], 2.5)


def test_ratio_interval_is_a_t_interval_of_the_logs():
    ratios = [1.2, 1.5, 1.3]
    logs = np.log(ratios)
    half = scipy.stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    interval = stats.ratio_interval(ratios)
    assert interval.mean == pytest.approx(math.exp(logs.mean()))
    assert interval.low == pytest.approx(math.exp(logs.mean() - half))
    assert interval.high == pytest.approx(math.exp(logs.mean() + half))
    with pytest.raises(ValueError, match="positive"):
        stats.ratio_interval([1.0, -0.5])


def test_tune_extends_the_grid_past_an_edge_until_the_best_is_inside():
    ladder = compute_multiplier.RATE_LADDER
    calls = []

    def score(lr):  # a bowl in log rate with its minimum at 1e-1
        calls.append(lr)
        return (math.log10(lr) + 1.0) ** 2

    result = compute_multiplier.tune(ladder, (1e-3, 3e-3, 1e-2), score)
    assert result["chosen"] == 1e-1
    assert calls == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]  # stops once 1e-1 is inside
    assert not result["at_ladder_end"]
    at_end = compute_multiplier.tune(ladder, (1e-4, 3e-4), lambda lr: lr)
    assert at_end["chosen"] == 1e-4 and at_end["at_ladder_end"]
    flat = compute_multiplier.tune(ladder, (1e-3, 3e-3, 1e-2), lambda lr: 1.0)
    assert flat["chosen"] == 1e-3 and list(flat["tried"]) == ["0.001", "0.003", "0.01"]
    with pytest.raises(ValueError, match="not on the ladder"):
        compute_multiplier.tune(ladder, (2e-3,), score)


def test_every_budget_of_base_frontier_is_tuned_from_the_previous_budgets_choice(
    tmp_path, monkeypatch
):
    """A fake study whose final target_valid bpb is a parabola in log10(rate) with its
    optimum moving up one ladder rung per doubling of the budget: each budget's choice is
    the ladder rate nearest its optimum, found from the previous choice's neighbours."""
    import types

    from benchmark_setup import VALID_KEY

    ladder = compute_multiplier.RATE_LADDER
    best = {1: 3e-3, 2: 1e-2, 4: 3e-2, 8: 1e-1}
    ran = []

    def frontier_run(target, frontier, budget, seed, lr):
        ran.append((budget, lr))
        return (budget, lr)

    def read_rows(workdir):
        budget, lr = workdir
        return [{VALID_KEY: (math.log10(lr) - math.log10(best[budget])) ** 2}]

    monkeypatch.setattr(compute_multiplier, "read_rows", read_rows)
    monkeypatch.setattr(compute_multiplier, "best_eval", lambda rows: rows[0])
    study = types.SimpleNamespace(
        preset=types.SimpleNamespace(seeds=(0,)),
        variants=(),
        root=tmp_path,
        frontier_run=frontier_run,
        finetune=lambda target, source, seed, lr: (1, 3e-3),
    )
    (tmp_path / "t").mkdir()
    recipe = compute_multiplier.Study.tune_recipe(study, "t")
    chosen = {b: tuned["chosen"] for b, tuned in recipe["base_lr"].items()}
    assert chosen == {"1": 3e-3, "2": 1e-2, "4": 3e-2, "8": 1e-1}
    # 2x starts from 1x's choice and its neighbours and extends past the upper edge.
    assert [lr for b, lr in ran if b == 2] == [1e-3, 3e-3, 1e-2, 3e-2]
    assert all(lr in ladder for _, lr in ran)
    study.recipe = {"t": recipe}
    assert compute_multiplier.Study.rate(study, "t", 4) == 3e-2
    with pytest.raises(KeyError, match="no tuned base rate at 16x"):
        compute_multiplier.Study.rate(study, "t", 16)


def test_multipliers_of_a_row_against_its_own_seeds_frontier():
    def point(frontier, seed, flops, bpb):
        return {
            "target": "t",
            "method": f"{frontier}_{flops}",
            "seed": seed,
            "frontier": frontier,
            "train_flops": flops,
            "target_bpb": bpb,
            "target_bpb_finetuned": bpb - 0.1,
        }

    rows = [point("base", s, f, 3.0 - 0.2 * math.log2(f) + s) for s in (0, 1) for f in (1, 2, 4)]
    method = {**point("", 1, 2.0, 3.6), "method": "m"}  # seed 1's frontier: 4.0 - 0.2 log2 F
    rows = compute_multiplier.add_multipliers([*rows, method])
    assert method["multiplier_base"] == pytest.approx(4.0 / 2.0)
    assert method["multiplier_base_finetuned"] == pytest.approx(4.0 / 2.0)
    assert method["multiplier_mixing"] is None  # no mixing frontier
    assert method["break_even_base"] == pytest.approx(4.0 - 0.2)  # seed 1's frontier at 2
    assert method["break_even_base_finetuned"] == pytest.approx(4.0 - 0.2 - 0.1)
    assert method["break_even_mixing"] is None


def test_schedule_flops_counts_each_step_kind_as_a_naive_loop_does():
    config = tiny_config(
        "method=anograd,runlocal",
        **{
            "train.steps": 40,
            "select.warmup_steps": 5,
            "outer.every": 4,
            "outer.stop_after": 30,
        },
    )
    per_phase = {"warmup": 1.0, "select": 10.0, "select_outer": 100.0}
    # Warm-up steps 0-4; outer updates at 8, 12, ..., 28 (6 of them); the rest select.
    naive = 5 * 1.0 + 6 * 100.0 + (40 - 5 - 6) * 10.0
    assert compute_multiplier.schedule_flops(config, per_phase) == naive


@pytest.mark.slow
def test_the_quick_study_runs_end_to_end(tmp_path, tfds_dir):
    out = tmp_path / "out"
    subprocess.run(
        [
            sys.executable,
            "experiments/compute_multiplier.py",
            "--preset=quick",
            f"--workdir={tmp_path / 'runs'}",
            f"--out={out}",
            f"--tfds_data_dir={tfds_dir}",
            "--seeds=0",
            "--variants=dsir",
        ],
        cwd=REPO_ROOT,
        check=True,
    )
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    for column in (
        "target",
        "method",
        "seed",
        "train_flops",
        "flops_vs_base",
        "target_bpb",
        "target_bpb_finetuned",
        "multiplier_base",
        "multiplier_base_finetuned",
        "multiplier_mixing_finetuned",
    ):
        assert column in header
    assert (out / "python_frontier.png").exists() and (out / "amortisation_frontier.png").exists()
    assert "Status: complete" in (out / "results.md").read_text()


def test_a_preset_trains_each_target_at_its_tuned_rate():
    import dataclasses
    import types

    import benchmark_setup

    preset = dataclasses.replace(
        benchmark_setup.PRESETS["quick"], learning_rates={"python": 3e-3}, learning_rate=1e-3
    )
    args = types.SimpleNamespace(tfds_data_dir=None)
    assert benchmark_setup.run_config(preset, "python", "base", 0, args).train.learning_rate == 3e-3
    assert benchmark_setup.run_config(preset, "jargon", "base", 0, args).train.learning_rate == 1e-3


def test_results_csv_keeps_every_column_of_the_rows(tmp_path):
    rows = [{"target": "t", "method": "m", "multiplier_base": 1.5}, {"target": "t", "x": 2}]
    compute_multiplier.write_csv(tmp_path / "r.csv", rows)
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines == ["target,method,multiplier_base,x", "t,m,1.5,", "t,,,2"]


def test_archive_copies_what_the_report_reads_of_finished_runs_only(tmp_path):
    root, dest = tmp_path / "runs", tmp_path / "archive"
    finished, running = root / "t" / "base_x1_lr0.01_seed0", root / "t" / "dsir_lr0.01_seed0"
    for run in (finished, running):
        (run / "checkpoints" / "600").mkdir(parents=True)
        (run / "config.json").write_text("{}")
        rows = ['{"step": 1, "train/loss": 2.0}', '{"step": 2, "eval/x": 1}']
        (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    (finished / "done.json").write_text("{}")
    (root / "t" / "recipe.json").write_text("{}")
    (root / "flops.json").write_text("{}")
    assert compute_multiplier.archive(root, dest) == 1
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert copied == [
        "flops.json",
        "t/base_x1_lr0.01_seed0/config.json",
        "t/base_x1_lr0.01_seed0/done.json",
        "t/base_x1_lr0.01_seed0/metrics.jsonl",
        "t/recipe.json",
    ]
    evaluations = (dest / "t" / "base_x1_lr0.01_seed0" / "metrics.jsonl").read_text()
    assert evaluations == '{"step": 2, "eval/x": 1}\n'


def test_step_flops_compile_a_method_whose_batches_carry_a_document_score():
    config = tiny_config("method=dsir,runlocal", **{"dsir.features": "words"})
    flops = compute_multiplier.step_flops_by_phase(config, ("warmup", "select_outer"))
    assert set(flops) == {"warmup", "select_outer"} and all(v > 0 for v in flops.values())


def test_the_report_says_partial_until_every_target_method_and_seed_has_a_row():
    import types

    import compute_multiplier_report as report

    preset = types.SimpleNamespace(targets=("a", "b"), seeds=(0, 1))
    expected = ["base", "dsir"]
    rows = [{"target": t, "method": m, "seed": s} for t in "ab" for m in expected for s in (0, 1)]
    assert report.status_lines(preset, rows, expected)[0].startswith("Status: complete (8 rows")
    partial = [
        r
        for r in rows
        if (r["target"], r["seed"]) != ("a", 1)
        and (r["target"], r["method"], r["seed"]) != ("b", "dsir", 0)
    ]
    line = report.status_lines(preset, partial, expected)[0]
    assert "partial" in line and "5 of 8 rows" in line
    assert "a: 0; b: 1" in line


def test_the_study_expects_a_row_per_frontier_point_and_variant():
    import types

    study = types.SimpleNamespace(variants=compute_multiplier.STUDY_METHODS[:2])
    names = compute_multiplier.Study.row_names(study)
    assert names[:5] == ["base", "base_x2", "base_x4", "base_x8", "mixing"]
    assert names[-2:] == ["dsir", "classifier"]
    assert len(names) == sum(len(f.budgets) for f in compute_multiplier.FRONTIERS) + 2


def test_amortisation_families_join_variants_that_differ_only_in_outer_every():
    import compute_multiplier_report as report

    family = report.amortisation_family
    assert {family(n) for n in ("anograd", "anograd_every4", "anograd_every16")} == {"anograd"}
    assert family("anograd_every8_smallcnn") == family("anograd_every32_smallcnn")
    assert family("anograd_every8_smallcnn") != "anograd"
    assert family("anograd_freeze25") == "anograd_freeze25"


def test_the_recipe_flags_a_choice_at_the_end_of_its_ladder():
    import compute_multiplier_report as report

    tuned = compute_multiplier.tune((1e-2, 1e-1), (1e-2,), lambda lr: -lr)
    assert tuned["at_ladder_end"] and tuned["chosen"] == 1e-1
    assert report.tuned_text(tuned) == (
        "0.1 (tried 0.01: -0.0100, 0.1: -0.1000; **at the end of the ladder**)"
    )
    inside = compute_multiplier.tune((1e-3, 1e-2, 1e-1), (1e-3, 1e-2, 1e-1), lambda lr: lr != 1e-2)
    assert report.tuned_text(inside) == "0.01 (tried 0.001: 1.0000, 0.01: 0.0000, 0.1: 1.0000)"


def test_the_verdict_is_read_from_the_seed_interval_and_is_blank_without_a_multiplier():
    import compute_multiplier_report as report

    rows = lambda *values: [{"m": v} for v in values]  # noqa: E731
    assert report.pays(rows(1.5, 1.6, 1.7), "m") == "pays"
    assert report.pays(rows(0.5, 0.6, 0.55), "m") == "does not pay"
    assert report.pays(rows(0.5, 2.0, 1.1), "m") == "unclear"
    assert report.pays(rows(3.0), "m") == "unclear"  # one seed has no interval
    assert report.pays([{"m": None}, {}], "m") == "-"  # a frontier's own row


def test_frontier_bpb_is_the_inverse_of_frontier_flops_and_extends_the_end_segments():
    flops, bpb = [1.0, 2.0, 8.0], [3.0, 2.6, 2.0]
    # Inside: the straight line in log FLOPs between 2 and 8 (closed form at 4: midpoint).
    assert stats.frontier_bpb(flops, bpb, 4.0) == pytest.approx(2.3)
    assert stats.frontier_bpb(flops, bpb, 2.0) == pytest.approx(2.6)
    for target in (2.9, 2.45, 2.1):
        at = stats.frontier_flops(flops, bpb, target).flops
        assert stats.frontier_bpb(flops, bpb, at) == pytest.approx(target)
    # Outside: the first / last segment extended (0.4 bpb per doubling, 0.3 per doubling).
    assert stats.frontier_bpb(flops, bpb, 0.5) == pytest.approx(3.4)
    assert stats.frontier_bpb(flops, bpb, 16.0) == pytest.approx(1.7)
    with pytest.raises(ValueError, match="two distinct budgets"):
        stats.frontier_bpb([1.0, 1.0], [3.0, 2.0], 1.5)


def test_equal_step_cells_pair_seeds_and_read_the_relative_difference():
    import compute_multiplier_report as report

    def row(method, seed, bpb):
        return {"target": "t", "method": method, "seed": seed, "target_bpb_finetuned": bpb}

    rows = [row("base", s, 4.0) for s in (0, 1, 2)]
    rows += [row("m", 0, 3.6), row("m", 1, 3.7), row("m", 2, 3.5)]  # -10%, -7.5%, -12.5%
    rows += [row("n", 0, 4.0), row("n", 1, 4.4)]  # seed 2 missing: paired over 0 and 1
    assert report.equal_step_cell(rows, "t", "m", "base").startswith("-10.0% [")
    assert report.equal_step_cell(rows, "t", "m", "base").endswith("better")
    assert report.equal_step_cell(rows, "t", "n", "base").startswith("+5.0% [")
    assert report.equal_step_cell(rows, "t", "n", "base").endswith("=")
    assert report.equal_step_cell(rows[:4], "t", "m", "base") == "-"  # one paired seed


def test_the_summary_has_a_line_per_method_and_per_mixing_frontier_but_not_base():
    import types

    import compute_multiplier_report as report

    def row(method, frontier, budget, multiplier, seed):
        return {
            "target": "t",
            "method": method,
            "frontier": frontier,
            "budget": budget,
            "seed": seed,
            "flops_vs_base": float(budget or 2),
            "multiplier_base_finetuned": multiplier,
        }

    rows = [
        row(name, frontier, budget, multiplier, seed)
        for seed in (0, 1, 2)
        for name, frontier, budget, multiplier in (
            ("base", "base", 1, None),
            ("base_x2", "base", 2, None),
            ("mixing", "mixing", 1, 0.5),
            ("mixing_x2", "mixing", 2, 0.6),
            ("m", "", "", 2.0 + 0.1 * seed),
        )
    ]
    lines = report.summary_lines(types.SimpleNamespace(targets=("t",)), rows)
    table = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ")}
    assert list(table) == ["method", "mixing", "m"]
    assert "2.10 [" in table["m"] and table["m"].endswith("pays |")
    assert table["mixing"].endswith("does not pay |")
