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
   reference model is the fine-tuned copy of an *independent* base run (seed
   :func:`reference_seed`: another parameter init and generic data order than the run it
   scores), so the reference never saw the batches it scores; both charge the FLOPs of
   their reference runs.
3. **Compute matching.** ``base`` and ``mixing`` are also trained long enough to reach the
   training FLOPs of the most expensive method (``<baseline>_long<N>``, every checkpoint
   kept); for each method, the checkpoint whose FLOPs are nearest its own
   (:func:`flop_matched_step`) is evaluated and fine-tuned with the same protocol.
   Intermediate checkpoints of a long run are taken mid-schedule (the learning rate not
   yet decayed), which handicaps the matched baseline before fine-tuning, not after it.
4. **Statistics.** Every comparison is a paired difference over seeds with a 95% Student
   t interval (``adaptive_data.stats``): "better", "worse" or "not distinguishable".

Everything is resumable: a finished run (``done.json`` in its workdir) is skipped, a
killed one resumes from its last checkpoint; rerun the same command. Progress lines give
runs done / total and an ETA. Runs live under ``--workdir`` (default
``/tmp/adaptive_data_benchmark_<preset>``); tables and plots go to ``--out`` (default
``experiments/results/benchmark_<preset>``), rewritten after each finished target.

``train_flops``: XLA's cost analysis of the compiled train step of each phase (warm-up:
no scoring and no outer update; after it: scoring, selection and the outer update) times
the number of steps in that phase, plus, for ``cds`` and ``rho``, the FLOPs of training
their reference models (a base run and its fine-tuning). Evaluation is not counted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import pathlib
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import benchlib  # noqa: F401  (puts the repository root on sys.path)
import jax
from absl import logging

from adaptive_data import config_args, diagnose, methods, plot, run_setup, stats, train
from adaptive_data import metrics as metrics_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGETS = ("python", "jargon", "russian")
# Methods trained from scratch on generic data (finetune is step 3 of every run).
GRID_METHODS = tuple(name for name in methods.names() if name != "finetune")


def grid_methods() -> tuple[str, ...]:
    """Registered methods trained from scratch, those of ``--extra_modules`` included."""
    return tuple(name for name in methods.names() if name != "finetune")


SELECTION_METHODS = methods.names(selecting=True)
# The compute-matched references.
BASELINES = ("base", "mixing")
VALID_KEY = "eval/target_valid_bpb"
TEST_KEY = "eval/target_bpb"
# A validation curve that ends this much (relative) above its minimum has turned upward;
# one that fell less than this over its last quarter has flattened.
CURVE_TOLERANCE = 0.002
# Selected and pool target-domain shares, averaged after the selection warm-up.
SHARE_KEYS = ("select/target_share", "select/pool_target_share")


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
    finetune_learning_rates: tuple[float, ...]  # chosen on base seed 0's target_valid
    finetune_eval_every: int
    seeds: tuple[int, ...]  # every method runs every seed (paired comparisons)
    diagnose_batches: int
    methods: tuple[str, ...] = GRID_METHODS
    learning_rate: float = 1e-3
    max_target_train: int | None = None  # None: the config's default
    # Pool target share per target task (tasks not named: the task's default).
    pool_target_shares: Mapping[str, float] = dataclasses.field(default_factory=dict)
    compute_matched: bool = True

    def __post_init__(self):
        # Runs keep a checkpoint at every evaluation; the diagnose test reads the latest
        # one within its budget, so there must be one.
        if self.eval_every > diagnose.BUDGET_FRACTION * self.steps:
            raise ValueError(
                f"eval_every={self.eval_every} leaves no checkpoint within the diagnose "
                f"budget ({diagnose.BUDGET_FRACTION:.0%} of steps={self.steps}); use "
                f"eval_every <= {int(diagnose.BUDGET_FRACTION * self.steps)}."
            )


SCARCE_METHODS = (
    "base",
    "mixing",
    "align_filter",
    "anograd",
    "soba",
    "dds",
    "classifier",
    "cds",
    "dsir",
    "rho",
)

PRESETS = {
    "quick": Preset(
        size="tiny",
        targets=("python",),
        steps=8,
        batch_size=8,
        downsampling=4,
        selection_warmup=2,
        eval_every=1,  # a checkpoint within the diagnose budget (15% of 8 steps)
        eval_examples=32,
        finetune_steps=4,
        finetune_learning_rates=(3e-4, 1e-3),
        finetune_eval_every=2,
        seeds=(0,),
        diagnose_batches=2,
        max_target_train=8,
        pool_target_shares={"python": 0.10},
    ),
    "cpu": Preset(
        size="tiny",
        targets=TARGETS,
        steps=600,
        batch_size=16,
        downsampling=8,
        selection_warmup=50,
        # 50: a checkpoint within the diagnose budget (the committed results ran at 100,
        # before the redesigned test).
        eval_every=50,
        eval_examples=256,
        finetune_steps=100,
        finetune_learning_rates=(3e-4,),
        finetune_eval_every=20,
        seeds=(0, 1, 2),
        diagnose_batches=8,
        compute_matched=False,
    ),
    "scarce": Preset(
        size="tiny",
        # Each pool document is one example, so what a selector can reach is k x the target's
        # share of pool DOCUMENTS: russian 14%, computing 8%, manpages 5% at these byte
        # shares, i.e. 56%, 33%, 20% of the selected b at k = 4, against mixing's 10%
        # target weight. (python at its largest byte share, 0.10, is 2.5% of documents:
        # 10% at k = 4, no more than mixing; jargon's 0.025 is 1.5%.)
        targets=("russian", "computing", "manpages"),
        steps=600,
        batch_size=16,
        downsampling=4,
        selection_warmup=50,
        eval_every=50,
        eval_examples=128,
        finetune_steps=200,
        finetune_learning_rates=(1e-4, 3e-4, 1e-3),
        finetune_eval_every=10,
        seeds=(0, 1, 2),
        diagnose_batches=8,
        methods=SCARCE_METHODS,
        max_target_train=16,
        pool_target_shares={"russian": 0.06, "computing": 0.10, "manpages": 0.10},
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
        finetune_learning_rates=(1e-4, 3e-4, 1e-3),
        finetune_eval_every=100,
        seeds=(0, 1, 2),
        diagnose_batches=16,
    ),
}

CSV_COLUMNS = (
    "target",
    "method",
    "seed",
    "target_bpb",
    "target_valid_bpb",
    "target_valid_best_step",
    "generic_bpb",
    "target_bpb_finetuned",
    "finetune_best_step",
    "finetune_last_step",
    "finetune_learning_rate",
    "target_bpb_finetuned_from_best",
    "target_share_selected",
    "target_share_pool",
    "steps",
    "train_flops",
    "flops_vs_base",
    "base_matched_step",
    "base_matched_target_bpb",
    "base_matched_target_bpb_finetuned",
    "mixing_matched_step",
    "mixing_matched_target_bpb",
    "mixing_matched_target_bpb_finetuned",
    "wall_s",
    "finetune_wall_s",
    "finetune_flops",
)


# ----------------------------------------------------------------------------- configs


def _data_overrides(preset: Preset, target: str, args) -> dict[str, Any]:
    overrides: dict[str, Any] = {"data.tfds_data_dir": args.tfds_data_dir}
    if preset.max_target_train is not None:
        overrides["data.max_target_train"] = preset.max_target_train
    if target in preset.pool_target_shares:
        overrides["data.pool_target_share"] = preset.pool_target_shares[target]
    return overrides


def run_config(preset: Preset, target: str, method: str, seed: int, args, steps=None) -> Any:
    """The config of one training run from scratch (``steps``: default the preset's)."""
    steps = preset.steps if steps is None else steps
    extra_modules = getattr(args, "extra_modules", "")
    config = config_args.load_config(
        REPO_ROOT / "configs" / "default.py",
        f"method={method},target={target},size={preset.size}"
        + (f",extra_modules={extra_modules}" if extra_modules else ""),
    )
    overrides = {
        "seed": seed,
        "train.steps": steps,
        "train.batch_size": preset.batch_size,
        "train.target_batch_size": preset.batch_size,
        "train.learning_rate": preset.learning_rate,
        "train.eval_every": preset.eval_every,
        "train.log_every": max(1, min(10, preset.eval_every)),
        "eval.max_examples": preset.eval_examples,
        "eval.batch_size": min(64, preset.eval_examples),
        "select.downsampling": preset.downsampling,
        "select.warmup_steps": preset.selection_warmup,
        # A checkpoint at every evaluation, all kept: the diagnose test, mixing's best
        # checkpoint and the compute-matched checkpoints of the long runs read them.
        "checkpoint.every": preset.eval_every,
        "checkpoint.keep": steps // preset.eval_every + 1,
        **_data_overrides(preset, target, args),
    }
    return config_args.override(config, overrides)


def finetune_config(
    preset: Preset, init_from: pathlib.Path, base_config, learning_rate: float, args
) -> Any:
    """Fine-tuning on target_train from the latest checkpoint of workdir ``init_from``."""
    config = config_args.load_config(
        REPO_ROOT / "configs" / "default.py",
        f"method=finetune,target={base_config.data.task},size={preset.size}",
    )
    return config_args.override(
        config,
        {
            "seed": base_config.seed,
            "finetune.init_from": str(init_from),
            "train.steps": preset.finetune_steps,
            "train.batch_size": preset.batch_size,
            "train.learning_rate": learning_rate,
            "train.warmup_steps": max(1, preset.finetune_steps // 10),
            "train.eval_every": preset.finetune_eval_every,
            "train.log_every": preset.finetune_eval_every,
            "eval.max_examples": preset.eval_examples,
            "eval.batch_size": min(64, preset.eval_examples),
            "checkpoint.every": preset.finetune_steps,
            "checkpoint.keep": 1,
            **_data_overrides(preset, base_config.data.task, args),
        },
    )


def reference_seed(seed: int, seeds: Sequence[int]) -> int:
    """Seed of the base run whose fine-tuned copy is ``rho``'s reference model for ``seed``.

    The next seed of the grid (cyclically), so the reference has its own parameter init
    and generic data order and never trained on the batches that the scored run draws in
    the same order; with a single seed, ``seed + 1`` (an extra base run).
    """
    seeds = list(seeds)
    if len(seeds) < 2:
        return seed + 1
    return seeds[(seeds.index(seed) + 1) % len(seeds)]


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
    setup = run_setup.build(
        config, domains=("generic_a", "generic_b", "target"), target_domain="target"
    )
    method = setup.method
    batches = {
        s: _abstract_batch(n, config.model.max_length) for s, (_, n) in method.streams.items()
    }
    step = methods.jit_train_step(method)
    phases = {
        "warmup": {"active": False, "outer_update": False},
        "active": method.flags(max(method.selection_warmup_steps, 0)),
    }
    state = setup.abstract_state()
    return {
        phase: benchlib.xla_flops(step.lower(state, batches, **flags).compile())
        for phase, flags in phases.items()
    }


def run_flops(per_step: Mapping[str, float], steps: int, warmup: int) -> float:
    """Training FLOPs of ``steps`` model updates, ``warmup`` of them in the warm-up phase."""
    warm = min(steps, warmup)
    return per_step["warmup"] * warm + per_step["active"] * (steps - warm)


def method_train_flops(preset: Preset, flops: Mapping[str, Mapping[str, float]], method) -> float:
    """Training FLOPs of ``method`` at the preset's steps, its reference runs included."""
    total = run_flops(flops[method], preset.steps, preset.selection_warmup)
    needs = methods.METHODS[method].needs_runs.values()
    base_runs = {need.independent_seed for need in needs}  # one base run per seed used
    total += len(base_runs) * run_flops(flops["base"], preset.steps, preset.selection_warmup)
    total += sum(need.fine_tuned for need in needs) * run_flops(
        flops["finetune"], preset.finetune_steps, 0
    )
    return total


def flop_matched_step(flops: float, per_step: Mapping[str, float], warmup: int, every: int) -> int:
    """The positive multiple of ``every`` (a checkpoint step) at which a run with these
    per-step FLOPs has spent the training FLOPs nearest ``flops`` (the earlier on a tie)."""
    step = every
    while run_flops(per_step, step + every, warmup) < flops:
        step += every
    return min((step, step + every), key=lambda s: (abs(run_flops(per_step, s, warmup) - flops), s))


def matched_steps(preset: Preset, flops, grid_methods: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{baseline: {method: step}}``: each baseline's checkpoint matching each method's
    training FLOPs (:func:`flop_matched_step` on the baseline's long run)."""
    return {
        baseline: {
            method: flop_matched_step(
                method_train_flops(preset, flops, method),
                flops[baseline],
                preset.selection_warmup,
                preset.eval_every,
            )
            for method in grid_methods
        }
        for baseline in BASELINES
    }


# ----------------------------------------------------------------------------- curves


def _evals(rows, key: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if isinstance(r.get(key), (int, float))]


def best_eval(rows, key: str = VALID_KEY) -> Mapping[str, Any]:
    """The evaluation row with the lowest ``key`` (the earliest on a tie)."""
    evals = _evals(rows, key)
    if not evals:
        raise ValueError(f"no evaluation of {key!r} in these metrics rows; is the run finished?")
    return min(evals, key=lambda r: (r[key], r["step"]))


def finetune_outcome(rows) -> dict[str, float]:
    """Early-stopped fine-tuning: target test bpb at the best target_valid evaluation, that
    step, and the last evaluated step (best == last: the budget may have cut it short)."""
    best = best_eval(rows)
    return {
        "target_bpb_finetuned": best[TEST_KEY],
        "finetune_best_step": best["step"],
        "finetune_last_step": _evals(rows, VALID_KEY)[-1]["step"],
    }


def finetuned_test_bpb(rows) -> float:
    """Target test bpb at the evaluation with the best target_valid bpb (early stopping)."""
    return finetune_outcome(rows)["target_bpb_finetuned"]


def curve_shape(rows, key: str = VALID_KEY, tolerance: float = CURVE_TOLERANCE) -> str:
    """ "turned upward" (ends more than ``tolerance`` above its minimum), "flattened" (fell
    less than ``tolerance`` over the last quarter of the run) or "still falling"."""
    evals = _evals(rows, key)
    best, last = best_eval(rows, key), evals[-1]
    if last[key] > best[key] * (1.0 + tolerance):
        return "turned upward"
    last_quarter = [r for r in evals if r["step"] >= 0.75 * last["step"]]
    if last_quarter[0][key] - last[key] < tolerance * last_quarter[0][key]:
        return "flattened"
    return "still falling"


def _eval_at(rows, key: str, step: int) -> float:
    values = [r[key] for r in rows if key in r and r["step"] == step]
    return values[-1] if values else math.nan


def checkpoint_source(run_dir: pathlib.Path, step: int, dest: pathlib.Path) -> pathlib.Path:
    """A workdir holding only checkpoint ``step`` of ``run_dir`` (fine-tuning starts from
    the latest checkpoint of a workdir); copied once, atomically."""
    if not dest.exists():
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(run_dir / "checkpoints" / str(step), partial / "checkpoints" / str(step))
        partial.rename(dest)
    return dest


# ----------------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run of the grid. ``workdir`` and ``config`` are called when the job
    runs (a fine-tuning's learning rate is chosen by earlier jobs); ``prepare`` makes its
    starting point (a copied checkpoint)."""

    label: str
    method: str  # whose step it runs ("finetune" for fine-tunings)
    steps: int
    workdir: Callable[[], pathlib.Path]
    config: Callable[[], Any]
    prepare: Callable[[], Any] | None = None


class Grid:
    """Runs jobs in order, skipping finished ones; prints runs done / total and an ETA
    (remaining jobs' estimated seconds: their steps at the seconds per step measured so
    far for the same method, else at the mean over methods)."""

    def __init__(self, jobs: Sequence[Job]):
        self.total = len(jobs)
        self.pending_steps: dict[str, int] = {}
        for job in jobs:
            self.pending_steps[job.method] = self.pending_steps.get(job.method, 0) + job.steps
        self.done = 0
        self.start = time.time()
        self.seconds_per_step: dict[str, float] = {}

    def _eta(self) -> str:
        if not self.seconds_per_step:
            return "?"
        fallback = statistics.mean(self.seconds_per_step.values())
        left = sum(
            steps * self.seconds_per_step.get(method, fallback)
            for method, steps in self.pending_steps.items()
        )
        return time.strftime("%H:%M:%S", time.gmtime(left))

    def _progress(self, label: str, status: str) -> None:
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.start))
        print(
            f"[{self.done}/{self.total}] {label}: {status} | elapsed {elapsed} | ETA {self._eta()}",
            flush=True,
        )

    def run(self, job: Job) -> dict[str, Any]:
        """Trains ``job`` in its workdir unless done; returns its ``done.json``."""
        workdir = job.workdir()
        done_file = workdir / "done.json"
        self.pending_steps[job.method] -= job.steps
        if done_file.exists():
            self.done += 1
            self._progress(job.label, "done before, skipped")
            return json.loads(done_file.read_text())
        self._progress(job.label, "running")
        if job.prepare is not None:
            job.prepare()
        config = job.config()
        wall_file = workdir / "wall.json"
        earlier = json.loads(wall_file.read_text())["seconds"] if wall_file.exists() else 0.0
        t0 = time.time()
        result = train.train_and_evaluate(config, str(workdir))
        seconds = time.time() - t0
        summary = {"result": result, "wall_s": earlier + seconds}
        wall_file.write_text(json.dumps({"seconds": earlier + seconds}))
        done_file.write_text(json.dumps(summary, indent=2))
        self.done += 1
        self.seconds_per_step[job.method] = seconds / max(job.steps, 1)
        self._progress(job.label, f"finished in {seconds:.0f} s")
        return summary


def _rows(workdir: pathlib.Path) -> list[dict[str, Any]]:
    return metrics_lib.read_metrics(workdir)


def _done(workdir: pathlib.Path) -> dict[str, Any]:
    return json.loads((workdir / "done.json").read_text())


class Benchmark:
    """The jobs of one preset's grid (per target) and the CSV rows made from their runs."""

    def __init__(self, preset: Preset, args, root: pathlib.Path, flops, grid_methods):
        self.preset, self.args, self.root, self.flops = preset, args, root, flops
        self.grid_methods = tuple(grid_methods)
        self.matched = matched_steps(preset, flops, grid_methods) if preset.compute_matched else {}

    # ------------------------------------------------------------------ workdirs
    def run_dir(self, target: str, method: str, seed: int) -> pathlib.Path:
        return self.root / target / f"{method}_seed{seed}"

    def long_steps(self, baseline: str) -> int:
        return max(self.needed_matched_steps(baseline))

    def needed_matched_steps(self, baseline: str) -> list[int]:
        """The baseline's checkpoints matched to another method's FLOPs."""
        return sorted({s for m, s in self.matched[baseline].items() if m != baseline})

    def long_dir(self, target: str, baseline: str, seed: int) -> pathlib.Path:
        return self.root / target / f"{baseline}_long{self.long_steps(baseline)}_seed{seed}"

    @staticmethod
    def at_dir(run_dir: pathlib.Path, label: str) -> pathlib.Path:
        """The workdir holding one copied checkpoint of ``run_dir`` (``at<step>``, ``at_best``)."""
        return run_dir.with_name(f"{run_dir.name}_{label}")

    @staticmethod
    def ft_dir(source: pathlib.Path, learning_rate: float) -> pathlib.Path:
        return source.with_name(f"{source.name}_ft_lr{learning_rate:g}")

    def finetune_lr(self, target: str) -> float:
        """The fine-tuning rate with the best target_valid of base seed 0 (cached)."""
        record = self.finetune_lr_record(target)
        return record["chosen"]

    def finetune_lr_record(self, target: str) -> dict[str, Any]:
        """``{"grid": {rate: best target_valid bpb}, "chosen": rate}`` of base seed 0."""
        path = self.root / target / "finetune_lr.json"
        if path.exists():
            return json.loads(path.read_text())
        base = self.run_dir(target, "base", self.preset.seeds[0])
        grid = {
            f"{lr:g}": best_eval(_rows(self.ft_dir(base, lr)))[VALID_KEY]
            for lr in self.preset.finetune_learning_rates
        }
        chosen = min(self.preset.finetune_learning_rates, key=lambda lr: grid[f"{lr:g}"])
        record = {"grid": grid, "chosen": chosen}
        path.write_text(json.dumps(record, indent=2))
        return record

    # ------------------------------------------------------------------ configs
    def config(self, target: str, method: str, seed: int, steps: int | None = None) -> Any:
        config = run_config(self.preset, target, method, seed, self.args, steps)
        if methods.METHODS[method].needs_runs:
            config = config_args.override(config, self.references(target, method, seed))
        return config

    def references(self, target: str, method: str, seed: int) -> dict[str, str]:
        """The workdirs of the runs ``method`` seed ``seed`` reads, as its ``needs_runs``
        declare them: a base run of the same seed or of ``reference_seed`` (independent),
        itself or its fine-tuned copy (see the module doc)."""
        out = {}
        for key, need in methods.METHODS[method].needs_runs.items():
            base_seed = reference_seed(seed, self.preset.seeds) if need.independent_seed else seed
            base = self.run_dir(target, "base", base_seed)
            out[key] = str(self.ft_dir(base, self.finetune_lr(target)) if need.fine_tuned else base)
        return out

    # ------------------------------------------------------------------ jobs
    def jobs(self, target: str) -> list[Job]:
        preset, seeds = self.preset, self.preset.seeds
        jobs: list[Job] = []

        def add_run(method, seed, steps=None, workdir=None):
            workdir = workdir or self.run_dir(target, method, seed)
            jobs.append(
                Job(
                    f"{target}/{workdir.name}",
                    method,
                    steps or preset.steps,
                    lambda: workdir,
                    lambda: self.config(target, method, seed, steps),
                )
            )
            return workdir

        def add_finetune(source, seed, learning_rate=None, prepare=None):
            def rate():
                return self.finetune_lr(target) if learning_rate is None else learning_rate

            jobs.append(
                Job(
                    f"{target}/{source.name} fine-tuning",
                    "finetune",
                    preset.finetune_steps,
                    lambda: self.ft_dir(source, rate()),
                    lambda: finetune_config(
                        preset, source, self.config(target, "base", seed), rate(), self.args
                    ),
                    prepare,
                )
            )

        # 1. base seed 0 and the fine-tuning rate grid on it.
        base0 = add_run("base", seeds[0])
        for lr in preset.finetune_learning_rates:
            add_finetune(base0, seeds[0], lr)
        # 2. the other base seeds, rho's independent reference runs, every method.
        extra = []
        if any(
            need.independent_seed
            for method in self.grid_methods
            for need in methods.METHODS[method].needs_runs.values()
        ):
            extra = sorted({reference_seed(s, seeds) for s in seeds} - set(seeds))
        for seed in [*seeds[1:], *extra]:
            add_finetune(add_run("base", seed), seed)
        for method in self.grid_methods:
            if method == "base":
                continue
            for seed in seeds:
                run = add_run(method, seed)
                add_finetune(run, seed)
                if method == "mixing":  # also from its best checkpoint by target_valid
                    add_finetune(
                        self.at_dir(run, "at_best"),
                        seed,
                        prepare=lambda run=run: checkpoint_source(
                            run, best_eval(_rows(run))["step"], self.at_dir(run, "at_best")
                        ),
                    )
        # 3. the compute-matched baselines: long runs, fine-tuned from matched checkpoints.
        for baseline in BASELINES if preset.compute_matched else ():
            if baseline not in self.grid_methods:
                continue
            for seed in seeds:
                run = add_run(
                    baseline, seed, self.long_steps(baseline), self.long_dir(target, baseline, seed)
                )
                for step in self.needed_matched_steps(baseline):
                    add_finetune(
                        self.at_dir(run, f"at{step}"),
                        seed,
                        prepare=lambda run=run, step=step: checkpoint_source(
                            run, step, self.at_dir(run, f"at{step}")
                        ),
                    )
        return jobs

    # ------------------------------------------------------------------ rows
    def summarize(self, target: str, method: str, seed: int) -> dict[str, Any]:
        """The CSV row of one (target, method, seed) from its finished runs."""
        preset, lr = self.preset, self.finetune_lr(target)
        run = self.run_dir(target, method, seed)
        rows, ft_dir = _rows(run), self.ft_dir(run, lr)
        final = _evals(rows, TEST_KEY)[-1]
        train_flops = method_train_flops(preset, self.flops, method)
        row = {
            "target": target,
            "method": method,
            "seed": seed,
            "target_bpb": final[TEST_KEY],
            "target_valid_bpb": final[VALID_KEY],
            "target_valid_best_step": best_eval(rows)["step"],
            "generic_bpb": final["eval/generic_bpb"],
            **finetune_outcome(_rows(ft_dir)),
            "finetune_learning_rate": lr,
            **{
                column: math.nan if value is None else value
                for column, value in zip(
                    ("target_share_selected", "target_share_pool"),
                    metrics_lib.mean_after(rows, SHARE_KEYS, preset.selection_warmup).values(),
                )
            },
            "steps": final["step"],
            "train_flops": train_flops,
            "flops_vs_base": train_flops / method_train_flops(preset, self.flops, "base"),
            "wall_s": _done(run)["wall_s"],
            "finetune_wall_s": _done(ft_dir)["wall_s"],
            "finetune_flops": run_flops(self.flops["finetune"], preset.finetune_steps, 0),
        }
        if method == "mixing":
            best_ft = self.ft_dir(self.at_dir(run, "at_best"), lr)
            row["target_bpb_finetuned_from_best"] = finetune_outcome(_rows(best_ft))[
                "target_bpb_finetuned"
            ]
        for baseline in BASELINES if self.matched else ():
            if baseline == method or baseline not in self.grid_methods:
                continue
            step = self.matched[baseline][method]
            long_run = self.long_dir(target, baseline, seed)
            matched_ft = self.ft_dir(self.at_dir(long_run, f"at{step}"), lr)
            row[f"{baseline}_matched_step"] = step
            row[f"{baseline}_matched_target_bpb"] = _eval_at(_rows(long_run), TEST_KEY, step)
            row[f"{baseline}_matched_target_bpb_finetuned"] = finetune_outcome(_rows(matched_ft))[
                "target_bpb_finetuned"
            ]
        return row

    def target_rows(self, target: str) -> list[dict[str, Any]]:
        return [
            self.summarize(target, method, seed)
            for method in self.grid_methods
            for seed in self.preset.seeds
        ]

    def mixing_runs(self, target: str, seed: int) -> dict[str, pathlib.Path]:
        """Mixing's run of ``seed`` and, when compute-matched, its long run: the workdirs
        whose target_valid curves say whether mixing has used up the target sample."""
        runs = {"": self.run_dir(target, "mixing", seed)}
        if self.matched:
            runs["long"] = self.long_dir(target, "mixing", seed)
        return runs

    def curves(self, target: str) -> dict[str, Any]:
        """What the report says about the target beyond the CSV: the fine-tuning rate
        grid, and the shape of mixing's target_valid curve per seed (``"0"``) and, when
        compute-matched, of its long run (``"0 long"``)."""
        extras: dict[str, Any] = {"finetune_lr": self.finetune_lr_record(target)}
        if "mixing" in self.grid_methods:
            extras["mixing_target_valid"] = {}
            for seed in self.preset.seeds:
                for kind, run in self.mixing_runs(target, seed).items():
                    rows = _rows(run)
                    extras["mixing_target_valid"][f"{seed} {kind}".strip()] = {
                        "shape": curve_shape(rows),
                        "best_step": best_eval(rows)["step"],
                        "last_step": _evals(rows, VALID_KEY)[-1]["step"],
                        "best_bpb": best_eval(rows)[VALID_KEY],
                        "last_bpb": _evals(rows, VALID_KEY)[-1][VALID_KEY],
                    }
        return extras


# ----------------------------------------------------------------------------- report


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A table column: ``column`` of a method's seeds against ``reference_column`` of the
    same seeds of ``baseline`` (or, when ``matched``, of the method's own rows, where the
    FLOP-matched baseline's values are stored)."""

    header: str
    column: str
    baseline: str
    reference_column: str
    matched: bool = False


BEFORE_FINETUNING = (
    Comparison("vs base, = steps", "target_bpb", "base", "target_bpb"),
    Comparison("vs mixing, = steps", "target_bpb", "mixing", "target_bpb"),
    Comparison("vs base, = FLOPs", "target_bpb", "base", "base_matched_target_bpb", True),
    Comparison("vs mixing, = FLOPs", "target_bpb", "mixing", "mixing_matched_target_bpb", True),
)
AFTER_FINETUNING = (
    Comparison("vs base+ft, = steps", "target_bpb_finetuned", "base", "target_bpb_finetuned"),
    Comparison("vs mixing+ft, = steps", "target_bpb_finetuned", "mixing", "target_bpb_finetuned"),
    Comparison(
        "vs mixing early-stopped+ft",
        "target_bpb_finetuned",
        "mixing",
        "target_bpb_finetuned_from_best",
    ),
    Comparison(
        "vs base+ft, = FLOPs",
        "target_bpb_finetuned",
        "base",
        "base_matched_target_bpb_finetuned",
        True,
    ),
    Comparison(
        "vs mixing+ft, = FLOPs",
        "target_bpb_finetuned",
        "mixing",
        "mixing_matched_target_bpb_finetuned",
        True,
    ),
)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _by_seed(rows, method: str, column: str) -> dict[int, float]:
    return {
        int(r["seed"]): _number(r.get(column))
        for r in rows
        if r["method"] == method and math.isfinite(_number(r.get(column)))
    }


def paired_cell(values: Mapping[int, float], reference: Mapping[int, float]) -> tuple[str, str]:
    """``(cell, verdict)`` for a method's per-seed values against a reference's.

    The cell is the mean relative difference ``(a - b) / b`` (negative: lower bpb, better),
    then the mean paired difference in bpb with its 95% t interval and the verdict of
    ``adaptive_data.stats.compare``; one paired seed gives no interval (verdict "").
    """
    seeds = sorted(set(values) & set(reference))
    if not seeds:
        return "-", ""
    a, b = [values[s] for s in seeds], [reference[s] for s in seeds]
    relative = 100.0 * stats.relative_paired_difference(a, b).mean
    diff = stats.paired_difference(a, b)
    if diff.n == 1:
        return f"{relative:+.1f}% (1 seed, no interval)", ""
    verdict = stats.compare(a, b)
    return (
        f"{relative:+.1f}%: {diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] {verdict}",
        verdict,
    )


def comparison(rows, method: str, spec: Comparison) -> tuple[str, str]:
    """The cell of ``method`` in column ``spec`` (``-`` where it compares a baseline
    with itself)."""
    if method == spec.baseline and (spec.matched or spec.column == spec.reference_column):
        return "-", ""
    owner = method if spec.matched else spec.baseline
    return paired_cell(
        _by_seed(rows, method, spec.column), _by_seed(rows, owner, spec.reference_column)
    )


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f}"


def _present(rows, spec: Comparison) -> bool:
    return any(math.isfinite(_number(r.get(spec.reference_column))) for r in rows)


def cut_short(rows) -> list[str]:
    """``"method seed s"`` of the fine-tunings whose best step is their last one."""
    return [
        f"{r['method']} seed {int(r['seed'])}"
        for r in rows
        if math.isfinite(_number(r.get("finetune_best_step")))
        and _number(r["finetune_best_step"]) >= _number(r["finetune_last_step"])
    ]


def target_report(target: str, rows, method_order: Sequence[str], extras) -> list[str]:
    """The markdown section of one target: notes, the two tables, verdict lists."""
    methods_here = [m for m in method_order if any(r["method"] == m for r in rows)]
    lines = [f"## Target `{target}`", ""]
    verdict = extras.get("diagnose")
    if verdict:
        lines += [
            f"Diagnose (base run, step {verdict['checkpoint_step']}): selection "
            f"**{'is' if verdict['selection_expected_to_help'] else 'is not'}** "
            "expected to help — " + "; ".join(verdict["reasons"]),
            "",
        ]
    lr = extras.get("finetune_lr")
    if lr:
        grid = ", ".join(f"{k}: {v:.4f}" for k, v in lr["grid"].items())
        lines += [
            f"Fine-tuning learning rate: {lr['chosen']:g}, the best of base seed 0's best "
            f"target_valid bpb over the grid ({grid}).",
            "",
        ]
    curve = extras.get("mixing_target_valid")
    if curve:
        parts = [
            f"seed {s}: {c['shape']} (best at step {c['best_step']} of {c['last_step']}"
            + (
                f", {c['last_bpb'] - c['best_bpb']:+.4f} bpb at the end"
                if "best_bpb" in c and c["best_step"] != c["last_step"]
                else ""
            )
            + ")"
            for s, c in curve.items()
        ]
        lines += [f"Mixing's target_valid curve: {'; '.join(parts)}.", ""]
    before = [c for c in BEFORE_FINETUNING if _present(rows, c)]
    after = [c for c in AFTER_FINETUNING if _present(rows, c)]
    has_matched = any(c.matched for c in before)
    header = ["method", "seeds", "train FLOPs (x base)", "target bpb"]
    header += ["matched steps (base / mixing)"] if has_matched else []
    lines += [
        "Before fine-tuning (target_test bpb; each comparison: mean relative difference, "
        "mean paired difference in bpb [95% t interval], verdict):",
        "",
        "| " + " | ".join(header + [c.header for c in before]) + " |",
        "|" + "---|" * (len(header) + len(before)),
    ]
    verdicts: dict[str, dict[str, list[str]]] = {c.header: {} for c in before + after}
    base_train = [_number(r["train_flops"]) for r in rows if r["method"] == "base"]
    base_flops = statistics.mean(base_train) if base_train else 0.0
    for method in methods_here:
        own = [r for r in rows if r["method"] == method]
        cells = [
            method,
            str(len(own)),
            f"{statistics.mean(_number(r['train_flops']) for r in own) / base_flops:.2f}"
            if base_flops
            else "-",
            _mean_sd([_number(r["target_bpb"]) for r in own]),
        ]
        if has_matched:
            cells.append(
                " / ".join(
                    str(int(_number(own[0].get(f"{b}_matched_step"))))
                    if math.isfinite(_number(own[0].get(f"{b}_matched_step")))
                    else "-"
                    for b in BASELINES
                )
            )
        for spec in before:
            cell, word = comparison(rows, method, spec)
            cells.append(cell)
            if word:
                verdicts[spec.header].setdefault(word, []).append(method)
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "After fine-tuning on target_train (early-stopped on target_valid):",
        "",
        "| "
        + " | ".join(["method", "fine-tuned bpb", "best ft step (max)"] + [c.header for c in after])
        + " |",
        "|" + "---|" * (3 + len(after)),
    ]
    for method in methods_here:
        own = [r for r in rows if r["method"] == method]
        steps = [_number(r.get("finetune_best_step")) for r in own]
        steps = [s for s in steps if math.isfinite(s)]
        cells = [
            method,
            _mean_sd([_number(r["target_bpb_finetuned"]) for r in own]),
            str(int(max(steps))) if steps else "-",
        ]
        for spec in after:
            cell, word = comparison(rows, method, spec)
            cells.append(cell)
            if word:
                verdicts[spec.header].setdefault(word, []).append(method)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for header, groups in verdicts.items():
        if groups:
            summary = "; ".join(f"{word}: {', '.join(ms)}" for word, ms in sorted(groups.items()))
            lines.append(f"- {header}: {summary}")
    short = cut_short(rows)
    lines += [
        "- Fine-tunings whose best step is their last (the budget may have cut them short): "
        + (", ".join(short) if short else "none"),
        "",
    ]
    return lines


def markdown_report(
    title: str, preset: Preset, rows, extras, command: str, out: pathlib.Path, note: str = ""
) -> str:
    """The results file: protocol, then per target its notes, tables and the plots that
    exist in ``out``."""
    info = benchlib.machine_info()
    targets = [t for t in preset.targets if any(r["target"] == t for r in rows)]
    shares = ", ".join(f"{t} {s}" for t, s in preset.pool_target_shares.items()) or "defaults"
    lines = [
        f"# Benchmark `{title}`",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['device_count']} x {info['device_kind']} ({jax.default_backend()}), "
        f"{info['cpu_count']} CPUs; date {time.strftime('%Y-%m-%d')}.",
        "",
        f"Model `{preset.size}`, {preset.steps} model steps of b = {preset.batch_size} for "
        f"every method, big batch B = {preset.downsampling} x b for the selection methods "
        f"(uniform for the first {preset.selection_warmup} steps); target_train of at most "
        f"{preset.max_target_train or 1000} documents; pool target shares: "
        f"{shares}. Fine-tuning: {preset.finetune_steps} steps on target_train at the rate "
        f"chosen from {list(preset.finetune_learning_rates)} on base seed 0, read at the best "
        "step by target_valid. Bits per byte on target_test, lower is better. Every "
        "comparison pairs the same seeds of the two methods: mean relative difference "
        "(a - b) / b (negative = better), mean paired difference in bpb with its 95% "
        "Student t interval, and `better` / `worse` / `not distinguishable` (the interval "
        "below 0, above 0, or containing 0). A method with one seed gets no interval.",
        "",
    ]
    if note:
        lines += [note, ""]
    for target in targets:
        here = [r for r in rows if r["target"] == target]
        lines += target_report(target, here, grid_methods(), extras.get(target, {}))
        plots = [f"{target}_target_bpb.png", f"{target}_target_bpb_flops.png"]
        plots += [f"{target}_mixing_target_valid.png", f"{target}_finetune_target_valid.png"]
        lines += [" ".join(f"![{p}]({p})" for p in plots if (out / p).exists()), ""]
    return "\n".join(lines) + "\n"


def read_csv(path: pathlib.Path) -> list[dict[str, Any]]:
    """Rows of a results.csv; numbers as floats (missing columns read as absent)."""
    with path.open(newline="") as f:
        return [
            {k: (v if k in ("target", "method") else _number(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def write_plots(out: pathlib.Path, bench: Benchmark, target: str) -> None:
    """Target bpb against steps and FLOPs (seed 0 of every method, the long baselines),
    mixing's target_valid curve per seed, fine-tuning curves, selected domain shares."""
    preset, seed = bench.preset, bench.preset.seeds[0]
    runs = {m: _rows(bench.run_dir(target, m, seed)) for m in bench.grid_methods}
    for baseline in BASELINES if bench.matched else ():
        if baseline in bench.grid_methods:
            runs[f"{baseline} (long)"] = _rows(bench.long_dir(target, baseline, seed))
    plot.plot_metric(
        runs, TEST_KEY, out / f"{target}_target_bpb.png", title=f"{target}: target test bpb"
    )

    def flops_at(label, rows):
        method = label.split(" ")[0]
        offset = method_train_flops(preset, bench.flops, method) - run_flops(
            bench.flops[method], preset.steps, preset.selection_warmup
        )
        return [
            offset + run_flops(bench.flops[method], r["step"], preset.selection_warmup)
            for r in rows
        ]

    plot.plot_metric(
        runs,
        TEST_KEY,
        out / f"{target}_target_bpb_flops.png",
        x_values=flops_at,
        xlabel="cumulative training FLOPs",
        title=f"{target}: target bpb at equal compute",
    )
    if "mixing" in bench.grid_methods:
        start = preset.steps // 4  # the first steps' drop would hide the tail's shape
        plot.plot_metric(
            {
                f"seed {s} {kind}".strip(): [r for r in _rows(run) if r["step"] >= start]
                for s in preset.seeds
                for kind, run in bench.mixing_runs(target, s).items()
            },
            VALID_KEY,
            out / f"{target}_mixing_target_valid.png",
            title=f"{target}: mixing, target_valid bpb from step {start}",
        )
    lr = bench.finetune_lr(target)
    finetunings = {
        m: _rows(bench.ft_dir(bench.run_dir(target, m, seed), lr)) for m in bench.grid_methods
    }
    if "mixing" in bench.grid_methods:
        mixing = bench.run_dir(target, "mixing", seed)
        finetunings["mixing (early-stopped)"] = _rows(
            bench.ft_dir(bench.at_dir(mixing, "at_best"), lr)
        )
    plot.plot_metric(
        finetunings,
        VALID_KEY,
        out / f"{target}_finetune_target_valid.png",
        title=f"{target}: fine-tuning, target_valid bpb (seed {seed})",
    )
    for method in SELECTION_METHODS:
        if method in bench.grid_methods:
            plot.plot_domain_shares(
                runs[method],
                out / f"{target}_{method}_domain_shares.png",
                title=f"{target} / {method}: selected domain shares",
            )


# ----------------------------------------------------------------------------- pilot


def step_seconds(rows) -> float:
    """Median seconds per train step over the logged rows, the first (compile) left out."""
    rates = [r["steps_per_sec"] for r in rows if r.get("steps_per_sec")][1:]
    return statistics.median(1.0 / rate for rate in rates) if rates else math.nan


def pilot_preset(preset: Preset, steps: int) -> Preset:
    """The preset's sizes, ``steps`` model steps, one seed, one target, one fine-tuning
    rate, no compute matching: what one run of each method costs per step."""
    return dataclasses.replace(
        preset,
        targets=preset.targets[:1],
        steps=steps,
        seeds=preset.seeds[:1],
        finetune_steps=min(preset.finetune_steps, steps),
        finetune_learning_rates=preset.finetune_learning_rates[:1],
        compute_matched=False,
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
        seconds = step_seconds(_rows(run))
        costs[method] = {
            "seconds_per_step": seconds,
            "fixed_seconds": _done(run)["wall_s"] - steps * seconds,
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
            config = run_config(preset, preset.targets[0], method, 0, args)
            # Compiling the step reads no reference parameters: any path will do.
            config = config_args.override(
                config, {"cds.generic_from": "-", "cds.target_from": "-", "rho.reference_from": "-"}
            )
            if method == "finetune":
                config = finetune_config(
                    preset, root, config, preset.finetune_learning_rates[0], args
                )
            flops[method] = step_flops(config)
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
        base_dir = full.run_dir(target, "base", preset.seeds[0])
        if not (base_dir / "diagnose.json").exists():
            diagnose.diagnose(
                full.config(target, "base", preset.seeds[0]),
                str(base_dir),
                num_batches=preset.diagnose_batches,
            )
        extras[target] = {
            **full.curves(target),
            "diagnose": json.loads((base_dir / "diagnose.json").read_text()),
        }
        rows += full.target_rows(target)
        # After every target, so an interrupted grid leaves the tables of those finished.
        with (out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        extras_file.write_text(json.dumps(extras, indent=2))
        (out / "diagnose.json").write_text(
            json.dumps({t: e["diagnose"] for t, e in extras.items()}, indent=2)
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
