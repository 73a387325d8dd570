"""Validates ``--mode=diagnose`` as a predictor of selection's realised gain.

Outcomes and the decision rule are fixed here, before anything runs:

* tasks: every embedded domain at two pool shares, 0 (target absent from the pool) and
  the largest of ``IN_POOL_SHARES`` the domain can supply (0.10 for most; jargon only
  0.03), with a scarce ``target_train`` (``MAX_TARGET_TRAIN`` documents), plus the negative
  control ``pool`` (target = held-out sample of the pool's own mixture; the right answer
  is "no") at ``NEGATIVE_CONTROL_SEEDS``: 8 x 2 + 4 = 20 tasks;
* per task: ``base``, ``align_filter`` and ``anograd`` trained for the same number of steps
  from the same seed (``python -m adaptive_data.main`` subprocesses);
* predictor: ``diagnose`` on the *base* run's checkpoint at ``DIAGNOSE_FRACTION`` (10%) of
  the steps (within the 15% budget; a base run is what a user has before choosing a
  method), continuous score ``PREDICTOR`` = the mean target-specific cosine gain; also
  the built-in verdict (``verdicts.exact_scores`` for align_filter, ``learned_weights``
  for anograd);
* outcome: relative target_test bpb gain over base at equal steps,
  ``(bpb_base - bpb_method) / bpb_base``; label "selection helped" = gain > ``MARGIN``;
* reported per method: Spearman(predictor, gain), ROC AUC of the predictor for the label,
  accuracy of a threshold on the predictor chosen leave-one-domain-out (the negative
  controls are their own group), and the accuracy of the built-in verdict.

Usage (resumable: finished runs are skipped; progress is printed)::

    python experiments/diagnose_validation.py               # the full validation
    python experiments/diagnose_validation.py --quick       # 2 tasks, a few steps (smoke)

Writes ``experiments/results/diagnose_validation/`` (``results.csv``, ``results.md``,
``predicted_vs_realised.png``); runs live under ``--root``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time

import numpy as np

from adaptive_data import command_line, config_args, diagnose, metrics, run_setup, stats
from adaptive_data.data import embedded_corpus

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "experiments" / "results" / "diagnose_validation"

# --- Declared before running -------------------------------------------------------------
IN_POOL_SHARES = (0.10, 0.08, 0.06, 0.03)  # the largest a domain can supply is used
MAX_TARGET_TRAIN = 32
NEGATIVE_CONTROL_SEEDS = (0, 1, 2, 3)
# The baseline first, then the selection methods whose gain over it is the outcome.
COMPARED_METHODS = ("base", "align_filter", "anograd")
DIAGNOSE_FRACTION = 0.10
PREDICTOR = "cosine_gain"
MARGIN = 0.005  # "selection helped": target_test bpb at least 0.5% below base's


@dataclasses.dataclass(frozen=True)
class Size:
    steps: int
    diagnose_batches: int
    overrides: dict[str, object]  # dotted config key -> value


FULL = Size(
    steps=400,
    diagnose_batches=8,
    overrides={"train.eval_every": 400, "eval.max_examples": 256, "select.warmup_steps": 20},
)
QUICK = Size(steps=20, diagnose_batches=2, overrides={"train.eval_every": 20})


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str  # row label
    task: str  # embedded task
    group: str  # leave-one-group-out group: the domain, or "pool" for negative controls
    share: float
    seed: int


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
            TaskSpec("python-share0.1", "python", "python", 0.10, 0),
            TaskSpec("pool-seed0", "pool", "pool", 0.0, 0),
        ]
    specs = []
    for domain in embedded_corpus.DOMAINS:
        for share in (0.0, in_pool_share(domain)):
            specs.append(TaskSpec(f"{domain}-share{share:g}", domain, domain, share, 0))
    for seed in NEGATIVE_CONTROL_SEEDS:
        specs.append(TaskSpec(f"pool-seed{seed}", "pool", "pool", 0.0, seed))
    return specs


def driver_command(spec: TaskSpec, method: str, size: Size, workdir: pathlib.Path, mode: str):
    checkpoint_every = max(1, int(DIAGNOSE_FRACTION * size.steps) // 2)
    overrides = {
        "data.task": spec.task,
        "data.pool_target_share": spec.share,
        "data.max_target_train": MAX_TARGET_TRAIN,
        "seed": spec.seed,
        "train.steps": size.steps,
        "checkpoint.every": checkpoint_every,
        "checkpoint.keep": 1000,
        "diagnose.step": 2 * checkpoint_every,
        **size.overrides,
    }
    return command_line.driver_command(
        f"configs/default.py:runlocal,method={method}",
        workdir,
        overrides=overrides,
        flags=(f"--mode={mode}",),
    )


def final_metrics(workdir: pathlib.Path, steps: int) -> dict | None:
    """The last eval row of a finished run (step == steps), else None."""
    rows = metrics.read_metrics(workdir, missing_ok=True)
    evals = [r for r in rows if r.get("step") == steps and "eval/target_bpb" in r]
    return evals[-1] if evals else None


def run(command: list[str], log: pathlib.Path) -> float:
    start = time.time()
    with log.open("a") as f:
        result = subprocess.run(command, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({result.returncode}); see {log}")
    return time.time() - start


def run_task(spec: TaskSpec, size: Size, root: pathlib.Path, data_dir: str) -> dict:
    row = {"task": spec.name, "group": spec.group, "share": spec.share, "seed": spec.seed}
    for method in COMPARED_METHODS:
        workdir = root / spec.name / method
        workdir.mkdir(parents=True, exist_ok=True)
        if final_metrics(workdir, size.steps) is None:
            command = driver_command(spec, method, size, workdir, "train")
            command.append(f"--config.data.tfds_data_dir={data_dir}")
            seconds = run(command, workdir / "log.txt")
            print(f"  {spec.name}/{method}: trained in {seconds:.0f} s", flush=True)
        row[f"{method}_target_test_bpb"] = final_metrics(workdir, size.steps)["eval/target_bpb"]
    base_dir = root / spec.name / "base"
    if not (base_dir / "diagnose.json").exists():
        command = driver_command(spec, "base", size, base_dir, "diagnose")
        command += [
            f"--config.data.tfds_data_dir={data_dir}",
            f"--diagnose_batches={size.diagnose_batches}",
        ]
        seconds = run(command, base_dir / "log.txt")
        print(f"  {spec.name}: diagnosed in {seconds:.0f} s", flush=True)
    report = json.loads((base_dir / "diagnose.json").read_text())
    statistics = report["statistics"]
    row["diagnose_step"] = report["checkpoint_step"]
    row["cosine_gain"] = statistics["cosine_gain"]["mean"]
    row["cosine_gain_stderr"] = statistics["cosine_gain"]["stderr"]
    row["relative_lookahead_gain"] = statistics["relative_lookahead_gain"]["mean"]
    row["relative_lookahead_gain_stderr"] = statistics["relative_lookahead_gain"]["stderr"]
    row["rank_corr_checkpoints"] = statistics.get("rank_corr_checkpoints", {}).get("mean")
    base_bpb = row["base_target_test_bpb"]
    for method in COMPARED_METHODS[1:]:
        gain = (base_bpb - row[f"{method}_target_test_bpb"]) / base_bpb
        row[f"{method}_gain"] = gain
        row[f"{method}_helped"] = gain > MARGIN
        row[f"{method}_verdict"] = report["verdicts"][verdict_kind(method)]["expected_to_help"]
    return row


@functools.cache
def verdict_kind(method: str) -> str:
    """The verdict of the base run's diagnosis that speaks for ``method``: ``exact_scores``
    or ``learned_weights`` (``diagnose.verdict_kind``, from the method's own state)."""
    config = config_args.load_config(REPO_ROOT / "configs/default.py", f"runlocal,method={method}")
    setup = run_setup.build(
        config, domains=embedded_corpus.DOMAINS, target_domain=embedded_corpus.DOMAINS[0]
    )
    return diagnose.verdict_kind(setup)


def evaluate(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per method: Spearman, AUC, leave-one-domain-out accuracy, built-in verdict accuracy."""
    predictor = [r[PREDICTOR] for r in rows]
    groups = [r["group"] for r in rows]
    out = {}
    for method in COMPARED_METHODS[1:]:
        gains = [r[f"{method}_gain"] for r in rows]
        labels = [r[f"{method}_helped"] for r in rows]
        verdicts = [r[f"{method}_verdict"] for r in rows]
        out[method] = {
            "spearman": stats.spearman(predictor, gains),
            "auc": stats.roc_auc(predictor, labels),
            "lodo_accuracy": (
                stats.leave_one_group_out_threshold(predictor, labels, groups)[0]
                if len(set(groups)) > 1
                else float("nan")
            ),
            "verdict_accuracy": float(np.mean([v == y for v, y in zip(verdicts, labels)])),
            "positives": int(sum(labels)),
            "tasks": len(rows),
        }
    return out


def write_results(
    rows, summary, command, out: pathlib.Path, size: Size, wall_s: float, *, total_tasks: int
):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, axes = plt.subplots(1, len(COMPARED_METHODS) - 1, figsize=(10, 4), sharey=True)
    for ax, method in zip(axes, COMPARED_METHODS[1:]):
        for r in rows:
            color = "tab:gray" if r["group"] == "pool" else "tab:blue"
            ax.scatter(r[PREDICTOR], 100 * r[f"{method}_gain"], color=color)
            ax.annotate(r["task"], (r[PREDICTOR], 100 * r[f"{method}_gain"]), fontsize=6)
        ax.axhline(100 * MARGIN, color="k", lw=0.5, ls="--")
        ax.set_xlabel(f"predicted: {PREDICTOR} (base run, {DIAGNOSE_FRACTION:.0%} of steps)")
        ax.set_title(f"{method}: Spearman {summary[method]['spearman']:.2f}")
    axes[0].set_ylabel("realised target_test bpb gain over base (%)")
    fig.tight_layout()
    fig.savefig(out / "predicted_vs_realised.png", dpi=110)
    lines = [
        "# Diagnose validation: predicted vs realised gain of selection",
        "",
        *(
            [f"**Partial: {len(rows)} of {total_tasks} tasks finished** (the run resumes).", ""]
            if len(rows) < total_tasks
            else []
        ),
        f"Command: `{command}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"date {datetime.date.today().isoformat()}; wall time {wall_s / 60:.0f} min.",
        f"Steps {size.steps} (tiny model, configs/default.py:runlocal), max_target_train "
        f"{MAX_TARGET_TRAIN}, diagnose on base at {DIAGNOSE_FRACTION:.0%} of the steps; "
        f"label: gain > {MARGIN:.1%}; predictor: {PREDICTOR}.",
        "",
        "| method | tasks | positives | Spearman | AUC | LODO accuracy | verdict accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        lines.append(
            f"| {method} | {s['tasks']} | {s['positives']} | {s['spearman']:.3f} | "
            f"{s['auc']:.3f} | {s['lodo_accuracy']:.3f} | {s['verdict_accuracy']:.3f} |"
        )
    lines += ["", "| task | cosine gain | rel. look-ahead | align_filter gain | anograd gain |"]
    lines.append("|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['cosine_gain']:+.3f} +- {r['cosine_gain_stderr']:.3f} | "
            f"{r['relative_lookahead_gain']:+.3f} +- {r['relative_lookahead_gain_stderr']:.3f} "
            f"| {100 * r['align_filter_gain']:+.2f}% | {100 * r['anograd_gain']:+.2f}% |"
        )
    lines += ["", "![predicted vs realised](predicted_vs_realised.png)", ""]
    (out / "results.md").write_text("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 tasks, 20 steps (smoke test)")
    parser.add_argument("--root", default="/tmp/diagnose_validation", help="run workdirs")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: ROOT/tfds)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    root = pathlib.Path(args.root)
    data_dir = args.data_dir or str(root / "tfds")
    specs = task_specs(args.quick)
    start, rows = time.time(), []
    command = shlex.join(["python", "experiments/diagnose_validation.py", *(argv or sys.argv[1:])])
    for i, spec in enumerate(specs):
        elapsed = time.time() - start
        eta = f", ETA {elapsed / i * (len(specs) - i) / 60:.0f} min" if i else ""
        print(f"[{i + 1}/{len(specs)}] {spec.name} ({elapsed:.0f} s{eta})", flush=True)
        task_start = time.time()
        rows.append(run_task(spec, size, root, data_dir))
        print(f"  done in {time.time() - task_start:.0f} s", flush=True)
        # Tables after every task, so an interrupted validation still shows what it has.
        summary = evaluate(rows)
        write_results(
            rows,
            summary,
            command,
            pathlib.Path(args.out),
            size,
            time.time() - start,
            total_tasks=len(specs),
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
