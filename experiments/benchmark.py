"""The methods x targets benchmark: every registered method on every embedded target task,
the same model steps and batch size for all, each then fine-tuned on target_train.

    python experiments/benchmark.py --preset quick      # every method, a few steps (CI)
    nohup python experiments/benchmark.py --preset cpu > /tmp/bench_cpu.log 2>&1 &
    python experiments/benchmark.py --preset gpu        # a larger model, for a lent GPU

For each target task (``python``, ``jargon``, ``russian``), in order:

1. ``base`` (generic data only), then its fine-tuned copy and the diagnose test at an
   early checkpoint of it (``--mode=diagnose``: does selection look worth it here?);
2. every other method (``adaptive_data.methods.METHODS`` but ``finetune``) from scratch;
   ``cds`` and ``rho`` score with the base run and its fine-tuned copy, whose training
   FLOPs are charged to them;
3. each run fine-tuned on target_train (the same steps and learning rate for all), the
   best checkpoint by target_valid kept (early stopping); reported: target_test bits per
   byte before and after;
4. ``base``, ``mixing`` and the best selection method by final **target_valid** bpb
   (never target_test) repeated with the preset's extra seeds.

Everything is resumable: a finished run (``done.json`` in its workdir) is skipped, a
killed one resumes from its last checkpoint; rerun the same command. Runs live under
``--workdir`` (default ``/tmp/adaptive_data_benchmark_<preset>``); the tables and plots
go to ``--out`` (default ``experiments/results/benchmark_<preset>``): ``results.csv``,
``results.md``, ``flops.json`` and PNG curves per target (bits per byte against steps and
against cumulative training FLOPs, and the selected domain shares of each selection
method), rewritten after each target so an interrupted grid leaves the finished targets'
tables; ``--targets python,jargon`` restricts the grid (and the tables) to those tasks.

``train_flops``: XLA's cost analysis of the compiled train step of each phase (warm-up:
no scoring and no outer update; after it: scoring, selection and the outer update) times
the number of steps in that phase, plus, for ``cds`` and ``rho``, the FLOPs of training
their scoring models (the base run and its fine-tuning). Evaluation is not counted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import pathlib
import statistics
import sys
import time
from typing import Any

import benchlib  # noqa: F401  (puts the repository root on sys.path)
import jax
from absl import logging

from adaptive_data import config_args, diagnose, methods, plot, train
from adaptive_data import train_state as ts
from adaptive_data.models import transformer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGETS = ("python", "jargon", "russian")
# Methods trained from scratch on generic data (finetune is step 3 of every run).
GRID_METHODS = tuple(name for name in methods.METHODS if name != "finetune")
SELECTION_METHODS = tuple(name for name in GRID_METHODS if methods.METHODS[name].scorer != "none")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of one benchmark grid (every method gets the same model steps and b)."""

    size: str  # model size of configs/default.py
    targets: tuple[str, ...]
    steps: int
    batch_size: int
    downsampling: int
    selection_warmup: int
    eval_every: int
    eval_examples: int
    finetune_steps: int
    finetune_learning_rate: float
    finetune_eval_every: int
    extra_seeds: tuple[int, ...]
    diagnose_batches: int
    learning_rate: float = 1e-3


PRESETS = {
    "quick": Preset(
        size="tiny",
        targets=("python",),
        steps=8,
        batch_size=8,
        downsampling=4,
        selection_warmup=2,
        eval_every=4,
        eval_examples=32,
        finetune_steps=4,
        finetune_learning_rate=3e-4,
        finetune_eval_every=2,
        extra_seeds=(),
        diagnose_batches=2,
    ),
    "cpu": Preset(
        size="tiny",
        targets=TARGETS,
        steps=600,
        batch_size=16,
        downsampling=8,
        selection_warmup=50,
        eval_every=100,
        eval_examples=256,
        finetune_steps=100,
        finetune_learning_rate=3e-4,
        finetune_eval_every=20,
        extra_seeds=(1, 2),
        diagnose_batches=8,
    ),
    "gpu": Preset(
        size="small",
        targets=TARGETS,
        steps=5000,
        batch_size=64,
        downsampling=16,
        selection_warmup=200,
        eval_every=500,
        eval_examples=1024,
        finetune_steps=1000,
        finetune_learning_rate=3e-4,
        finetune_eval_every=100,
        extra_seeds=(1, 2),
        diagnose_batches=16,
    ),
}

CSV_COLUMNS = (
    "target",
    "method",
    "seed",
    "target_bpb",
    "target_bpb_finetuned",
    "generic_bpb",
    "target_valid_bpb",
    "target_bpb_half",
    "target_share_selected",
    "target_share_pool",
    "steps",
    "wall_s",
    "finetune_wall_s",
    "train_flops",
    "finetune_flops",
)


# ----------------------------------------------------------------------------- configs


def run_config(preset: Preset, target: str, method: str, seed: int, args) -> Any:
    config = config_args.load_config(
        REPO_ROOT / "configs" / "default.py", f"method={method},target={target},size={preset.size}"
    )
    overrides = {
        "seed": seed,
        "train.steps": preset.steps,
        "train.batch_size": preset.batch_size,
        "train.target_batch_size": preset.batch_size,
        "train.learning_rate": preset.learning_rate,
        "train.eval_every": preset.eval_every,
        "train.log_every": max(1, min(10, preset.eval_every)),
        "eval.max_examples": preset.eval_examples,
        "eval.batch_size": min(64, preset.eval_examples),
        "select.downsampling": preset.downsampling,
        "select.warmup_steps": preset.selection_warmup,
        # Every eval step is a checkpoint, all kept: the diagnose test reads an early one.
        "checkpoint.every": preset.eval_every,
        "checkpoint.keep": 1000,
        "data.tfds_data_dir": args.tfds_data_dir,
    }
    return config_args.override(config, overrides)


def finetune_config(preset: Preset, run: pathlib.Path, base_config, args) -> Any:
    config = config_args.load_config(
        REPO_ROOT / "configs" / "default.py",
        f"method=finetune,target={base_config.data.task},size={preset.size}",
    )
    return config_args.override(
        config,
        {
            "seed": base_config.seed,
            "finetune.init_from": str(run),
            "train.steps": preset.finetune_steps,
            "train.batch_size": preset.batch_size,
            "train.learning_rate": preset.finetune_learning_rate,
            "train.warmup_steps": max(1, preset.finetune_steps // 10),
            "train.eval_every": preset.finetune_eval_every,
            "train.log_every": preset.finetune_eval_every,
            "eval.max_examples": preset.eval_examples,
            "eval.batch_size": min(64, preset.eval_examples),
            "checkpoint.every": preset.finetune_steps,
            "checkpoint.keep": 1,
            "data.tfds_data_dir": args.tfds_data_dir,
        },
    )


# ----------------------------------------------------------------------------- FLOPs


def _abstract_batch(n: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
    i32, f32 = jax.numpy.int32, jax.numpy.float32
    return {
        "inputs": jax.ShapeDtypeStruct((n, length), i32),
        "targets": jax.ShapeDtypeStruct((n, length), i32),
        "mask": jax.ShapeDtypeStruct((n, length), f32),
        "num_bytes": jax.ShapeDtypeStruct((n,), i32),
        "domain": jax.ShapeDtypeStruct((n,), i32),
    }


def step_flops(config) -> dict[str, float]:
    """XLA FLOPs of one train step in each phase: ``warmup`` and ``active``."""
    model = transformer.from_config(config.model)
    tx = ts.make_optimizer(config.train)
    domains = ("generic_a", "generic_b", "target")
    method = methods.build(config, model=model, tx=tx, domains=domains, target_domain="target")
    init_key, method_key = jax.random.split(jax.random.key(0))

    def init_fn():
        params = transformer.init_params(model, init_key, config.model.max_length)
        return ts.init_state(params, tx, 0, method.init_state(method_key, params))

    state = jax.eval_shape(init_fn)
    batches = {
        s: _abstract_batch(n, config.model.max_length) for s, (_, n) in method.streams.items()
    }
    step = methods.jit_train_step(method)
    phases = {
        "warmup": {"active": False, "outer_update": False},
        "active": method.flags(max(method.selection_warmup_steps, 0)),
    }
    flops = {}
    for phase, flags in phases.items():
        flops[phase] = benchlib.xla_flops(step.lower(state, batches, **flags).compile())
    return flops


def run_flops(per_step: dict[str, float], steps: int, warmup: int) -> float:
    """Training FLOPs of ``steps`` model updates, ``warmup`` of them in the warm-up phase."""
    warm = min(steps, warmup)
    return per_step["warmup"] * warm + per_step["active"] * (steps - warm)


# ----------------------------------------------------------------------------- runs


class Grid:
    """Runs the benchmark's training runs in order, skipping finished ones; progress."""

    def __init__(self, root: pathlib.Path, total: int):
        self.root = root
        self.total = total
        self.done = 0
        self.start = time.time()
        self.run_seconds: list[float] = []

    def _progress(self, label: str, status: str) -> None:
        elapsed = time.time() - self.start
        mean = statistics.mean(self.run_seconds) if self.run_seconds else float("nan")
        left = (self.total - self.done) * mean if self.run_seconds else float("nan")
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "?"
        print(
            f"[{self.done}/{self.total}] {label}: {status} | elapsed "
            f"{time.strftime('%H:%M:%S', time.gmtime(elapsed))} | ETA {eta}",
            flush=True,
        )

    def run(self, label: str, config, workdir: pathlib.Path) -> dict[str, Any]:
        """Trains ``config`` in ``workdir`` unless done; returns its ``done.json``."""
        done_file = workdir / "done.json"
        if done_file.exists():
            self.done += 1
            self._progress(label, "done before, skipped")
            return json.loads(done_file.read_text())
        self._progress(label, "running")
        wall_file = workdir / "wall.json"
        earlier = json.loads(wall_file.read_text())["seconds"] if wall_file.exists() else 0.0
        t0 = time.time()
        result = train.train_and_evaluate(config, str(workdir))
        seconds = earlier + time.time() - t0
        summary = {"result": result, "wall_s": seconds}
        wall_file.write_text(json.dumps({"seconds": seconds}))
        done_file.write_text(json.dumps(summary, indent=2))
        self.done += 1
        self.run_seconds.append(time.time() - t0)
        self._progress(label, f"finished in {time.time() - t0:.0f} s")
        return summary


def _rows(workdir: pathlib.Path) -> list[dict[str, Any]]:
    return plot.read_metrics(workdir)


def _mean_after(rows, key: str, step: int) -> float:
    values = [r[key] for r in rows if key in r and r["step"] > step]
    return statistics.mean(values) if values else float("nan")


def _eval_at(rows, key: str, step: int) -> float:
    values = [r[key] for r in rows if key in r and r["step"] == step]
    return values[-1] if values else float("nan")


def finetuned_test_bpb(rows) -> float:
    """Target test bpb at the evaluation with the best target_valid bpb (early stopping)."""
    evals = [r for r in rows if "eval/target_valid_bpb" in r]
    return min(evals, key=lambda r: r["eval/target_valid_bpb"])["eval/target_bpb"]


def summarize(
    target, method, seed, preset, run_dir, ft_dir, run_done, ft_done, flops, extra_flops=0.0
) -> dict[str, Any]:
    rows, ft_rows = _rows(run_dir), _rows(ft_dir)
    final = [r for r in rows if "eval/target_bpb" in r][-1]
    steps = final["step"]
    return {
        "target": target,
        "method": method,
        "seed": seed,
        "target_bpb": final["eval/target_bpb"],
        "target_bpb_finetuned": finetuned_test_bpb(ft_rows),
        "generic_bpb": final["eval/generic_bpb"],
        "target_valid_bpb": final["eval/target_valid_bpb"],
        "target_bpb_half": _eval_at(rows, "eval/target_bpb", preset.steps // 2),
        "target_share_selected": _mean_after(rows, "select/target_share", preset.selection_warmup),
        "target_share_pool": _mean_after(rows, "select/pool_target_share", preset.selection_warmup),
        "steps": steps,
        "wall_s": run_done["wall_s"],
        "finetune_wall_s": ft_done["wall_s"],
        "train_flops": run_flops(flops[method], steps, preset.selection_warmup) + extra_flops,
        "finetune_flops": run_flops(flops["finetune"], preset.finetune_steps, 0),
    }


# ----------------------------------------------------------------------------- report


def _fmt(x, spec=".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(target, method) -> mean and spread (sample std over seeds) of the bpb columns."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["method"]), []).append(r)
    out = {}
    for key, group in groups.items():
        agg = {"seeds": len(group)}
        for col in (
            "target_bpb",
            "target_bpb_finetuned",
            "generic_bpb",
            "target_valid_bpb",
            "target_bpb_half",
            "target_share_selected",
            "target_share_pool",
            "wall_s",
            "train_flops",
        ):
            values = [g[col] for g in group if not math.isnan(g[col])]
            agg[col] = statistics.mean(values) if values else float("nan")
            agg[col + "_spread"] = statistics.stdev(values) if len(values) > 1 else float("nan")
        out[key] = agg
    return out


def noise_level(agg, target: str, col: str) -> float:
    """The largest seed spread of ``col`` on ``target``: differences below it are ties."""
    spreads = [
        a[col + "_spread"]
        for (t, _), a in agg.items()
        if t == target and not math.isnan(a[col + "_spread"])
    ]
    return max(spreads) if spreads else 0.0


def ranking(agg, target: str, col: str) -> str:
    """Methods by ``col`` (lower is better); '=' joins methods within the noise level."""
    items = sorted(
        ((a[col], m) for (t, m), a in agg.items() if t == target and not math.isnan(a[col]))
    )
    noise = noise_level(agg, target, col)
    parts = []
    for i, (value, method) in enumerate(items):
        sep = "" if i == 0 else (" = " if value - items[i - 1][0] < noise else " < ")
        parts.append(f"{sep}{method} ({value:.4f})")
    return "".join(parts)


def _with_spread(agg_row, col: str) -> str:
    spread = agg_row[col + "_spread"]
    return _fmt(agg_row[col]) + ("" if math.isnan(spread) else f" +- {spread:.4f}")


def _gain(value: float, reference: float) -> str:
    if math.isnan(value) or math.isnan(reference):
        return "-"
    return f"{100.0 * (reference - value) / reference:+.1f}%"


def markdown_report(preset_name: str, preset: Preset, rows, verdicts, command: str) -> str:
    agg = aggregate(rows)
    lines = [
        f"# Benchmark `{preset_name}`",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {benchlib.machine_info()['device_count']} x "
        f"{benchlib.machine_info()['device_kind']} ({jax.default_backend()}), "
        f"{benchlib.machine_info()['cpu_count']} CPUs; date "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        f"Model `{preset.size}`, {preset.steps} model steps of b = {preset.batch_size} "
        f"for every method, big batch B = {preset.downsampling} x b for the selection "
        f"methods (uniform for the first {preset.selection_warmup} steps), then "
        f"{preset.finetune_steps} fine-tuning steps on target_train at learning rate "
        f"{preset.finetune_learning_rate}, best checkpoint by target_valid. Bits per "
        "byte on target_test (lower is better); mean +- sample std over seeds where "
        "a method has several. Gains are relative reductions of target bpb "
        "(positive = better than the reference). Differences below a target's noise "
        "level (the largest seed spread on it) are ties (`=`).",
        "",
    ]
    for target in preset.targets:
        base = agg.get((target, "base"), {})
        mixing = agg.get((target, "mixing"), {})
        verdict = verdicts.get(target)
        lines += [f"## Target `{target}`", ""]
        if verdict:
            lines += [
                f"Diagnose (base run, step {verdict['checkpoint_step']}): selection "
                f"**{'is' if verdict['selection_expected_to_help'] else 'is not'}** "
                "expected to help — " + "; ".join(verdict["reasons"]),
                "",
            ]
        lines += [
            "| method | seeds | target bpb | vs base | vs mixing | fine-tuned | "
            "vs base+ft | vs mixing+ft | generic bpb | selected target share | "
            "pool share | train FLOPs | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method in GRID_METHODS:
            a = agg.get((target, method))
            if a is None:
                continue

            cells = [
                method,
                str(a["seeds"]),
                _with_spread(a, "target_bpb"),
                *(
                    _gain(a["target_bpb"], ref.get("target_bpb", math.nan))
                    for ref in (base, mixing)
                ),
                _with_spread(a, "target_bpb_finetuned"),
                *(
                    _gain(a["target_bpb_finetuned"], ref.get("target_bpb_finetuned", math.nan))
                    for ref in (base, mixing)
                ),
                _fmt(a["generic_bpb"]),
                _fmt(a["target_share_selected"], ".3f"),
                _fmt(a["target_share_pool"], ".3f"),
                f"{a['train_flops']:.3g}",
                f"{a['wall_s']:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"- Ranking at full budget ({preset.steps} steps), before fine-tuning: "
            + ranking(agg, target, "target_bpb"),
            f"- Ranking at half budget ({preset.steps // 2} steps), before fine-tuning: "
            + ranking(agg, target, "target_bpb_half"),
            "- Ranking after fine-tuning: " + ranking(agg, target, "target_bpb_finetuned"),
            "",
            f"![target bpb]({target}_target_bpb.png) "
            f"![target bpb against FLOPs]({target}_target_bpb_flops.png)",
            "",
        ]
    return "\n".join(lines) + "\n"


def write_plots(out: pathlib.Path, preset: Preset, root: pathlib.Path, flops, rows) -> None:
    # FLOPs spent before a run's first step: the scoring models of cds and rho.
    offsets = {
        (r["target"], r["method"]): r["train_flops"]
        - run_flops(flops[r["method"]], r["steps"], preset.selection_warmup)
        for r in rows
        if r["seed"] == 0
    }
    for target in preset.targets:
        runs = {}
        for method in GRID_METHODS:
            run = root / target / f"{method}_seed0"
            if (run / "metrics.jsonl").exists():
                runs[method] = _rows(run)
        plot.plot_metric(
            runs,
            "eval/target_bpb",
            out / f"{target}_target_bpb.png",
            title=f"{target}: target test bits per byte",
        )

        def flops_at(label, rows, target=target):
            offset = offsets.get((target, label), 0.0)
            return [
                offset + run_flops(flops[label], r["step"], preset.selection_warmup) for r in rows
            ]

        plot.plot_metric(
            runs,
            "eval/target_bpb",
            out / f"{target}_target_bpb_flops.png",
            x_values=flops_at,
            xlabel="cumulative training FLOPs",
            title=f"{target}: target bpb at equal compute",
        )
        for method in SELECTION_METHODS:
            if method in runs:
                plot.plot_domain_shares(
                    runs[method],
                    out / f"{target}_{method}_domain_shares.png",
                    title=f"{target} / {method}: selected domain shares",
                )


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
        default=",".join(GRID_METHODS),
        help="comma-separated subset of the methods (base is always run)",
    )
    parser.add_argument("--verbose", action="store_true", help="the driver's per-step logs")
    parser.add_argument(
        "--targets",
        default=None,
        help="comma-separated subset of the preset's target tasks (default: all)",
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    if args.targets:
        preset = dataclasses.replace(
            preset, targets=tuple(benchlib.parse_list(args.targets, preset.targets))
        )
    grid_methods = ["base"] + [
        m for m in benchlib.parse_list(args.methods, GRID_METHODS) if m != "base"
    ]
    root = pathlib.Path(args.workdir or f"/tmp/adaptive_data_benchmark_{args.preset}")
    out = pathlib.Path(
        args.out or REPO_ROOT / "experiments" / "results" / f"benchmark_{args.preset}"
    )
    out.mkdir(parents=True, exist_ok=True)
    logging.set_verbosity(logging.INFO if args.verbose else logging.WARNING)
    command = "python experiments/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)

    flops_file = out / "flops.json"
    flops = json.loads(flops_file.read_text()) if flops_file.exists() else {}
    for method in grid_methods + ["finetune"]:
        if method not in flops:
            config = run_config(preset, preset.targets[0], method, 0, args)
            # Compiling the step reads no reference parameters: any path will do.
            config = config_args.override(
                config, {"cds.generic_from": "-", "cds.target_from": "-", "rho.reference_from": "-"}
            )
            if method == "finetune":
                config = finetune_config(preset, root, config, args)
            flops[method] = step_flops(config)
            flops_file.write_text(json.dumps(flops, indent=2))

    per_target = len(grid_methods) * 2 + 3 * 2 * len(preset.extra_seeds)
    grid = Grid(root, per_target * len(preset.targets))
    rows: list[dict[str, Any]] = []
    verdicts = {}

    def train_and_finetune(target, method, seed, extra_flops=0.0, references=None):
        run_dir = root / target / f"{method}_seed{seed}"
        config = run_config(preset, target, method, seed, args)
        if references:
            config = config_args.override(config, references)
        run_done = grid.run(f"{target}/{method}/seed{seed}", config, run_dir)
        ft_dir = root / target / f"{method}_seed{seed}_finetuned"
        ft_done = grid.run(
            f"{target}/{method}/seed{seed} fine-tuning",
            finetune_config(preset, run_dir, config, args),
            ft_dir,
        )
        row = summarize(
            target, method, seed, preset, run_dir, ft_dir, run_done, ft_done, flops, extra_flops
        )
        rows.append(row)
        return row, run_dir, ft_dir

    def write_outputs(finished_targets: tuple[str, ...]) -> None:
        """Tables, plots and verdicts of the targets whose runs are all done."""
        shown = dataclasses.replace(preset, targets=finished_targets)
        with (out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        report = markdown_report(args.preset, shown, rows, verdicts, command)
        (out / "results.md").write_text(report)
        (out / "diagnose.json").write_text(json.dumps(verdicts, indent=2))
        write_plots(out, shown, root, flops, rows)

    for target_index, target in enumerate(preset.targets):
        base_row, base_dir, base_ft_dir = train_and_finetune(target, "base", 0)
        verdict_file = base_dir / "diagnose.json"
        if not verdict_file.exists():
            diagnose.diagnose(
                run_config(preset, target, "base", 0, args),
                str(base_dir),
                num_batches=preset.diagnose_batches,
            )
        verdicts[target] = json.loads(verdict_file.read_text())
        # cds and rho score with the seed-0 base run and its fine-tuned copy, and are
        # charged their training FLOPs.
        reference_flops = base_row["train_flops"] + base_row["finetune_flops"]
        references = {
            "cds": {"cds.generic_from": str(base_dir), "cds.target_from": str(base_ft_dir)},
            "rho": {"rho.reference_from": str(base_ft_dir)},
        }

        def run_method(
            method, seed, target=target, references=references, reference_flops=reference_flops
        ):
            return train_and_finetune(
                target,
                method,
                seed,
                references=references.get(method),
                extra_flops=reference_flops if method in references else 0.0,
            )

        for method in grid_methods[1:]:
            run_method(method, 0)
        selection = [r for r in rows if r["target"] == target and r["method"] in SELECTION_METHODS]
        if preset.extra_seeds and selection:
            best = min(selection, key=lambda r: r["target_valid_bpb"])["method"]
            for seed in preset.extra_seeds:
                for method in ("base", "mixing", best):
                    if method in grid_methods:
                        run_method(method, seed)
        # After every target, so an interrupted grid leaves the tables of those finished.
        write_outputs(preset.targets[: target_index + 1])

    print((out / "results.md").read_text())
    print(f"wrote {out}/results.csv, results.md and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
