"""The benchmark's runs: reading a run's curves (best step, early stopping, shape), the
jobs of one target's grid, running them resumably, and the CSV rows made from them."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmark_setup import (
    BASELINES,
    CURVE_TOLERANCE,
    SHARE_KEYS,
    TEST_KEY,
    VALID_KEY,
    Preset,
    finetune_config,
    matched_steps,
    method_train_flops,
    needs_reserved_shard,
    reference_seed,
    run_config,
    run_flops,
    shard_overrides,
)

from adaptive_data import config_args, methods, train
from adaptive_data import metrics as metrics_lib

# ----------------------------------------------------------------------------- curves
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


def _duration(seconds: float) -> str:
    """``H:MM:SS``, hours unbounded (a grid may take more than a day)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


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
        left = sum(  # a plan may be approximate: more runs of a method than it expected
            max(steps, 0) * self.seconds_per_step.get(method, fallback)
            for method, steps in self.pending_steps.items()
        )
        return _duration(left)

    def _progress(self, label: str, status: str) -> None:
        elapsed = _duration(time.time() - self.start)
        print(
            f"[{self.done}/{self.total}] {label}: {status} | elapsed {elapsed} | ETA {self._eta()}",
            flush=True,
        )

    def run(self, job: Job) -> dict[str, Any]:
        """Trains ``job`` in its workdir unless done; returns its ``done.json``."""
        workdir = job.workdir()
        done_file = workdir / "done.json"
        self.pending_steps[job.method] = self.pending_steps.get(job.method, 0) - job.steps
        self.total = max(self.total, self.done + 1)
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


def read_rows(workdir: pathlib.Path) -> list[dict[str, Any]]:
    return metrics_lib.read_metrics(workdir)


def read_done(workdir: pathlib.Path) -> dict[str, Any]:
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

    def reserved_dir(self, target: str, seed: int) -> pathlib.Path:
        """The base run on the reserved shard of the pool (rho's reference, before it is
        fine-tuned)."""
        return self.root / target / f"base_reserved_seed{seed}"

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
            f"{lr:g}": best_eval(read_rows(self.ft_dir(base, lr)))[VALID_KEY]
            for lr in self.preset.finetune_learning_rates
        }
        chosen = min(self.preset.finetune_learning_rates, key=lambda lr: grid[f"{lr:g}"])
        record = {"grid": grid, "chosen": chosen}
        path.write_text(json.dumps(record, indent=2))
        return record

    # ------------------------------------------------------------------ configs
    def config(
        self, target: str, method: str, seed: int, steps: int | None = None, shard: str = "rest"
    ) -> Any:
        """The config of one run; ``shard="reserved"``: a run on the reserved shard."""
        config = run_config(self.preset, target, method, seed, self.args, steps)
        if shard == "reserved" or needs_reserved_shard(method):
            config = config_args.override(config, shard_overrides(shard))
        if methods.METHODS[method].needs_runs:
            config = config_args.override(config, self.references(target, method, seed))
        return config

    def references(self, target: str, method: str, seed: int) -> dict[str, str]:
        """The workdirs of the runs ``method`` seed ``seed`` reads, as its ``needs_runs``
        declare them: a base run of the same seed, of ``reference_seed`` (independent) or
        on the reserved shard, itself or its fine-tuned copy (see the module doc)."""
        out = {}
        for key, need in methods.METHODS[method].needs_runs.items():
            if need.reserved_shard:
                base = self.reserved_dir(target, seed)
            else:
                base_seed = (
                    reference_seed(seed, self.preset.seeds) if need.independent_seed else seed
                )
                base = self.run_dir(target, "base", base_seed)
            out[key] = str(self.ft_dir(base, self.finetune_lr(target)) if need.fine_tuned else base)
        return out

    # ------------------------------------------------------------------ jobs
    def jobs(self, target: str) -> list[Job]:
        preset, seeds = self.preset, self.preset.seeds
        jobs: list[Job] = []

        def add_run(method, seed, steps=None, workdir=None, shard="rest"):
            workdir = workdir or self.run_dir(target, method, seed)
            jobs.append(
                Job(
                    f"{target}/{workdir.name}",
                    method,
                    steps or preset.steps,
                    lambda: workdir,
                    lambda: self.config(target, method, seed, steps, shard),
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
        # 2. the other base seeds (and independent-seed references), the reserved-shard
        # references (rho's), every method.
        extra = []
        if any(
            need.independent_seed
            for method in self.grid_methods
            for need in methods.METHODS[method].needs_runs.values()
        ):
            extra = sorted({reference_seed(s, seeds) for s in seeds} - set(seeds))
        for seed in [*seeds[1:], *extra]:
            add_finetune(add_run("base", seed), seed)
        if any(needs_reserved_shard(method) for method in self.grid_methods):
            for seed in seeds:  # rho's references: base on the reserved shard, fine-tuned
                reserved = add_run(
                    "base", seed, workdir=self.reserved_dir(target, seed), shard="reserved"
                )
                add_finetune(reserved, seed)
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
                            run, best_eval(read_rows(run))["step"], self.at_dir(run, "at_best")
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
        rows, ft_dir = read_rows(run), self.ft_dir(run, lr)
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
            **finetune_outcome(read_rows(ft_dir)),
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
            "wall_s": read_done(run)["wall_s"],
            "finetune_wall_s": read_done(ft_dir)["wall_s"],
            "finetune_flops": run_flops(self.flops["finetune"], preset.finetune_steps, 0),
        }
        if method == "mixing":
            best_ft = self.ft_dir(self.at_dir(run, "at_best"), lr)
            row["target_bpb_finetuned_from_best"] = finetune_outcome(read_rows(best_ft))[
                "target_bpb_finetuned"
            ]
        for baseline in BASELINES if self.matched else ():
            if baseline == method or baseline not in self.grid_methods:
                continue
            step = self.matched[baseline][method]
            long_run = self.long_dir(target, baseline, seed)
            matched_ft = self.ft_dir(self.at_dir(long_run, f"at{step}"), lr)
            row[f"{baseline}_matched_step"] = step
            row[f"{baseline}_matched_target_bpb"] = _eval_at(read_rows(long_run), TEST_KEY, step)
            row[f"{baseline}_matched_target_bpb_finetuned"] = finetune_outcome(
                read_rows(matched_ft)
            )["target_bpb_finetuned"]
        return row

    def target_rows(self, target: str) -> list[dict[str, Any]]:
        return [
            self.summarize(target, method, seed)
            for method in self.grid_methods
            for seed in self.preset.seeds
        ]

    def mixing_runs(self, target: str) -> dict[str, pathlib.Path]:
        """Mixing's run of every seed (``"0"``) and, when compute-matched, its long run
        (``"0 long"``): the workdirs whose target_valid curves say whether mixing has used
        up the target sample."""
        runs = {}
        for seed in self.preset.seeds:
            runs[str(seed)] = self.run_dir(target, "mixing", seed)
            if self.matched:
                runs[f"{seed} long"] = self.long_dir(target, "mixing", seed)
        return runs

    def curves(self, target: str) -> dict[str, Any]:
        """What the report says about the target beyond the CSV: the fine-tuning rate
        grid, and the shape of each of mixing's target_valid curves (``mixing_runs``)."""
        extras: dict[str, Any] = {"finetune_lr": self.finetune_lr_record(target)}
        if "mixing" in self.grid_methods:
            extras["mixing_target_valid"] = {}
            for label, run in self.mixing_runs(target).items():
                rows = read_rows(run)
                best, last = best_eval(rows), _evals(rows, VALID_KEY)[-1]
                extras["mixing_target_valid"][label] = {
                    "shape": curve_shape(rows),
                    "best_step": best["step"],
                    "last_step": last["step"],
                    "best_bpb": best[VALID_KEY],
                    "last_bpb": last[VALID_KEY],
                }
        return extras
