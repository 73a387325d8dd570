"""Validates the preflight test (``--mode=diagnose``) on both questions it answers.

The design is fixed before anything runs, in
``experiments/results/diagnose_validation_v2/prereg.md`` (committed first); this script is
its executable form. In short:

* tasks (``task_specs``): every embedded domain at pool share 0 and at the largest share of
  ``IN_POOL_SHARES`` it supplies (16 domain tasks), and 8 controls drawn from the pool
  itself (``CONTROLS``: three held-out samples of the whole pool with their own hash salts
  and target_train sizes, five samples of two or three of its domains at their pool
  proportions); every task at ``SEEDS``;
* per task and seed: ``base``, ``align_filter`` and ``anograd`` for ``STEPS`` model
  updates, and base's annealed frontier (``base`` trained with its own full schedule for
  2, 4 and 8 times the steps; the 4x and 8x points only while a method's bpb lies beyond
  the frontier's last point and that point spends less than the method: ``needed_budgets``);
* predictor: ``diagnose`` on the base run at its default checkpoint (the latest within 15%
  of the steps): the cosine gain (continuous, equal-steps outcome), the speed-up over the
  method's FLOPs ratio (continuous, compute outcome), and the verdicts of the method's
  family (``exact_scores`` for align_filter, ``learned_weights`` for anograd);
* outcomes: (1) equal steps: relative target_test bpb gain over base at the same steps,
  label "helps" when its seed mean exceeds ``MARGIN``; (2) compute: the effective compute
  multiplier, base's frontier FLOPs to reach the method's bpb over the method's FLOPs,
  label "pays" when the geometric seed mean exceeds 1;
* report per method and outcome: accuracy, precision and recall of the verdict (each
  seed's verdict against the task's label) next to "always yes" and the trivial rule "yes
  unless the target is drawn from the pool"; AUC and Spearman of the continuous predictor
  (seed means, one point per task) over the domain tasks alone and over all tasks;
  leave-one-domain-out threshold accuracy.

Usage (resumable: finished runs are skipped; ``--workers`` runs task-seeds in parallel)::

    python experiments/diagnose_validation_v2.py --root /work/runs/dv2 --workers 2
    python experiments/diagnose_validation_v2.py --quick --root /tmp/dv2q   # smoke test

Writes ``experiments/results/diagnose_validation_v2/`` (``results.csv``, ``results.md``,
``predicted_vs_realised.png``, ``summary.json``) and, when every task has finished,
``adaptive_data/diagnose_accuracy.json`` (the accuracy ``--mode=diagnose`` prints).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import benchlib  # noqa: F401  (puts the repository root on sys.path)
import numpy as np

from adaptive_data import command_line, config_args, diagnose, metrics, stats, step_cost
from adaptive_data.data import embedded_corpus

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "experiments" / "results" / "diagnose_validation_v2"

# --- Declared in prereg.md before running -------------------------------------------------
IN_POOL_SHARES = (0.10, 0.08, 0.06, 0.03)  # the largest a domain can supply is used
MAX_TARGET_TRAIN = 32
# Controls drawn from the pool: (task, max_target_train).
CONTROLS = (
    ("pool", 32),
    ("pool_b", 16),
    ("pool_c", 64),
    ("pool_code", 32),
    ("pool_reference", 32),
    ("pool_prose", 32),
    ("pool_computing", 32),
    ("pool_english", 32),
)
SEEDS = (0, 1)
# The method validated for each family of the test's verdicts (align_filter for
# exact_scores, anograd for learned_weights): the one whose cost the verdict uses.
FAMILY_OF = {method: family for family, method in diagnose.cost_methods().items()}
MARGIN = 0.005  # "helps": seed-mean target_test bpb at least 0.5% below base's
FRONTIER_MULTIPLES = (1, 2, 4, 8)  # base's budgets, in multiples of STEPS
CHECKPOINTS_PER_RUN = 20  # on the 1x runs: every 5% of the steps


@dataclasses.dataclass(frozen=True)
class Size:
    steps: int
    diagnose_batches: int
    overrides: dict[str, object]  # dotted config key -> value, every run


FULL = Size(
    steps=400,
    diagnose_batches=8,
    overrides={"eval.max_examples": 256, "select.warmup_steps": 20},
)
QUICK = Size(steps=20, diagnose_batches=2, overrides={"select.warmup_steps": 2})


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str  # row label
    task: str  # embedded task
    group: str  # leave-one-group-out group: the domain, or the control's own name
    share: float
    max_target_train: int
    control: bool  # drawn from the pool itself


def in_pool_share(task: str) -> float:
    """The largest of IN_POOL_SHARES the task's domain supplies at MAX_TARGET_TRAIN."""
    for share in IN_POOL_SHARES:
        try:
            embedded_corpus.split_doc_ids(
                task, pool_target_share=share, max_target_train=MAX_TARGET_TRAIN
            )
        except ValueError:
            continue
        return share
    raise ValueError(f"task {task!r} supplies none of the pool shares {IN_POOL_SHARES}")


def task_specs(quick: bool) -> list[TaskSpec]:
    if quick:
        return [
            TaskSpec("python-share0.1", "python", "python", 0.10, MAX_TARGET_TRAIN, False),
            TaskSpec("pool_code", "pool_code", "pool_code", 0.0, MAX_TARGET_TRAIN, True),
        ]
    specs = [
        TaskSpec(f"{domain}-share{share:g}", domain, domain, share, MAX_TARGET_TRAIN, False)
        for domain in embedded_corpus.DOMAINS
        for share in (0.0, in_pool_share(domain))
    ]
    specs += [TaskSpec(f"{task}-tt{size}", task, task, 0.0, size, True) for task, size in CONTROLS]
    return specs


def run_overrides(spec: TaskSpec, seed: int, size: Size, multiple: int) -> dict[str, object]:
    """The config overrides of one run: ``multiple`` x the steps (a frontier point when > 1,
    with its own full schedule), CHECKPOINTS_PER_RUN checkpoints on the 1x runs (the
    diagnosed one among them), one at the end otherwise."""
    steps = multiple * size.steps
    every = max(1, steps // CHECKPOINTS_PER_RUN) if multiple == 1 else steps
    return {
        "data.task": spec.task,
        "data.pool_target_share": spec.share,
        "data.max_target_train": spec.max_target_train,
        "seed": seed,
        "train.steps": steps,
        "train.eval_every": steps,
        "checkpoint.every": every,
        "checkpoint.keep": 1000,
        **size.overrides,
    }


def run_config(spec: TaskSpec, seed: int, size: Size, method: str, multiple: int, data_dir: str):
    config = config_args.load_config(REPO_ROOT / "configs/default.py", f"runlocal,method={method}")
    overrides = run_overrides(spec, seed, size, multiple)
    return config_args.override(config, {**overrides, "data.tfds_data_dir": data_dir})


def final_bpb(workdir: pathlib.Path, steps: int) -> float | None:
    """target_test bpb of a finished run (its eval row at step == steps), else None."""
    rows = metrics.read_metrics(workdir, missing_ok=True)
    evals = [r for r in rows if r.get("step") == steps and "eval/target_bpb" in r]
    return evals[-1]["eval/target_bpb"] if evals else None


def train(spec, seed, size, method, multiple, workdir: pathlib.Path, data_dir: str) -> float:
    """Trains one run (a subprocess of the driver) unless finished; its target_test bpb."""
    steps = multiple * size.steps
    bpb = final_bpb(workdir, steps)
    if bpb is not None:
        return bpb
    workdir.mkdir(parents=True, exist_ok=True)
    overrides = {**run_overrides(spec, seed, size, multiple), "data.tfds_data_dir": data_dir}
    command = command_line.driver_command(
        f"configs/default.py:runlocal,method={method}", workdir, overrides=overrides
    )
    start = time.time()
    with (workdir / "log.txt").open("a") as log:
        result = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({result.returncode}); see {log.name}")
    print(f"  {spec.name} seed {seed} {workdir.name}: {time.time() - start:.0f} s", flush=True)
    bpb = final_bpb(workdir, steps)
    if bpb is None:
        raise RuntimeError(f"{workdir} finished without an eval row at step {steps}.")
    return bpb


def needed_budgets(frontier: dict[int, float], method_bpb: dict[str, float], costs) -> int | None:
    """The next frontier multiple to train, or None when the frontier suffices: while some
    method's bpb is below the bpb of the frontier's largest budget and that budget spends
    fewer FLOPs than the method (``costs[method]`` x the 1x budget), the next multiple of
    FRONTIER_MULTIPLES (None past the last)."""
    largest = max(frontier)
    for method, bpb in method_bpb.items():
        if bpb < frontier[largest] and largest < costs[method]:
            later = [m for m in FRONTIER_MULTIPLES if m > largest]
            return later[0] if later else None
    return None


def compute_multiplier(frontier: dict[int, float], bpb: float, cost: float) -> tuple[float, str]:
    """Base's frontier budget reaching ``bpb`` (in 1x budgets, log-linear between points)
    over the method's ``cost`` (its FLOPs in 1x budgets of base); and where on the frontier
    (``stats.frontier_flops``: inside, or extrapolated below / above)."""
    budgets = sorted(frontier)
    point = stats.frontier_flops(budgets, [frontier[m] for m in budgets], bpb)
    return point.flops / cost, point.where


def run_task_seed(spec, seed, size, root: pathlib.Path, data_dir, costs) -> dict[str, Any]:
    """Every run of one task and seed, the diagnosis of its base run; its results row."""
    unit = root / spec.name / f"seed{seed}"
    base_dir = unit / "base_x1"
    frontier = {1: train(spec, seed, size, "base", 1, base_dir, data_dir)}
    method_bpb = {m: train(spec, seed, size, m, 1, unit / m, data_dir) for m in FAMILY_OF}
    frontier[2] = train(spec, seed, size, "base", 2, unit / "base_x2", data_dir)
    while (multiple := needed_budgets(frontier, method_bpb, costs)) is not None:
        frontier[multiple] = train(
            spec, seed, size, "base", multiple, unit / f"base_x{multiple}", data_dir
        )
    report_file = base_dir / "diagnose.json"
    if not report_file.exists():
        config = run_config(spec, seed, size, "base", 1, data_dir)
        diagnose.diagnose(config, str(base_dir), num_batches=size.diagnose_batches, costs=costs)
    report = json.loads(report_file.read_text())
    statistics = report["statistics"]
    row: dict[str, Any] = {
        "task": spec.name,
        "seed": seed,
        "control": spec.control,
        "group": spec.group,
        "embedded_task": spec.task,
        "share": spec.share,
        "max_target_train": spec.max_target_train,
        "diagnose_step": report["checkpoint_step"],
        "cosine_gain": statistics["cosine_gain"]["mean"],
        "cosine_gain_stderr": statistics["cosine_gain"]["stderr"],
        "speedup": statistics["speedup"]["mean"],
        "speedup_stderr": statistics["speedup"]["stderr"],
        "rank_corr_stability": statistics["rank_corr_stability"]["mean"],
        **{f"base_x{m}_target_test_bpb": frontier[m] for m in sorted(frontier)},
    }
    for method, family in FAMILY_OF.items():
        verdict = report["verdicts"][family]
        bpb = method_bpb[method]
        multiplier, where = compute_multiplier(frontier, bpb, costs[method])
        row |= {
            f"{method}_target_test_bpb": bpb,
            f"{method}_gain": (frontier[1] - bpb) / frontier[1],
            f"{method}_cost": costs[method],
            f"{method}_multiplier": multiplier,
            f"{method}_multiplier_where": where,
            f"{method}_predicted_multiplier": row["speedup"] / costs[method],
            f"{method}_verdict_helps": verdict["helps_at_equal_steps"],
            f"{method}_verdict_pays": verdict["pays_for_compute"],
        }
    return row


def add_labels(rows: list[dict[str, Any]]) -> None:
    """Each row's task labels from the seed means of its task: ``<method>_helps`` (mean
    gain > MARGIN), ``<method>_pays`` (geometric mean multiplier > 1), their SDs over seeds."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    for task_rows in by_task.values():
        for method in FAMILY_OF:
            gains = [r[f"{method}_gain"] for r in task_rows]
            logs = [math.log(r[f"{method}_multiplier"]) for r in task_rows]
            for row in task_rows:
                row[f"{method}_gain_seed_mean"] = float(np.mean(gains))
                row[f"{method}_gain_seed_sd"] = (
                    float(np.std(gains, ddof=1)) if len(gains) > 1 else math.nan
                )
                row[f"{method}_multiplier_seed_mean"] = float(math.exp(np.mean(logs)))
                row[f"{method}_log_multiplier_seed_sd"] = (
                    float(np.std(logs, ddof=1)) if len(logs) > 1 else math.nan
                )
                row[f"{method}_helps"] = bool(np.mean(gains) > MARGIN)
                row[f"{method}_pays"] = bool(np.mean(logs) > 0.0)


def classification(predicted: Sequence[bool], labels: Sequence[bool]) -> dict[str, float]:
    """Accuracy, precision (nan without a predicted positive) and recall (nan without a
    positive) of ``predicted`` against ``labels``."""
    p, y = np.asarray(predicted, dtype=bool), np.asarray(labels, dtype=bool)
    true_positives = int((p & y).sum())
    return {
        "accuracy": float((p == y).mean()),
        "precision": true_positives / int(p.sum()) if p.any() else math.nan,
        "recall": true_positives / int(y.sum()) if y.any() else math.nan,
    }


# The outcomes: (label key, verdict key, continuous predictor key, realised value key).
OUTCOMES = {
    "equal_steps": ("helps", "verdict_helps", "cosine_gain", "gain_seed_mean"),
    "compute": ("pays", "verdict_pays", "predicted_multiplier", "multiplier_seed_mean"),
}


def predictor_of(row, method, key):
    return row[key] if key in row else row[f"{method}_{key}"]


def evaluate(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {outcome: figures}}``: the verdict's accuracy, precision and recall over
    task-seeds next to "always yes" and the trivial rule; AUC and Spearman of the
    continuous predictor over tasks (seed means), domain tasks alone and all; the
    leave-one-domain-out threshold accuracy over tasks; label counts and noise."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method in FAMILY_OF:
        out[method] = {}
        for outcome, (label, verdict, predictor, realised) in OUTCOMES.items():
            labels = [r[f"{method}_{label}"] for r in rows]
            figures: dict[str, Any] = {
                "task_seeds": len(rows),
                "positives": int(sum(labels)),
                "verdict": classification([r[f"{method}_{verdict}"] for r in rows], labels),
                "always_yes": classification([True] * len(rows), labels),
                # Not pre-registered; reported beside it because few tasks may pay.
                "always_no": classification([False] * len(rows), labels),
                "trivial_rule": classification([not r["control"] for r in rows], labels),
            }
            tasks: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                tasks.setdefault(r["task"], []).append(r)
            points = [
                (
                    float(np.mean([predictor_of(r, method, predictor) for r in task_rows])),
                    task_rows[0][f"{method}_{realised}"],
                    task_rows[0][f"{method}_{label}"],
                    task_rows[0]["group"],
                    task_rows[0]["control"],
                )
                for task_rows in tasks.values()
            ]
            for scope, chosen in (
                ("domain_tasks", [p for p in points if not p[4]]),
                ("all_tasks", points),
            ):
                x, value, y, groups = ([p[i] for p in chosen] for i in range(4))
                figures[scope] = {
                    "tasks": len(chosen),
                    "positives": int(sum(y)),
                    "auc": stats.roc_auc(x, y),
                    "spearman": stats.spearman(x, value),
                    "lodo_accuracy": stats.leave_one_group_out_threshold(x, y, groups)[0]
                    if len(set(groups)) > 1
                    else math.nan,
                }
            out[method][outcome] = figures
    return out


def accuracy_file_content(summary, command: str) -> dict[str, Any]:
    """What ``adaptive_data/diagnose_accuracy.json`` holds: per family and outcome, the
    verdict's accuracy next to the baselines' (read by ``diagnose.validated_accuracy``)."""
    families = {}
    for method, family in FAMILY_OF.items():
        families[family] = {
            outcome: {
                "method": method,
                "tasks": figures["task_seeds"],
                "accuracy": figures["verdict"]["accuracy"],
                "always_yes": figures["always_yes"]["accuracy"],
                "always_no": figures["always_no"]["accuracy"],
                "trivial_rule": figures["trivial_rule"]["accuracy"],
                "auc_domain_tasks": figures["domain_tasks"]["auc"],
            }
            for outcome, figures in summary[method].items()
        }
    return {
        "source": "experiments/results/diagnose_validation_v2/results.md",
        "command": command,
        "date": datetime.date.today().isoformat(),
        "families": families,
    }


# The two tables of each method and outcome: (key, header, format) per column.
RULE_COLUMNS = [
    ("rule", "rule", ""),
    ("accuracy", "accuracy", ".2f"),
    ("precision", "precision", ".2f"),
    ("recall", "recall", ".2f"),
]
RULES = (
    ("test's verdict", "verdict"),
    ("always yes", "always_yes"),
    ("always no (not pre-registered)", "always_no"),
    ("yes unless drawn from the pool", "trivial_rule"),
)
SCOPE_COLUMNS = [
    ("scope", "tasks", ""),
    ("tasks", "n", ""),
    ("positives", "positives", ""),
    ("auc", "AUC", ".2f"),
    ("spearman", "Spearman", ".2f"),
    ("lodo_accuracy", "LODO threshold accuracy", ".2f"),
]


def write_results(rows, summary, command, out: pathlib.Path, size, wall_s, total, costs, note=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    fig, axes = plt.subplots(2, len(FAMILY_OF), figsize=(11, 8))
    for col, method in enumerate(FAMILY_OF):
        for row_i, (outcome, (_, _, predictor, _)) in enumerate(OUTCOMES.items()):
            ax = axes[row_i][col]
            for r in rows:
                x = predictor_of(r, method, predictor)
                y = (
                    r[f"{method}_gain"] * 100
                    if outcome == "equal_steps"
                    else r[f"{method}_multiplier"]
                )
                ax.scatter(x, y, color="tab:gray" if r["control"] else "tab:blue", s=14)
            if outcome == "equal_steps":
                ax.axhline(100 * MARGIN, color="k", lw=0.5, ls="--")
                ax.set_ylabel("realised target_test bpb gain over base (%)")
                ax.set_xlabel("predicted: cosine gain (base run, diagnose)")
            else:
                ax.axhline(1.0, color="k", lw=0.5, ls="--")
                ax.axvline(1.0, color="k", lw=0.5, ls=":")
                ax.set_yscale("log")
                ax.set_ylabel("realised compute multiplier (annealed frontier)")
                ax.set_xlabel(f"predicted: speed-up / {costs[method]:.2f} (FLOPs ratio)")
            figs = summary[method][outcome]["domain_tasks"]
            ax.set_title(
                f"{method}, {outcome}: domain AUC {benchlib.fmt(figs['auc'], '.2f')}", fontsize=9
            )
    fig.suptitle("blue: domain tasks, gray: controls drawn from the pool; one point per seed")
    fig.tight_layout()
    fig.savefig(out / "predicted_vs_realised.png", dpi=110)
    plt.close(fig)

    lines = [
        "# Preflight test v2: validation on both questions",
        "",
        *(
            [f"**Partial: {len(rows)} of {total} task-seeds finished** (the run resumes).", ""]
            if len(rows) < total
            else []
        ),
        f"Pre-registration: [prereg.md](prereg.md). Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"date {datetime.date.today().isoformat()}; wall time {wall_s / 60:.0f} min (this "
        "invocation).",
        f"Steps {size.steps} (tiny model, configs/default.py:runlocal); FLOPs per update over "
        + ", ".join(f"{m} {c:.2f}x" for m, c in costs.items())
        + " base's (XLA, adaptive_data.step_cost).",
        "",
        *([note, ""] if note else []),
    ]
    for method in FAMILY_OF:
        for outcome, figures in summary[method].items():
            lines += [
                f"## {method}: {outcome.replace('_', ' ')}",
                "",
                f"{figures['positives']} positive of {figures['task_seeds']} task-seeds.",
                "",
                benchlib.render_table(
                    [{"rule": name, **figures[key]} for name, key in RULES], RULE_COLUMNS
                )[1],
                "",
                benchlib.render_table(
                    [
                        {"scope": scope.replace("_", " "), **figures[scope]}
                        for scope in ("domain_tasks", "all_tasks")
                    ],
                    SCOPE_COLUMNS,
                )[1],
                "",
            ]
    lines += [
        "## Per task and seed",
        "",
        "| task | seed | cosine gain | speed-up | stability | align_filter gain | "
        "multiplier | anograd gain | multiplier | frontier points |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        budgets = "/".join(
            k[len("base_x") : -len("_target_test_bpb")] for k in r if k.startswith("base_x")
        )
        lines.append(
            f"| {r['task']}{' (control)' if r['control'] else ''} | {r['seed']} | "
            f"{r['cosine_gain']:+.3f} +- {r['cosine_gain_stderr']:.3f} | {r['speedup']:.3f} | "
            f"{r['rank_corr_stability']:.2f} | {100 * r['align_filter_gain']:+.2f}% | "
            f"{r['align_filter_multiplier']:.2f} | {100 * r['anograd_gain']:+.2f}% | "
            f"{r['anograd_multiplier']:.2f} | {budgets} |"
        )
    lines += ["", "![predicted vs realised](predicted_vs_realised.png)", ""]
    (out / "results.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 tasks, 20 steps (smoke test)")
    parser.add_argument("--root", default="/tmp/diagnose_validation_v2", help="run workdirs")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: ROOT/tfds)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    parser.add_argument("--workers", type=int, default=1, help="task-seeds run in parallel")
    parser.add_argument("--note", default="", help="a paragraph for results.md (history)")
    parser.add_argument(
        "--accuracy_file",
        default=str(diagnose.ACCURACY_FILE),
        help="where the finished validation writes the accuracy --mode=diagnose prints",
    )
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    root = pathlib.Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or str(root / "tfds")
    given = list(argv or sys.argv[1:])
    if "--note" in given:  # the note is history, not part of the command
        del given[given.index("--note") : given.index("--note") + 2]
    given = [a for a in given if not a.startswith("--note=")]
    command = shlex.join(["python", "experiments/diagnose_validation_v2.py", *given])
    specs = task_specs(args.quick)
    units = [(spec, seed) for spec in specs for seed in SEEDS]
    costs_file = root / "costs.json"
    if not costs_file.exists():
        config = run_config(specs[0], 0, size, "base", 1, data_dir)
        costs_file.write_text(json.dumps(step_cost.cost_ratios(config, list(FAMILY_OF)), indent=2))
    costs = json.loads(costs_file.read_text())
    start, rows = time.time(), []

    def finished(row):
        rows.append(row)
        elapsed = time.time() - start
        print(
            f"[{len(rows)}/{len(units)}] {row['task']} seed {row['seed']} "
            f"({elapsed / 60:.0f} min, ETA "
            f"{elapsed / len(rows) * (len(units) - len(rows)) / 60:.0f} min)",
            flush=True,
        )
        names = [spec.name for spec in specs]
        ordered = sorted(rows, key=lambda r: (names.index(r["task"]), r["seed"]))
        complete = [
            r for r in ordered if sum(x["task"] == r["task"] for x in ordered) == len(SEEDS)
        ]
        add_labels(ordered)
        if complete:
            summary = evaluate(complete)
            write_results(
                ordered,
                summary,
                command,
                pathlib.Path(args.out),
                size,
                time.time() - start,
                len(units),
                costs,
                args.note,
            )
            if len(rows) == len(units) and not args.quick:
                pathlib.Path(args.accuracy_file).write_text(
                    json.dumps(accuracy_file_content(summary, command), indent=2) + "\n"
                )

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = [
            pool.submit(run_task_seed, spec, seed, size, root, data_dir, costs)
            for spec, seed in units
        ]
        for future in futures:
            finished(future.result())
    return 0


if __name__ == "__main__":
    sys.exit(main())
