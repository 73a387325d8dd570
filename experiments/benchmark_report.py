"""The benchmark's report: paired comparisons with t intervals (the table columns), the
markdown tables per target, the CSV, and the plots."""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import benchlib
import jax
from benchmark_grid import Benchmark, read_rows
from benchmark_setup import (
    BASELINES,
    SELECTION_METHODS,
    TEST_KEY,
    VALID_KEY,
    Preset,
    grid_methods,
    method_train_flops,
    run_flops,
)

from adaptive_data import plot, stats

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


# ----------------------------------------------------------------------------- report
# ----------------------------------------------------------------------------- report


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A table column: ``column`` of a method's seeds against ``reference_column`` of the
    same seeds of ``baseline`` (or, when ``matched``, of the method's own rows, where the
    FLOP-matched baseline's values are stored).

    The FLOP-matched columns compare with a checkpoint taken mid-schedule from one long
    baseline run (its rate not yet decayed), which is better than a finished run of the
    same length on the scarce preset: a diagnostic, not a compute match. Whether a method
    pays for its compute is ``compute_multiplier.py``'s annealed-frontier question."""

    header: str
    column: str
    baseline: str
    reference_column: str
    matched: bool = False


BEFORE_FINETUNING = (
    Comparison("vs base, = steps", "target_bpb", "base", "target_bpb"),
    Comparison("vs mixing, = steps", "target_bpb", "mixing", "target_bpb"),
    Comparison(
        "vs base mid-schedule ckpt, = FLOPs (diagnostic)",
        "target_bpb",
        "base",
        "base_matched_target_bpb",
        True,
    ),
    Comparison(
        "vs mixing mid-schedule ckpt, = FLOPs (diagnostic)",
        "target_bpb",
        "mixing",
        "mixing_matched_target_bpb",
        True,
    ),
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
        "vs base mid-schedule ckpt+ft, = FLOPs (diagnostic)",
        "target_bpb_finetuned",
        "base",
        "base_matched_target_bpb_finetuned",
        True,
    ),
    Comparison(
        "vs mixing mid-schedule ckpt+ft, = FLOPs (diagnostic)",
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


def comparison_cells(
    rows, method: str, specs: Sequence[Comparison], verdicts: dict[str, dict[str, list[str]]]
) -> list[str]:
    """The cells of ``method``'s row for the columns ``specs``; each verdict is added to
    ``verdicts[column header][verdict]`` (the summary lines under the table)."""
    cells = []
    for spec in specs:
        cell, word = comparison(rows, method, spec)
        cells.append(cell)
        if word:
            verdicts[spec.header].setdefault(word, []).append(method)
    return cells


def _curve_summary(curve: Mapping[str, Any]) -> str:
    """``"still falling (best at step 550 of 600, +0.0030 bpb at the end)"``; the bpb above
    the best is left out where the best is the last step or the record predates it."""
    rise = ""
    if "best_bpb" in curve and curve["best_step"] != curve["last_step"]:
        rise = f", {curve['last_bpb'] - curve['best_bpb']:+.4f} bpb at the end"
    return f"{curve['shape']} (best at step {curve['best_step']} of {curve['last_step']}{rise})"


def _yes_no(answer: bool) -> str:
    return "**yes**" if answer else "**no**"


def preflight_lines(report: Mapping[str, Any]) -> list[str]:
    """The preflight test of the base run (``WORKDIR/diagnose.json``, see
    ``adaptive_data.diagnose``) in markdown: its statistics on one line, then one line per
    method family answering both questions (helps at equal steps; pays for its compute
    against the family's FLOPs ratio to base). A report of the first version of the test
    (no ``stability_steps``: before its redesign) is named, not rendered."""
    step = report["checkpoint_step"]
    if "stability_steps" not in report:
        return [
            f"Preflight test (base run, step {step}): a report of the first version of the "
            "test, since redesigned (v2, validated in "
            "experiments/results/diagnose_validation_v2/); rerun --mode=diagnose for its "
            "verdicts."
        ]
    gain, speedup = report["statistics"]["cosine_gain"], report["statistics"]["speedup"]
    parts = [
        f"cosine gain {gain['mean']:+.3g} ± {gain['stderr']:.2g}",
        f"speed-up {speedup['mean']:.3g} ± {speedup['stderr']:.2g}",
    ]
    if "rank_corr_stability" in report["statistics"]:
        stability = report["statistics"]["rank_corr_stability"]["mean"]
        parts.append(f"score stability (Spearman) {stability:.2f}")
    budget = "" if report["within_budget"] else ", beyond the budget"
    lines = [f"Preflight test (base run, step {step}{budget}): " + ", ".join(parts) + "."]
    for family, verdict in report["verdicts"].items():
        lines.append(
            f"- {family} ({', '.join(verdict['methods'])}): helps at equal steps "
            f"{_yes_no(verdict['helps_at_equal_steps'])}; pays for its compute "
            f"({verdict['cost_method']} {verdict['cost_ratio']:.2f}x base's FLOPs) "
            f"{_yes_no(verdict['pays_for_compute'])}"
        )
    return lines


def target_report(target: str, rows, method_order: Sequence[str], extras) -> list[str]:
    """The markdown section of one target: notes, the two tables, verdict lists."""
    methods_here = [m for m in method_order if any(r["method"] == m for r in rows)]
    lines = [f"## Target `{target}`", ""]
    if extras.get("diagnose"):
        lines += [*preflight_lines(extras["diagnose"]), ""]
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
        parts = [f"seed {label}: {_curve_summary(c)}" for label, c in curve.items()]
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
        cells += comparison_cells(rows, method, before, verdicts)
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
        cells += comparison_cells(rows, method, after, verdicts)
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
    rates = ", ".join(
        f"{t} {preset.learning_rates.get(t, preset.learning_rate):g}" for t in preset.targets
    )
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
        f"{shares}; peak learning rate {rates}. Fine-tuning: {preset.finetune_steps} steps "
        "on target_train at the rate "
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


def write_csv(path: pathlib.Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` as a results.csv with the columns of ``CSV_COLUMNS``."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


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
    runs = {m: read_rows(bench.run_dir(target, m, seed)) for m in bench.grid_methods}
    for baseline in BASELINES if bench.matched else ():
        if baseline in bench.grid_methods:
            runs[f"{baseline} (long)"] = read_rows(bench.long_dir(target, baseline, seed))
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
                f"seed {label}": [r for r in read_rows(run) if r["step"] >= start]
                for label, run in bench.mixing_runs(target).items()
            },
            VALID_KEY,
            out / f"{target}_mixing_target_valid.png",
            title=f"{target}: mixing, target_valid bpb from step {start}",
        )
    lr = bench.finetune_lr(target)
    finetunings = {
        m: read_rows(bench.ft_dir(bench.run_dir(target, m, seed), lr)) for m in bench.grid_methods
    }
    if "mixing" in bench.grid_methods:
        mixing = bench.run_dir(target, "mixing", seed)
        finetunings["mixing (early-stopped)"] = read_rows(
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
