"""experiments/benchmark*.py: early stopping on target_valid, FLOP matching, the shape of a
validation curve, paired statistics in the tables, rho's independent reference, and the
grid's method list (the end-to-end run is the quick preset in CI)."""

import dataclasses
import json
import math
import sys
import types

import pytest
import scipy.stats

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import benchmark  # noqa: E402
import benchmark_grid  # noqa: E402
import benchmark_report  # noqa: E402
import benchmark_setup  # noqa: E402

from adaptive_data import config_args  # noqa: E402
from adaptive_data.data import sources  # noqa: E402
from adaptive_data.methods import METHODS  # noqa: E402


def test_grid_covers_every_registered_method_but_finetune():
    assert set(benchmark_setup.GRID_METHODS) == set(METHODS) - {"finetune"}
    assert set(benchmark_setup.PRESETS["scarce"].methods) >= {
        "base", "mixing", "align_filter", "anograd", "soba", "dds",
        "classifier", "cds", "dsir", "rho",
    }  # fmt: skip


def _evals(*triples):
    return [{"step": s, "eval/target_valid_bpb": v, "eval/target_bpb": t} for s, v, t in triples]


def test_finetuning_is_read_at_the_best_target_valid_step_not_the_best_test_step():
    rows = _evals((0, 3.0, 3.1), (10, 2.5, 2.9), (20, 2.7, 2.4)) + [{"step": 25, "train/loss": 1}]
    assert benchmark_grid.finetune_outcome(rows) == {
        "target_bpb_finetuned": 2.9,
        "finetune_best_step": 10,
        "finetune_last_step": 20,
    }
    # A tie goes to the earlier evaluation; a best at the last step is flagged as cut short.
    rows = _evals((0, 3.0, 3.0), (10, 2.0, 2.2), (20, 2.0, 2.1))
    assert benchmark_grid.finetune_outcome(rows)["finetune_best_step"] == 10
    still_falling = {
        "method": "soba",
        "seed": 1,
        "finetune_best_step": 20,
        "finetune_last_step": 20,
    }
    early = {"method": "base", "seed": 0, "finetune_best_step": 10, "finetune_last_step": 20}
    assert benchmark_report.cut_short([still_falling, early]) == ["soba seed 1"]


def test_curve_shape_tells_an_upturn_from_a_plateau_from_a_descent():
    upturn = _evals((0, 5, 0), (100, 4.0, 0), (200, 3.5, 0), (300, 3.6, 0), (400, 3.7, 0))
    plateau = _evals((0, 5, 0), (100, 4.0, 0), (200, 3.5, 0), (300, 3.5, 0), (400, 3.499, 0))
    falling = _evals((0, 5, 0), (100, 4.0, 0), (200, 3.5, 0), (300, 3.4, 0), (400, 3.3, 0))
    assert benchmark_grid.curve_shape(upturn) == "turned upward"
    assert benchmark_grid.curve_shape(plateau) == "flattened"
    assert benchmark_grid.curve_shape(falling) == "still falling"


def test_flops_count_each_phase_for_its_steps():
    per_step = {"warmup": 10.0, "active": 25.0}
    assert benchmark_setup.run_flops(per_step, steps=100, warmup=20) == 20 * 10.0 + 80 * 25.0
    assert benchmark_setup.run_flops(per_step, steps=5, warmup=20) == 50.0


def test_flop_matched_step_is_the_nearest_checkpoint_by_a_hand_count():
    base = {"warmup": 2.0, "active": 2.0}  # 2 FLOPs per step, checkpoints every 50 steps
    # A method that spent 5.4x base's 1,200 steps (12,960 FLOPs) = 6,480 base steps:
    # checkpoints 6,450 (12,900) and 6,500 (13,000); 12,900 is 60 away, 13,000 is 40.
    assert benchmark_setup.flop_matched_step(12_960.0, base, 0, 50) == 6500
    # 12,940: 6,450 is 40 away, 6,500 is 60.
    assert benchmark_setup.flop_matched_step(12_940.0, base, 0, 50) == 6450
    # Exactly between: the earlier. Below the first checkpoint: the first.
    assert benchmark_setup.flop_matched_step(12_950.0, base, 0, 50) == 6450
    assert benchmark_setup.flop_matched_step(10.0, base, 0, 50) == 50
    # Warm-up steps are cheaper: 100 warm-up steps at 1, then 3 per step.
    phased = {"warmup": 1.0, "active": 3.0}
    assert benchmark_setup.flop_matched_step(100 + 3 * 300, phased, 100, 100) == 400


def test_matched_steps_charge_cds_and_rho_their_reference_runs():
    preset = dataclasses.replace(
        benchmark_setup.PRESETS["quick"], steps=100, selection_warmup=0, eval_every=10,
        finetune_steps=20, methods=("base", "mixing", "cds"),
    )  # fmt: skip
    flops = {
        "base": {"warmup": 1.0, "active": 1.0},
        "mixing": {"warmup": 2.0, "active": 2.0},
        "cds": {"warmup": 3.0, "active": 3.0},
        "finetune": {"warmup": 1.0, "active": 1.0},
    }
    # cds: 300 own + 100 (base run) + 20 (its fine-tuning) = 420 FLOPs.
    matched = benchmark_setup.matched_steps(preset, flops, preset.methods)
    assert matched["base"] == {"base": 100, "mixing": 200, "cds": 420}
    assert matched["mixing"] == {"base": 50, "mixing": 100, "cds": 210}


def _row(method, seed, bpb, **more):
    return {"target": "t", "method": method, "seed": seed, "target_bpb": bpb, **more}


def test_paired_cells_use_the_t_interval_of_per_seed_differences():
    rows = [
        _row("base", 0, 2.00), _row("base", 1, 2.10), _row("base", 2, 2.20),
        _row("soba", 0, 1.90), _row("soba", 1, 2.02), _row("soba", 2, 2.09),
        _row("dsir", 0, 2.10), _row("dsir", 1, 2.00), _row("dsir", 2, 2.21),
        _row("dds", 0, 1.0),
    ]  # fmt: skip
    spec = benchmark_report.BEFORE_FINETUNING[0]  # vs base, = steps
    # soba - base: -0.10, -0.08, -0.11; mean -0.0967, sd 0.01528, t(0.975, 2) = 4.303.
    half = scipy.stats.t.ppf(0.975, 2) * 0.015275 / math.sqrt(3)
    cell, verdict = benchmark_report.comparison(rows, "soba", spec)
    assert verdict == "better"
    assert cell.startswith("-4.6%: -0.097")
    assert f"[{-0.0967 - half:+.3f}, {-0.0967 + half:+.3f}]" in cell
    # Differences +0.10, -0.10, +0.01 straddle 0; one seed gives no interval.
    assert benchmark_report.comparison(rows, "dsir", spec)[1] == "not distinguishable"
    assert benchmark_report.comparison(rows, "dds", spec) == ("-50.0% (1 seed, no interval)", "")
    assert benchmark_report.comparison(rows, "base", spec) == ("-", "")


def test_flop_matched_cells_compare_with_the_values_in_the_methods_own_rows():
    rows = [
        _row("soba", s, 2.0, base_matched_target_bpb=b) for s, b in enumerate((1.8, 1.85, 1.9))
    ] + [_row("base", s, 2.5) for s in range(3)]
    cell, verdict = benchmark_report.comparison(rows, "soba", benchmark_report.BEFORE_FINETUNING[2])
    # (2/1.8 - 1 + 2/1.85 - 1 + 2/1.9 - 1) / 3 = 0.0816; against base's own 2.5: -20%.
    assert verdict == "worse" and cell.startswith("+8.2%: +0.150")


def test_rho_reference_never_trained_on_a_document_rho_scores(tmp_path):
    """The benchmark's rho reference is the fine-tuned copy of a base run on the reserved
    shard of the pool, and the rho run draws from the rest: on the data the two configs
    load, the document ids of the reference's generic_train and of rho's are disjoint
    and together the whole pool; the reference is fine-tuned on target_train."""
    preset = dataclasses.replace(benchmark_setup.PRESETS["scarce"], compute_matched=False)
    args = types.SimpleNamespace(tfds_data_dir=None)
    bench = benchmark_grid.Benchmark(preset, args, tmp_path / "runs", {}, ("base", "rho"))
    bench.finetune_lr = lambda target: 3e-4
    pool, target = tmp_path / "pool.txt", tmp_path / "target.txt"
    pool.write_text("".join(f"pool document {i}\n" for i in range(400)))
    target.write_text("".join(f"target document {i}\n" for i in range(200)))
    files = {"data.generic": f"file:{pool}", "data.target": f"file:{target}"}

    def generic_ids(config):
        split = sources.load_corpus(config_args.override(config, files).data).splits
        return [split["generic_train"][i]["doc_id"] for i in range(len(split["generic_train"]))]

    everything = set(generic_ids(bench.config("python", "base", 0)))
    jobs = {job.label: job for job in bench.jobs("python")}
    for seed in preset.seeds:
        reference = bench.references("python", "rho", seed)["rho.reference_from"]
        reserved_base = bench.reserved_dir("python", seed)
        assert reference == str(bench.ft_dir(reserved_base, 3e-4))
        base_job = jobs[f"python/{reserved_base.name}"]
        finetune_job = jobs[f"python/{reserved_base.name} fine-tuning"]
        assert finetune_job.method == "finetune"
        assert str(finetune_job.config().finetune.init_from) == str(reserved_base)
        reference_ids = generic_ids(base_job.config())
        scored_ids = generic_ids(bench.config("python", "rho", seed))
        assert set(reference_ids).isdisjoint(scored_ids)
        assert set(reference_ids) | set(scored_ids) == everything
        share = len(reference_ids) / len(everything)
        assert share == pytest.approx(benchmark_setup.RESERVED_FRACTION, abs=0.06)
    # cds keeps its published protocol: the generic model is base seed s itself, on the
    # whole pool.
    cds = bench.references("python", "cds", 1)
    assert cds["cds.generic_from"] == str(bench.run_dir("python", "base", 1))
    assert set(generic_ids(bench.config("python", "cds", 1))) == everything


def test_a_preset_without_a_checkpoint_in_the_diagnose_budget_is_refused():
    # 15% of 100 steps is step 15: evaluations (and checkpoints) every 20 steps miss it.
    with pytest.raises(ValueError, match="eval_every <= 15"):
        dataclasses.replace(benchmark_setup.PRESETS["quick"], steps=100, eval_every=20)
    assert (
        dataclasses.replace(benchmark_setup.PRESETS["quick"], steps=100, eval_every=15).steps == 100
    )
    # Below 7 steps no evaluation period fits in 15% of them: the fix is more steps.
    with pytest.raises(ValueError, match="steps >= 7"):
        dataclasses.replace(benchmark_setup.PRESETS["quick"], steps=4, eval_every=1)


def test_a_pilot_runs_no_diagnose_test_so_any_step_count_is_accepted():
    # The README's pilot: 200 steps of the scarce preset, evaluations every 50 (> 15% x 200).
    pilot = benchmark.pilot_preset(benchmark_setup.PRESETS["scarce"], 200)
    assert (pilot.steps, pilot.eval_every, pilot.runs_diagnose) == (200, 50, False)
    assert benchmark.pilot_preset(benchmark_setup.PRESETS["quick"], 4).steps == 4


def test_mixing_curve_is_reported_for_the_grid_run_and_for_the_long_run(tmp_path):
    """Whether mixing has used up the target sample shows in its compute-matched long run:
    the report carries both curves' shapes per seed."""
    preset = dataclasses.replace(
        benchmark_setup.PRESETS["quick"], steps=100, selection_warmup=0, eval_every=10,
        finetune_steps=20, methods=("base", "mixing", "soba"), seeds=(0,),
    )  # fmt: skip
    flops = {m: {"warmup": c, "active": c} for m, c in (("base", 1.0), ("mixing", 2.0))}
    flops |= {"soba": {"warmup": 6.0, "active": 6.0}, "finetune": {"warmup": 1, "active": 1}}
    bench = benchmark_grid.Benchmark(preset, None, tmp_path, flops, preset.methods)
    assert bench.long_steps("mixing") == 300  # soba's 600 FLOPs at 2 per step
    curves = {
        bench.run_dir("t", "mixing", 0): ((0, 5.0), (50, 4.0), (80, 3.8), (100, 3.5)),
        bench.long_dir("t", "mixing", 0): ((0, 5.0), (100, 3.5), (200, 3.0), (300, 3.2)),
    }
    for workdir, points in curves.items():
        workdir.mkdir(parents=True)
        rows = _evals(*((step, bpb, bpb) for step, bpb in points))
        (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t" / "finetune_lr.json").write_text('{"grid": {}, "chosen": 1e-4}')
    shapes = bench.curves("t")["mixing_target_valid"]
    assert shapes["0"]["shape"] == "still falling"
    assert (shapes["0"]["best_step"], shapes["0"]["last_step"]) == (100, 100)
    long = shapes["0 long"]
    assert long["shape"] == "turned upward"
    assert (long["best_step"], long["last_step"]) == (200, 300)
    assert long["last_bpb"] - long["best_bpb"] == pytest.approx(0.2)


@pytest.mark.parametrize("preset_name", ["quick", "scarce"])
def test_every_flops_config_is_a_valid_run_config(preset_name, tmp_path):
    """The FLOPs of a method are compiled from a config its own runs could use: rho's, on
    the rest of a reserved shard, passes the validation that refuses rho without one."""
    from adaptive_data import validation

    preset = benchmark_setup.PRESETS[preset_name]
    args = types.SimpleNamespace(tfds_data_dir=None)
    for method in dict.fromkeys([*preset.methods, *benchmark_setup.BASELINES, "finetune"]):
        config = benchmark.flops_config(preset, tmp_path, method, args)
        validation.validate_config(config)
    rho = benchmark.flops_config(preset, tmp_path, "rho", args)
    assert (rho.data.generic_shard, rho.data.reserved_fraction) == (
        "rest",
        benchmark_setup.RESERVED_FRACTION,
    )


def _verdict(methods, cost_method, cost_ratio, helps, pays):
    return {
        "methods": methods,
        "cost_method": cost_method,
        "cost_ratio": cost_ratio,
        "helps_at_equal_steps": helps,
        "pays_for_compute": pays,
    }


def test_each_target_section_opens_with_both_preflight_verdicts_per_family():
    report = {
        "checkpoint_step": 50,
        "within_budget": False,
        "stability_steps": 30,
        "statistics": {
            "cosine_gain": {"mean": 0.0812, "stderr": 0.0123},
            "speedup": {"mean": 2.46, "stderr": 0.31},
            "rank_corr_stability": {"mean": 0.734, "stderr": 0.02},
        },
        "verdicts": {
            "exact_scores": _verdict(["align_filter", "l2rw"], "align_filter", 5.04, True, False),
            "learned_weights": _verdict(["anograd", "soba", "dds"], "anograd", 1.8, True, True),
        },
    }
    lines = benchmark_report.target_report("python", [], [], {"diagnose": report})
    assert lines[2:6] == [
        "Preflight test (base run, step 50, beyond the budget): cosine gain +0.0812 ± 0.012, "
        "speed-up 2.46 ± 0.31, score stability (Spearman) 0.73.",
        "- exact_scores (align_filter, l2rw): helps at equal steps **yes**; pays for its "
        "compute (align_filter 5.04x base's FLOPs) **no**",
        "- learned_weights (anograd, soba, dds): helps at equal steps **yes**; pays for its "
        "compute (anograd 1.80x base's FLOPs) **yes**",
        "",
    ]


def test_a_first_version_preflight_report_is_named_not_rendered():
    """The committed results of the first preflight test (no stability_steps) still
    regenerate their tables (--report_from)."""
    old = {"checkpoint_step": 100, "statistics": {}, "verdicts": {"exact_scores": {}}}
    line = benchmark_report.target_report("python", [], [], {"diagnose": old})[2]
    assert line.startswith("Preflight test (base run, step 100): a report of the first version")
    assert "experiments/results/diagnose_validation_v2/" in line


def test_grid_progress_grows_its_total_for_unplanned_runs_and_never_wraps_its_eta(tmp_path, capsys):
    """A plan that expected fewer runs (a tuning ladder extended on the way) must not print
    ``[3/2]`` or a negative ETA wrapped to a time of day; days of ETA print as hours."""
    jobs = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "done.json").write_text(json.dumps({"result": {}}))
        jobs.append(
            benchmark_grid.Job(name, "base", 100, lambda n=name: tmp_path / n, lambda: None)
        )
    grid = benchmark_grid.Grid(jobs[:2])
    grid.seconds_per_step["base"] = 1.0
    for job in jobs:
        grid.run(job)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0] for line in lines] == ["[1/2", "[2/2", "[3/3"]
    assert all(line.endswith("ETA 0:00:00") for line in lines[1:])
    assert benchmark_grid._duration(26 * 3600 + 61) == "26:01:01"
