"""The methods x targets benchmark: every method on several embedded target tasks, with
paired seeds, fine-tuning on target_train, and baselines matched in steps and in FLOPs.

    python experiments/benchmark.py --preset quick       # every code path, seconds (CI)
    python experiments/benchmark.py --preset scarce --pilot 200   # per-method step costs
    nohup nice -n 5 python experiments/benchmark.py --preset scarce > /tmp/scarce.log 2>&1 &
    python experiments/benchmark.py --preset cpu --report_from \\
        experiments/results/benchmark_cpu/results.csv    # tables only, no training

Presets: ``quick`` (CI), ``cpu`` (the earlier 600-step grid, 1,000 target documents),
``scarce`` (the paper's regime at small scale: a target_train of a few dozen documents
that mixing repeats hundreds of times, and a pool with a real in-domain share), ``gpu``.

For each target task of the preset, every method is run with every seed of the preset;
seed ``s`` gives every method the same parameter init and generic / target stream seeds
(the data order differs only where the batch size does: selection methods read
``k x b`` generic examples per step). Per target:

1. **Fine-tuning learning rate.** ``base`` seed 0 is fine-tuned at each rate of
   ``Preset.finetune_learning_rates``; the rate with the lowest target_valid bpb (at its
   best step) is used for every fine-tuning of that target (``finetune_lr.json``).
   Every fine-tuning runs ``finetune_steps`` steps and is read at its best step by
   target_valid (early stopping); ``finetune_best_step`` is recorded and a run whose best
   step is its last one is flagged (the budget may have cut it short).
2. **Runs.** ``base``, ``mixing`` (fine-tuned from its final checkpoint and from its best
   checkpoint by target_valid: the paper's early-stopped pipeline) and every other method,
   each fine-tuned. ``cds`` scores with base seed ``s`` and its fine-tuned copy (the
   published protocol: the generic model is trained on the candidate pool). ``rho``'s
   reference model is the fine-tuned copy of a base run on the *reserved shard* of the
   pool (``base_reserved_seed<s>``, :data:`benchmark_setup.RESERVED_FRACTION` of it), and
   rho draws from the rest: its reference never trained on a document it scores; both charge
   the FLOPs of their reference runs.
3. **Mid-schedule checkpoints (diagnostic).** ``base`` and ``mixing`` are also trained
   long enough to reach the training FLOPs of the most expensive method
   (``<baseline>_long<N>``, every checkpoint kept), and the checkpoint whose FLOPs are
   nearest each method's (:func:`benchmark_setup.flop_matched_step`) is evaluated and
   fine-tuned. These checkpoints are taken mid-schedule (the learning rate not yet
   decayed) and on the scarce preset they beat finished runs of the same length, so the
   columns are labelled as a diagnostic, not a compute match: whether a method pays for
   its compute is ``compute_multiplier.py``'s question, against annealed frontiers.
4. **Statistics.** Every comparison is a paired difference over seeds with a 95% Student
   t interval (``adaptive_data.stats``): "better", "worse" or "not distinguishable".
5. **Preflight test.** ``--mode=diagnose`` on base seed 0 (``adaptive_data.diagnose``,
   the FLOPs ratios of its cost methods measured at the preset's sizes): per method
   family, will selection help at equal steps and will it pay for its compute; each
   target's section opens with its verdicts, to read against the tables.

Everything is resumable: a finished run (``done.json`` in its workdir) is skipped, a
killed one resumes from its last checkpoint; rerun the same command. Progress lines give
runs done / total and an ETA. Runs live under ``--workdir`` (default
``/tmp/adaptive_data_benchmark_<preset>``); tables and plots go to ``--out`` (default
``experiments/results/benchmark_<preset>``), rewritten after each finished target.

``train_flops``: XLA's cost analysis of the compiled train step of each phase (warm-up:
no scoring and no outer update; after it: scoring, selection and the outer update) times
the number of steps in that phase, plus, for ``cds`` and ``rho``, the FLOPs of training
their reference models (a base run and its fine-tuning). Evaluation is not counted.

This file is the command line and the pilot; what runs is in ``benchmark_setup`` (presets,
configs, FLOPs), how it runs in ``benchmark_grid`` (jobs, resuming, curves, CSV rows),
and the tables and plots in ``benchmark_report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import statistics
import sys
from typing import Any

import benchlib  # noqa: F401  (puts the repository root on sys.path)
from absl import logging
from benchmark_grid import Benchmark, Grid, read_done, read_rows
from benchmark_report import markdown_report, read_csv, write_csv, write_plots
from benchmark_setup import (
    BASELINES,
    PRESETS,
    REPO_ROOT,
    Preset,
    finetune_config,
    grid_methods,
    needs_reserved_shard,
    run_config,
    shard_overrides,
    step_flops,
)

from adaptive_data import config_args, diagnose, methods

# ----------------------------------------------------------------------------- FLOPs


def flops_config(preset: Preset, root: pathlib.Path, method: str, args) -> Any:
    """The config whose compiled train step stands for every run of ``method`` in the
    preset's FLOPs: the first target's, seed 0, on the shard its runs read (``rest`` for a
    method scoring with a reserved-shard model). Compiling reads no reference parameters,
    so the reference paths are placeholders."""
    config = run_config(preset, preset.targets[0], method, 0, args)
    overrides = {"cds.generic_from": "-", "cds.target_from": "-", "rho.reference_from": "-"}
    if needs_reserved_shard(method):
        overrides |= shard_overrides("rest")
    config = config_args.override(config, overrides)
    if method == "finetune":
        config = finetune_config(preset, root, config, preset.finetune_learning_rates[0], args)
    return config


# ----------------------------------------------------------------------------- pilot


def step_seconds(rows) -> float:
    """Median seconds per train step over the logged rows, the first (compile) left out."""
    rates = [r["steps_per_sec"] for r in rows if r.get("steps_per_sec")][1:]
    return statistics.median(1.0 / rate for rate in rates) if rates else math.nan


def pilot_preset(preset: Preset, steps: int) -> Preset:
    """The preset's sizes, ``steps`` model steps, one seed, one target, one fine-tuning
    rate, no compute matching and no diagnose test: what one run of each method costs per
    step."""
    return dataclasses.replace(
        preset,
        targets=preset.targets[:1],
        steps=steps,
        seeds=preset.seeds[:1],
        finetune_steps=min(preset.finetune_steps, steps),
        finetune_learning_rates=preset.finetune_learning_rates[:1],
        compute_matched=False,
        runs_diagnose=False,
    )


def pilot_report(pilot: Benchmark, full: Benchmark, flops) -> tuple[dict[str, Any], str]:
    """Per-method seconds per step, fixed seconds per run (compile, start, evaluations)
    and FLOPs per step of the pilot's runs, and the full grid's projected seconds."""
    preset, target, seed = pilot.preset, pilot.preset.targets[0], pilot.preset.seeds[0]
    lr = preset.finetune_learning_rates[0]
    dirs = {m: pilot.run_dir(target, m, seed) for m in pilot.grid_methods}
    dirs["finetune"] = pilot.ft_dir(dirs["base"], lr)
    costs = {}
    for method, run in dirs.items():
        steps = preset.finetune_steps if method == "finetune" else preset.steps
        seconds = step_seconds(read_rows(run))
        costs[method] = {
            "seconds_per_step": seconds,
            "fixed_seconds": read_done(run)["wall_s"] - steps * seconds,
            "flops_per_step": flops[method]["active"],
        }
    projected = {
        job.label: job.steps * costs[job.method]["seconds_per_step"]
        + costs[job.method]["fixed_seconds"]
        for t in full.preset.targets
        for job in full.jobs(t)
    }
    total = sum(projected.values())
    record = {"steps": preset.steps, "target": target, "costs": costs, "projected_s": total}
    lines = [
        f"### Pilot ({preset.steps} steps, target `{target}`, seed {seed})",
        "",
        "| method | s / step | fixed s per run | FLOPs / step (x base) |",
        "|---|---|---|---|",
    ]
    for method, c in costs.items():
        ratio = c["flops_per_step"] / costs["base"]["flops_per_step"]
        lines.append(
            f"| {method} | {c['seconds_per_step']:.4f} | {c['fixed_seconds']:.0f} | {ratio:.2f} |"
        )
    lines += [
        "",
        f"Projected grid: {len(projected)} runs, {total / 3600:.1f} h (each run: its steps at "
        "the pilot's seconds per step of its method, plus the pilot's fixed seconds of that "
        "method; evaluations beyond the pilot's count are not included).",
        "",
    ]
    return record, "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument(
        "--workdir",
        default=None,
        help="root of the runs (default /tmp/adaptive_data_benchmark_<preset>)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="tables and plots (default experiments/results/benchmark_<preset>)",
    )
    parser.add_argument("--tfds_data_dir", default=None, help="TFDS data dir of the corpus")
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated subset of the preset's methods (base is always run)",
    )
    parser.add_argument(
        "--extra_modules",
        default="",
        help="'+'-separated modules that register methods of your own (config.extra_modules); "
        "name their methods in --methods",
    )
    parser.add_argument("--verbose", action="store_true", help="the driver's per-step logs")
    parser.add_argument(
        "--targets", default=None, help="comma-separated subset of the preset's target tasks"
    )
    parser.add_argument(
        "--report_from",
        default=None,
        help="a results.csv: rewrite results.md from it (no training)",
    )
    parser.add_argument(
        "--pilot",
        type=int,
        default=0,
        help="STEPS: run every method STEPS steps on the first target, one seed; write "
        "pilot.md (per-method step costs, the full grid's projected time) and stop",
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    if args.targets:
        preset = dataclasses.replace(
            preset, targets=tuple(benchlib.parse_list(args.targets, preset.targets))
        )
    methods.import_extra_modules(m for m in args.extra_modules.split("+") if m)
    if args.methods:
        chosen = benchlib.parse_list(args.methods, grid_methods())
        preset = dataclasses.replace(
            preset, methods=tuple(m for m in grid_methods() if m == "base" or m in chosen)
        )
    root = pathlib.Path(args.workdir or f"/tmp/adaptive_data_benchmark_{args.preset}")
    out = pathlib.Path(
        args.out or REPO_ROOT / "experiments" / "results" / f"benchmark_{args.preset}"
    )
    out.mkdir(parents=True, exist_ok=True)
    logging.set_verbosity(logging.INFO if args.verbose else logging.WARNING)
    command = "python experiments/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    extras_file, pilot_file = out / "extras.json", out / "pilot.md"
    extras = json.loads(extras_file.read_text()) if extras_file.exists() else {}
    pilot_text = pilot_file.read_text() if pilot_file.exists() else ""

    if args.report_from:
        diagnose_file = out / "diagnose.json"
        for target, verdict in (
            json.loads(diagnose_file.read_text()) if diagnose_file.exists() else {}
        ).items():
            extras.setdefault(target, {})["diagnose"] = verdict
        note = (
            f"Tables regenerated from `{args.report_from}` by `--report_from` (no training); "
            "the runs are those of the commit that wrote that CSV, and columns it lacks "
            "(compute-matched baselines, fine-tuning best steps) are left out."
        )
        report = markdown_report(
            args.preset,
            preset,
            read_csv(pathlib.Path(args.report_from)),
            extras,
            command,
            out,
            note + pilot_text,
        )
        (out / "results.md").write_text(report)
        print(report)
        return 0

    flops_file = out / "flops.json"
    flops = json.loads(flops_file.read_text()) if flops_file.exists() else {}
    for method in dict.fromkeys([*preset.methods, *BASELINES, "finetune"]):
        if method not in flops:
            flops[method] = step_flops(flops_config(preset, root, method, args))
            flops_file.write_text(json.dumps(flops, indent=2))

    full = Benchmark(preset, args, root, flops, preset.methods)
    if args.pilot:
        pilot = Benchmark(
            pilot_preset(preset, args.pilot), args, root / "pilot", flops, preset.methods
        )
        grid = Grid(pilot.jobs(pilot.preset.targets[0]))
        for job in pilot.jobs(pilot.preset.targets[0]):
            grid.run(job)
        record, text = pilot_report(pilot, full, flops)
        (out / "pilot.json").write_text(json.dumps(record, indent=2))
        pilot_file.write_text(f"{text}\nPilot command: `{command}`\n")
        print(text)
        return 0

    jobs = {target: full.jobs(target) for target in preset.targets}
    grid = Grid([job for target_jobs in jobs.values() for job in target_jobs])
    rows: list[dict[str, Any]] = []
    for target in preset.targets:
        for job in jobs[target]:
            grid.run(job)
        extras[target] = full.curves(target)
        if preset.runs_diagnose:
            base_dir = full.run_dir(target, "base", preset.seeds[0])
            if not (base_dir / "diagnose.json").exists():
                diagnose.diagnose(
                    full.config(target, "base", preset.seeds[0]),
                    str(base_dir),
                    num_batches=preset.diagnose_batches,
                )
            extras[target]["diagnose"] = json.loads((base_dir / "diagnose.json").read_text())
        rows += full.target_rows(target)
        # After every target, so an interrupted grid leaves the tables of those finished.
        write_csv(out / "results.csv", rows)
        extras_file.write_text(json.dumps(extras, indent=2))
        (out / "diagnose.json").write_text(
            json.dumps({t: e["diagnose"] for t, e in extras.items() if "diagnose" in e}, indent=2)
        )
        write_plots(out, full, target)
        (out / "results.md").write_text(
            markdown_report(args.preset, preset, rows, extras, command, out, pilot_text)
        )
    print((out / "results.md").read_text())
    print(f"wrote {out}/results.csv, results.md and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
