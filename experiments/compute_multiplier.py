"""Does selection pay for its compute? The effective compute multiplier of every method
against base's (and mixing's) annealed compute frontier, at a tuned recipe.

    python experiments/compute_multiplier.py --preset quick --workdir /tmp/cm_quick   # seconds
    nohup nice -n 5 python experiments/compute_multiplier.py --preset scarce \\
        --workdir /work/runs/cm --tfds_data_dir /work/runs/tfds_scarce > /tmp/cm.log 2>&1 &
    python experiments/compute_multiplier.py --preset scarce --workdir /work/runs/cm --report_only

The protocol (docs/algorithms.md, "Compute accounting"), per target task of the preset:

1. **Recipe** (seed 0). Base's peak learning rate is chosen on its final ``target_valid``
   bpb at every budget of its frontier: from ``BASE_RATES`` at the preset's budget (1x),
   then at each larger budget from the previous budget's choice and its two neighbours on
   ``RATE_LADDER``; a choice at the edge of what was tried extends the grid along the
   ladder (``tune``). (Giving an interior point the rate of the nearest tuned budget
   instead left russian's 2x point 0.09 bpb worse than at its own best rate, which
   inflated every multiplier read off it.) The fine-tuning rate is
   chosen the same way from ``FINETUNE_RATES`` on base 1x (best ``target_valid`` step).
   The bilevel variants with ``Variant.outer_rates`` (anograd and soba every step, and
   every amortised variant with fewer outer updates) choose their outer learning rate
   the same way on seed 0. Every method trains at the 1x rate.
2. **Annealed frontiers** (``FRONTIERS``). Base at 1, 2, 4, 8 x its own FLOPs (the
   preset's steps times the budget) and mixing at 1, 2, 4 x base's FLOPs (mixing reads a
   target batch as well, so it takes fewer steps), every point a separate run whose
   schedule (warm-up, cosine decay) ends at its own last step, at its budget's tuned rate
   (mixing: base's rate at the same budget); every point fine-tuned.
3. **Methods** (``STUDY_METHODS``): each method or amortised variant from scratch at the
   preset's steps, fine-tuned with the same protocol.
4. **Multiplier.** Per seed (the frontier of the same seed: same initialisation and
   data order): the FLOPs at which base's frontier reaches the method's target test bpb
   (``stats.frontier_flops``, linear in log FLOPs) over the method's training FLOPs;
   before and after fine-tuning, against base's and mixing's frontiers; the geometric
   mean over seeds with a 95% t interval of the log (``stats.ratio_interval``). Outside
   a frontier the value is extrapolated along its nearest segment and flagged.

Training FLOPs are XLA's cost analysis of each compiled step variant (selection warm-up;
selection without the outer update; selection with it) times the number of steps of each
kind that the method's schedule (``Method.flags``) takes: ``outer.every`` and
``outer.stop_after`` count only because the steps between really skip the outer update.
Evaluation and fine-tuning are not counted (every run gets the same fine-tuning).

Runs are resumable (``done.json`` per workdir; rerun the same command). The grid goes seed
by seed, so an interrupted study has complete seeds; ``--report_only`` writes the tables
from whatever has finished. Outputs in ``--out``: results.csv (one row per target, method
or frontier point and seed), results.md, recipe.json, flops.json, a frontier plot per
target and the amortisation frontier plot. One process per target (``--targets``) may run
at once on the same ``--workdir``: the recipe is kept per target, step FLOPs are merged,
and every process rewrites the report of all targets from what has finished.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import pathlib
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import benchlib  # noqa: F401  (puts the repository root on sys.path)
from absl import logging
from benchmark_grid import Grid, Job, best_eval, finetune_outcome, read_done, read_rows
from benchmark_setup import (
    PRESETS,
    REPO_ROOT,
    TEST_KEY,
    VALID_KEY,
    Preset,
    finetune_config,
    run_config,
    step_flops,
)

from adaptive_data import config_args, run_setup, stats

# Half-decade ladders along which a tuned rate's grid is extended when the best rate is
# at the edge of what was tried.
RATE_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
FINETUNE_LADDER = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
OUTER_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
BASE_RATES = (1e-3, 3e-3, 1e-2, 3e-2)
FINETUNE_RATES = (1e-4, 3e-4, 1e-3)
OUTER_RATES = (1e-3, 3e-3, 1e-2)


@dataclasses.dataclass(frozen=True)
class Frontier:
    """Runs of ``method`` (with ``overrides``) at ``budgets`` x base's training FLOPs at
    the preset's steps, each annealed to its own end; its rows are named ``name`` (1x) and
    ``name_x<budget>``."""

    name: str
    method: str
    budgets: tuple[float, ...]
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def point_name(self, budget: float) -> str:
        """The rows' ``method`` of the point at ``budget``."""
        return self.name if budget == 1 else f"{self.name}_x{budget:g}"


# Base's frontier first: it defines the multiplier, and its budgets the rate tuning's.
FRONTIERS = (
    Frontier("base", "base", (1, 2, 4, 8)),
    Frontier("mixing", "mixing", (1, 2, 4)),  # the authors' separate target batch
    # One batch of b with a target share of 1 - mixing.generic_weight: base's FLOPs per
    # step, the compute-fair mixing.
    Frontier("mixing_mixed", "mixing", (1, 2, 4), {"mixing.batch": "mixed"}),
)
BASE_BUDGETS = FRONTIERS[0].budgets


@dataclasses.dataclass(frozen=True)
class Variant:
    """A method as the study runs it: ``method`` with dotted config ``overrides``.

    ``stop_after_fraction`` freezes the weighting model after that fraction of the steps
    (``outer.stop_after``); ``outer_rates`` (non-empty) is the initial grid of
    ``outer.learning_rate`` tuned on seed 0 (``()``: the method's default rate).
    """

    name: str
    method: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stop_after_fraction: float | None = None
    outer_rates: tuple[float, ...] = ()


SMALL_WEIGHTING_MODEL = {"weighting.embed_dim": 16, "weighting.conv_features": (32,)}

STUDY_METHODS = (
    Variant("dsir", "dsir"),
    Variant("classifier", "classifier"),
    Variant("anograd", "anograd", outer_rates=OUTER_RATES),
    Variant("anograd_every4", "anograd", {"outer.every": 4}, outer_rates=OUTER_RATES),
    Variant("anograd_every8", "anograd", {"outer.every": 8}, outer_rates=OUTER_RATES),
    Variant("anograd_every16", "anograd", {"outer.every": 16}, outer_rates=OUTER_RATES),
    Variant("anograd_freeze25", "anograd", stop_after_fraction=0.25),
    Variant("anograd_freeze50", "anograd", stop_after_fraction=0.5),
    Variant("anograd_frac25", "anograd", {"outer.batch_fraction": 0.25}),
    Variant("soba", "soba", outer_rates=OUTER_RATES),
    Variant("soba_every4", "soba", {"outer.every": 4}, outer_rates=OUTER_RATES),
    Variant("align_filter", "align_filter"),
    # Added to the grid after its first launch (they run after the variants above).
    Variant("dsir_words", "dsir", {"dsir.features": "words"}),
    Variant("dds_every4", "dds", {"outer.every": 4}, outer_rates=OUTER_RATES),
    # A weighting model sized to the tiny LM: scoring the k b candidates with the default
    # CNN costs 0.29 of a base step here (the paper's sizes: 0.06), with one 32-wide
    # convolution over 16-wide embeddings 0.02 (XLA's count).
    Variant(
        "anograd_every8_smallcnn",
        "anograd",
        {"outer.every": 8, **SMALL_WEIGHTING_MODEL},
        outer_rates=OUTER_RATES,
    ),
    Variant(
        "anograd_every16_smallcnn",
        "anograd",
        {"outer.every": 16, **SMALL_WEIGHTING_MODEL},
        outer_rates=OUTER_RATES,
    ),
    Variant(
        "anograd_every32_smallcnn",
        "anograd",
        {"outer.every": 32, **SMALL_WEIGHTING_MODEL},
        outer_rates=OUTER_RATES,
    ),
)
QUICK_METHODS = ("dsir", "anograd", "anograd_every4", "anograd_freeze50")


# ----------------------------------------------------------------------------- tuning


def tune(ladder: Sequence[float], initial: Sequence[float], score: Callable[[float], float]):
    """The rate of ``ladder`` with the lowest ``score``: ``initial`` first, then, while the
    best rate tried is the lowest (highest) tried, the next lower (higher) ladder rate.

    Returns ``{"tried": {rate: score}, "chosen": rate, "at_ladder_end": bool}`` (the last:
    the best rate is an end of the ladder, so the grid could not be extended further). A
    tie goes to the lowest rate, and an edge that only ties its neighbour is not extended.
    """
    unknown = [r for r in initial if r not in ladder]
    if unknown:
        raise ValueError(f"initial rates {unknown} are not on the ladder {ladder}.")
    tried = {r: score(r) for r in initial}
    while True:
        rates = sorted(tried)
        best = min(rates, key=lambda r: tried[r])  # the lowest rate on a tie
        i = ladder.index(best)
        # Extend only past an edge strictly better than its neighbour (a flat score, e.g.
        # an outer update too rare to matter, is no reason to go on).
        if len(rates) == 1:  # a single rate tried: both of its sides are open
            strictly = True
        else:
            inner = rates[1] if best == rates[0] else rates[-2] if best == rates[-1] else None
            strictly = inner is not None and tried[best] < tried[inner]
        if best == rates[0] and i > 0 and strictly:
            tried[ladder[i - 1]] = score(ladder[i - 1])
        elif best == rates[-1] and i < len(ladder) - 1 and strictly:
            tried[ladder[i + 1]] = score(ladder[i + 1])
        else:
            return {
                "tried": {f"{r:g}": tried[r] for r in sorted(tried)},
                "chosen": best,
                "at_ladder_end": i in (0, len(ladder) - 1),
            }


def neighbours(ladder: Sequence[float], rate: float) -> tuple[float, ...]:
    """``rate`` and its neighbours on ``ladder``."""
    i = ladder.index(rate)
    return tuple(ladder[max(0, i - 1) : i + 2])


# ----------------------------------------------------------------------------- FLOPs


def phase_of(flags: Mapping[str, bool]) -> str:
    if flags["outer_update"]:
        return "select_outer"
    return "select" if flags["active"] else "warmup"


PHASE_FLAGS = {
    "warmup": {"active": False, "outer_update": False},
    "select": {"active": True, "outer_update": False},
    "select_outer": {"active": True, "outer_update": True},
}


def step_flops_by_phase(config, phases: Sequence[str] | None = None) -> dict[str, float]:
    """XLA FLOPs of one train step of ``config``'s method in each of ``phases`` (names of
    ``PHASE_FLAGS``; default: each phase its schedule reaches in ``train.steps``)."""

    def flags(method):
        names = phases or sorted({phase_of(method.flags(s)) for s in range(method_steps)})
        return {name: PHASE_FLAGS[name] for name in names}

    method_steps = int(config.train.steps)
    return step_flops(config, flags)


def schedule_flops(config, per_phase: Mapping[str, float]) -> float:
    """Training FLOPs of ``config``'s run: each step at its phase's FLOPs."""
    method = run_setup.build(
        config, domains=("generic_a", "generic_b", "target"), target_domain="target"
    ).method
    return sum(per_phase[phase_of(method.flags(s))] for s in range(int(config.train.steps)))


# ----------------------------------------------------------------------------- the study


class Planned(NamedTuple):
    """A run the grid expects (for its progress line and ETA)."""

    method: str
    steps: int


class Study:
    """The runs of one preset's compute-multiplier study and the rows made from them."""

    def __init__(self, preset: Preset, variants: Sequence[Variant], args, root, out):
        self.preset, self.variants, self.args = preset, tuple(variants), args
        self.root, self.out = pathlib.Path(root), pathlib.Path(out)
        # Kept with the runs, so one process per target can share them (writes merge).
        self.flops_file = self.root / "flops.json"
        self.flops = _read_json(self.flops_file)
        self._base_flops: dict[str, float] = {}
        self.grid: Grid | None = None

    @property
    def recipe(self) -> dict[str, Any]:
        """``{target: choices}`` of the targets tuned so far (``ROOT/<target>/recipe.json``)."""
        return {
            target: _read_json(self.root / target / "recipe.json")
            for target in self.preset.targets
            if (self.root / target / "recipe.json").exists()
        }

    # ------------------------------------------------------------------ configs
    def config(self, target, method, seed, steps, lr, overrides=None, eval_every=None):
        """A run from scratch: the preset's config at ``steps`` and peak rate ``lr``."""
        preset = self.preset
        eval_every = eval_every or preset.eval_every
        config = run_config(preset, target, method, seed, self.args, steps)
        return config_args.override(
            config,
            {
                "train.learning_rate": lr,
                "train.eval_every": eval_every,
                "train.log_every": max(1, min(10, eval_every)),
                # The last checkpoint is all the study reads (fine-tuning starts from it).
                "checkpoint.every": eval_every,
                "checkpoint.keep": 2,
                **(overrides or {}),
            },
        )

    def variant_overrides(self, variant: Variant, outer_lr: float | None) -> dict[str, Any]:
        overrides = dict(variant.overrides)
        if variant.stop_after_fraction is not None:
            overrides["outer.stop_after"] = max(
                1, round(variant.stop_after_fraction * self.preset.steps)
            )
        if outer_lr is not None:
            overrides["outer.learning_rate"] = outer_lr
        return overrides

    # ------------------------------------------------------------------ FLOPs
    def phase_flops(self, name: str, config) -> dict[str, float]:
        """Per-phase step FLOPs of variant ``name`` (compiled once, kept in flops.json)."""
        if name not in self.flops:
            config = config_args.override(config, {"data.tfds_data_dir": None})
            self.flops[name] = step_flops_by_phase(config)
            self.flops = {**_read_json(self.flops_file), **self.flops}
            _write_json(self.flops_file, self.flops)
        return self.flops[name]

    def base_flops(self, target: str) -> float:
        """Base's training FLOPs at the preset's steps (1x), computed once per target."""
        if target not in self._base_flops:
            config = self.config(target, "base", 0, self.preset.steps, 1e-3)
            self._base_flops[target] = schedule_flops(config, self.phase_flops("base", config))
        return self._base_flops[target]

    def frontier_steps(self, target: str, frontier: Frontier, budget: float) -> int:
        """The steps at which ``frontier``'s run spends ``budget`` x base's FLOPs."""
        if frontier.method == "base" and not frontier.overrides:
            return round(budget * self.preset.steps)
        config = self.config(target, frontier.method, 0, self.preset.steps, 1e-3)
        config = config_args.override(config, dict(frontier.overrides))
        per_step = self.phase_flops(frontier.name, config)["warmup"]
        return max(1, round(budget * self.base_flops(target) / per_step))

    # ------------------------------------------------------------------ runs
    def run(self, label: str, method: str, workdir: pathlib.Path, config) -> pathlib.Path:
        steps = int(config.train.steps)
        self.grid.run(Job(label, method, steps, lambda: workdir, lambda: config))
        return workdir

    def finetune(self, target: str, source: pathlib.Path, seed: int, lr: float) -> pathlib.Path:
        workdir = source.with_name(f"{source.name}_ft_lr{lr:g}")
        base_config = self.config(target, "base", seed, self.preset.steps, 1e-3)
        config = finetune_config(self.preset, source, base_config, lr, self.args)
        return self.run(f"{target}/{workdir.name}", "finetune", workdir, config)

    def frontier_config(self, target: str, frontier: Frontier, budget: float, seed, lr):
        preset = self.preset
        steps = self.frontier_steps(target, frontier, budget)
        eval_every = max(1, round(preset.eval_every * steps / preset.steps))
        return self.config(
            target, frontier.method, seed, steps, lr, dict(frontier.overrides), eval_every
        )

    def frontier_dir(self, target: str, frontier: Frontier, budget: float, seed, lr):
        return self.root / target / f"{frontier.name}_x{budget:g}_lr{lr:g}_seed{seed}"

    def frontier_run(self, target: str, frontier: Frontier, budget: float, seed, lr):
        config = self.frontier_config(target, frontier, budget, seed, lr)
        workdir = self.frontier_dir(target, frontier, budget, seed, lr)
        return self.run(f"{target}/{workdir.name}", frontier.method, workdir, config)

    def variant_run(self, target, variant: Variant, seed, lr, outer_lr=None) -> pathlib.Path:
        config = self.config(
            target,
            variant.method,
            seed,
            self.preset.steps,
            lr,
            self.variant_overrides(variant, outer_lr),
        )
        suffix = "" if outer_lr is None else f"_olr{outer_lr:g}"
        workdir = self.root / target / f"{variant.name}_lr{lr:g}{suffix}_seed{seed}"
        return self.run(f"{target}/{workdir.name}", variant.method, workdir, config)

    # ------------------------------------------------------------------ recipe
    def tune_recipe(self, target: str) -> dict[str, Any]:
        """Seed 0's choices for ``target`` (runs what they need; finished runs are read,
        not rerun), written to ``ROOT/<target>/recipe.json``."""
        seed = self.preset.seeds[0]
        recipe: dict[str, Any] = {}

        def final_valid(workdir):
            return [r for r in read_rows(workdir) if VALID_KEY in r][-1][VALID_KEY]

        def base_score(budget):
            return lambda lr: final_valid(self.frontier_run(target, FRONTIERS[0], budget, seed, lr))

        # Every budget of base's frontier is tuned: each point is the best base can do
        # with its compute (an interior point given a neighbour's rate can be far from it).
        recipe["base_lr"] = {"1": tune(RATE_LADDER, BASE_RATES, base_score(1))}
        rate_1x = previous = recipe["base_lr"]["1"]["chosen"]
        for budget in BASE_BUDGETS[1:]:
            tuned = tune(RATE_LADDER, neighbours(RATE_LADDER, previous), base_score(budget))
            recipe["base_lr"][f"{budget:g}"] = tuned
            previous = tuned["chosen"]
        base_1x = self.frontier_run(target, FRONTIERS[0], 1, seed, rate_1x)
        recipe["finetune_lr"] = tune(
            FINETUNE_LADDER,
            FINETUNE_RATES,
            lambda lr: best_eval(read_rows(self.finetune(target, base_1x, seed, lr)))[VALID_KEY],
        )
        recipe["outer_lr"] = {
            v.name: tune(
                OUTER_LADDER,
                v.outer_rates,
                lambda olr, v=v: final_valid(self.variant_run(target, v, seed, rate_1x, olr)),
            )
            for v in self.variants
            if v.outer_rates
        }
        _write_json(self.root / target / "recipe.json", recipe)
        return recipe

    def rate(self, target: str, budget: float) -> float:
        """Base's tuned peak rate at ``budget`` x its FLOPs (also mixing's there)."""
        tuned = self.recipe[target]["base_lr"]
        if f"{budget:g}" not in tuned:
            raise KeyError(
                f"{target}: no tuned base rate at {budget:g}x in {self.root / target}/"
                f"recipe.json (tuned: {', '.join(tuned)}x; a recipe of an older version of "
                "this study). Rerun the study on this workdir: it tunes the missing budgets "
                "and reuses every finished run."
            )
        return tuned[f"{budget:g}"]["chosen"]

    def outer_lr(self, target: str, variant: Variant) -> float | None:
        if not variant.outer_rates:
            return None
        return self.recipe[target]["outer_lr"][variant.name]["chosen"]

    # ------------------------------------------------------------------ the grid
    def plan(self) -> list[Planned]:
        """Every run the study expects (tuning extensions aside), for the ETA."""
        preset, planned = self.preset, []
        per_target = [  # the steps of frontiers other than base's: about right
            Planned(f.method, round(b * preset.steps)) for f in FRONTIERS for b in f.budgets
        ]
        per_target += [Planned(v.method, preset.steps) for v in self.variants]
        n_runs = len(per_target)
        per_target += [Planned("finetune", preset.finetune_steps)] * n_runs
        tuning = [Planned("base", preset.steps)] * (len(BASE_RATES) - 1)
        tuning += [Planned("base", b * preset.steps) for b in BASE_BUDGETS[1:] for _ in (1, 2)]
        tuning += [Planned("finetune", preset.finetune_steps)] * (len(FINETUNE_RATES) - 1)
        tuning += [
            Planned(v.method, preset.steps)
            for v in self.variants
            for _ in range(len(v.outer_rates) - 1)
        ]
        for _ in preset.targets:
            planned += tuning + per_target * len(preset.seeds)
        return planned

    def run_all(self) -> None:
        """The whole grid, seed by seed (every target), writing the report after each."""
        self.grid = Grid(self.plan())
        for seed in self.preset.seeds:
            for target in self.preset.targets:
                if seed == self.preset.seeds[0]:
                    self.tune_recipe(target)
                self.run_seed(target, seed)
                self.report()

    def run_seed(self, target: str, seed: int) -> None:
        ft_lr = self.recipe[target]["finetune_lr"]["chosen"]
        for budget in BASE_BUDGETS:
            run = self.frontier_run(target, FRONTIERS[0], budget, seed, self.rate(target, budget))
            self.finetune(target, run, seed, ft_lr)
        for variant in self.variants:
            run = self.variant_run(
                target, variant, seed, self.rate(target, 1), self.outer_lr(target, variant)
            )
            self.finetune(target, run, seed, ft_lr)
        for frontier in FRONTIERS[1:]:
            for budget in frontier.budgets:
                lr = self.rate(target, budget)
                run = self.frontier_run(target, frontier, budget, seed, lr)
                self.finetune(target, run, seed, ft_lr)

    # ------------------------------------------------------------------ rows
    def _finished(self, workdir: pathlib.Path) -> bool:
        return (workdir / "done.json").exists()

    def point_row(self, target, name, seed, workdir, config, flops_name) -> dict[str, Any] | None:
        """The CSV row of one finished run and its fine-tuning (None: not finished)."""
        ft_lr = self.recipe.get(target, {}).get("finetune_lr", {}).get("chosen")
        ft_dir = workdir.with_name(f"{workdir.name}_ft_lr{ft_lr:g}") if ft_lr else None
        if not (self._finished(workdir) and ft_dir and self._finished(ft_dir)):
            return None
        rows = read_rows(workdir)
        final = [r for r in rows if TEST_KEY in r][-1]
        train_flops = schedule_flops(config, self.phase_flops(flops_name, config))
        return {
            "target": target,
            "method": name,
            "seed": seed,
            "learning_rate": float(config.train.learning_rate),
            "outer_learning_rate": float(config.outer.learning_rate),
            "steps": int(config.train.steps),
            "train_flops": train_flops,
            "flops_vs_base": train_flops / self.base_flops(target),
            "target_bpb": final[TEST_KEY],
            "target_valid_bpb": final[VALID_KEY],
            "generic_bpb": final["eval/generic_bpb"],
            **finetune_outcome(read_rows(ft_dir)),
            "finetune_learning_rate": ft_lr,
            "wall_s": read_done(workdir)["wall_s"],
        }

    def rows(self) -> list[dict[str, Any]]:
        """Every finished (target, method or frontier point, seed), multipliers included."""
        preset, rows = self.preset, []
        for target in preset.targets:
            if "base_lr" not in self.recipe.get(target, {}):
                continue
            for seed in preset.seeds:
                for frontier in FRONTIERS:
                    for budget in frontier.budgets:
                        lr = self.rate(target, budget)
                        workdir = self.frontier_dir(target, frontier, budget, seed, lr)
                        if not self._finished(workdir):
                            continue
                        config = self.frontier_config(target, frontier, budget, seed, lr)
                        name = frontier.point_name(budget)
                        row = self.point_row(target, name, seed, workdir, config, frontier.name)
                        if row is not None:
                            rows.append({**row, "frontier": frontier.name, "budget": budget})
                for variant in self.variants:
                    if variant.outer_rates and variant.name not in self.recipe[target].get(
                        "outer_lr", {}
                    ):
                        continue
                    lr, outer_lr = self.rate(target, 1), self.outer_lr(target, variant)
                    suffix = "" if outer_lr is None else f"_olr{outer_lr:g}"
                    workdir = self.root / target / f"{variant.name}_lr{lr:g}{suffix}_seed{seed}"
                    config = self.config(
                        target,
                        variant.method,
                        seed,
                        preset.steps,
                        lr,
                        self.variant_overrides(variant, outer_lr),
                    )
                    row = self.point_row(target, variant.name, seed, workdir, config, variant.name)
                    if row is not None:
                        rows.append({**row, "frontier": "", "budget": ""})
        return add_multipliers(rows)

    def row_names(self) -> list[str]:
        """The ``method`` of every row a finished grid has per target and seed."""
        names = [f.point_name(budget) for f in FRONTIERS for budget in f.budgets]
        return names + [v.name for v in self.variants]

    # ------------------------------------------------------------------ report
    def report(self) -> list[dict[str, Any]]:
        import compute_multiplier_report as report_lib  # matplotlib only when reporting

        rows, recipe = self.rows(), self.recipe
        self.out.mkdir(parents=True, exist_ok=True)
        write_csv(self.out / "results.csv", rows)
        _write_json(self.out / "recipe.json", recipe)
        _write_json(self.out / "flops.json", self.flops)
        markdown = report_lib.markdown(
            self.preset, rows, recipe, self.flops, self.args.command, self.row_names()
        )
        tmp = self.out / "results.md.tmp"
        tmp.write_text(markdown)
        tmp.replace(self.out / "results.md")
        report_lib.plots(self.out, self.preset, rows)
        return rows


# What a finished run leaves that the report reads (its checkpoints are not needed), and
# of its metrics the evaluation rows.
ARCHIVED_FILES = ("config.json", "done.json")


def archive(root: pathlib.Path, dest: pathlib.Path) -> int:
    """Copies what the report reads of every finished run under ``root`` (its config,
    ``done.json`` and the evaluation rows of its metrics; the per-target recipes and the
    step FLOPs) to ``dest``, so ``--report_only --workdir DEST`` rewrites the tables
    without the runs' checkpoints; returns the runs copied."""
    copied = 0
    for done in sorted(root.glob("*/*/done.json")):
        run = done.parent
        target_dir = dest / run.relative_to(root)
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in ARCHIVED_FILES:
            shutil.copy2(run / name, target_dir / name)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        evaluations = [line for line in lines if '"eval/' in line]
        (target_dir / "metrics.jsonl").write_text("".join(f"{line}\n" for line in evaluations))
        copied += 1
    for extra in [*root.glob("flops.json"), *root.glob("*/recipe.json")]:
        (dest / extra.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(extra, dest / extra.relative_to(root))
    return copied


def write_csv(path: pathlib.Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` as CSV, every key a column (in order of first appearance)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_json(path: pathlib.Path, value: Any) -> None:
    """Atomically (a reader never sees half a file, whichever process writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)


def add_multipliers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row gains ``multiplier_<frontier>[_finetuned]`` (and ``..._where``) against the
    frontiers (``FRONTIERS``) of the same target and seed, and ``break_even_<frontier>
    [_finetuned]``, that frontier's bpb at the row's FLOPs (the bpb at which the row would
    have a multiplier of 1); None: no frontier of >= 2 points yet, or the row is a point
    of that frontier."""
    for row in rows:
        for frontier in (f.name for f in FRONTIERS):
            points = [
                r
                for r in rows
                if r["frontier"] == frontier
                and r["target"] == row["target"]
                and r["seed"] == row["seed"]
            ]
            for suffix, column in (("", "target_bpb"), ("_finetuned", "target_bpb_finetuned")):
                key, break_even = f"multiplier_{frontier}{suffix}", f"break_even_{frontier}{suffix}"
                row[key], row[f"{key}_where"], row[break_even] = None, "", None
                if len(points) < 2 or row["frontier"] == frontier:  # a point of it: 1
                    continue
                curve = [p["train_flops"] for p in points], [p[column] for p in points]
                reached = stats.frontier_flops(*curve, row[column])
                row[key] = reached.flops / row["train_flops"]
                row[f"{key}_where"] = reached.where
                row[break_even] = stats.frontier_bpb(*curve, row["train_flops"])
    return rows


# ----------------------------------------------------------------------------- main


def quick_preset() -> Preset:
    """Every code path in seconds: the benchmark's quick sizes, two seeds."""
    return dataclasses.replace(PRESETS["quick"], seeds=(0, 1), runs_diagnose=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["quick", "scarce"], default="quick")
    parser.add_argument("--workdir", required=True, help="root of the runs")
    parser.add_argument(
        "--out",
        default=None,
        help="tables and plots (default experiments/results/compute_multiplier)",
    )
    parser.add_argument("--tfds_data_dir", default=None, help="TFDS data dir of the corpus")
    parser.add_argument("--targets", default=None, help="comma-separated subset of targets")
    parser.add_argument("--seeds", default=None, help="comma-separated subset of the seeds")
    parser.add_argument(
        "--variants", default=None, help="comma-separated subset of the variants' names"
    )
    parser.add_argument("--report_only", action="store_true", help="tables from finished runs")
    parser.add_argument(
        "--archive",
        default=None,
        help="DIR: copy the finished runs' configs, metrics and done.json (no checkpoints) "
        "there and stop; --report_only --workdir DIR reads them",
    )
    parser.add_argument("--verbose", action="store_true", help="the driver's per-step logs")
    args = parser.parse_args(argv)
    args.command = "python experiments/compute_multiplier.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    preset = quick_preset() if args.preset == "quick" else PRESETS[args.preset]
    if args.targets:
        preset = dataclasses.replace(
            preset, targets=tuple(benchlib.parse_list(args.targets, preset.targets))
        )
    if args.seeds:
        seeds = [int(x) for x in benchlib.parse_list(args.seeds, [str(x) for x in preset.seeds])]
        preset = dataclasses.replace(preset, seeds=tuple(seeds))
    names = [v.name for v in STUDY_METHODS]
    default = QUICK_METHODS if args.preset == "quick" else names
    chosen = benchlib.parse_list(args.variants, names) if args.variants else default
    variants = [v for v in STUDY_METHODS if v.name in chosen]
    out = pathlib.Path(args.out or REPO_ROOT / "experiments" / "results" / "compute_multiplier")
    logging.set_verbosity(logging.INFO if args.verbose else logging.WARNING)
    if args.archive:
        copied = archive(pathlib.Path(args.workdir), pathlib.Path(args.archive))
        print(f"archived {copied} finished runs to {args.archive}")
        return 0
    study = Study(preset, variants, args, args.workdir, out)
    if not args.report_only:
        study.run_all()
    study.report()
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
