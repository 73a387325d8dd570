"""Tables and plots of the compute-multiplier study (``compute_multiplier.py``): the recipe
choices, per target the multiplier of every method against base's and mixing's annealed
frontiers with its 95% interval over seeds, the frontier plot of each target and the
amortisation frontier (multiplier against FLOPs per step)."""

from __future__ import annotations

import datetime
import pathlib
import platform
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from adaptive_data import stats  # noqa: E402

FRONTIER_STYLES = ("k-o", "b--s", "g:^", "m-.v")


def frontiers(rows) -> list[str]:
    """The frontiers in the rows, base's first."""
    return list(dict.fromkeys(["base", *(r["frontier"] for r in rows if r["frontier"])]))


def multiplier_columns(rows) -> list[tuple[str, str]]:
    """(column, header) of the multipliers shown: against base before and after
    fine-tuning, against every other frontier after it."""
    columns = [("multiplier_base", "x base"), ("multiplier_base_finetuned", "x base, FT")]
    return columns + [(f"multiplier_{f}_finetuned", f"x {f}, FT") for f in frontiers(rows)[1:]]


def _by(rows, **where) -> list[Mapping[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def _names(rows, target: str) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in _by(rows, target=target)))


def multiplier_cell(rows: Sequence[Mapping[str, Any]], column: str) -> str:
    """Geometric mean over seeds [95% t interval of the log], with the seed count and a
    mark where a seed's value was extrapolated beyond a frontier ("<" below, ">" above)."""
    values = [r[column] for r in rows if isinstance(r.get(column), (int, float))]
    if not values:
        return "-"
    interval = stats.ratio_interval(values)
    marks = {r.get(f"{column}_where") for r in rows} & {"below", "above"}
    mark = "".join(sorted({"below": "<", "above": ">"}[m] for m in marks))
    text = f"{interval.mean:.2f}"
    if interval.n > 1:
        text += f" [{interval.low:.2f}, {interval.high:.2f}]"
    return f"{text} (n={interval.n}){mark}"


def pays(rows: Sequence[Mapping[str, Any]], column: str) -> str:
    """ "pays" (interval above 1), "does not pay" (below 1), "unclear" (interval
    across 1, or a single seed) or "-" (no multiplier: a frontier's own rows)."""
    values = [r[column] for r in rows if isinstance(r.get(column), (int, float))]
    if not values:
        return "-"
    if len(values) < 2:
        return "unclear"
    interval = stats.ratio_interval(values)
    if interval.low > 1.0:
        return "pays"
    return "does not pay" if interval.high < 1.0 else "unclear"


def _mean(rows, column: str) -> str:
    values = [r[column] for r in rows if isinstance(r.get(column), (int, float))]
    return f"{statistics.fmean(values):.3f}" if values else "-"


def tuned_text(tuned: Mapping[str, Any]) -> str:
    """``chosen (tried rate: score, ...)`` of one ``tune`` result, flagged when the choice
    is an end of its ladder (the best rate may lie beyond what could be tried)."""
    tried = ", ".join(f"{lr}: {v:.4f}" for lr, v in tuned["tried"].items())
    flag = "; **at the end of the ladder**" if tuned.get("at_ladder_end") else ""
    return f"{tuned['chosen']:g} (tried {tried}{flag})"


def recipe_lines(recipe: Mapping[str, Any]) -> list[str]:
    lines = ["## Recipe (seed 0, final target_valid bpb; best-step for fine-tuning)", ""]
    for target, choice in recipe.items():
        lines.append(f"**{target}**")
        for budget, tuned in choice.get("base_lr", {}).items():
            lines.append(f"- base peak rate at {budget}x: {tuned_text(tuned)}")
        if "finetune_lr" in choice:
            lines.append(f"- fine-tuning rate: {tuned_text(choice['finetune_lr'])}")
        for name, tuned in choice.get("outer_lr", {}).items():
            lines.append(f"- {name} outer rate: {tuned_text(tuned)}")
        lines.append("")
    return lines


def target_lines(target: str, rows) -> list[str]:
    columns = multiplier_columns(rows)
    lines = [
        f"## {target}",
        "",
        "| method | FLOPs x base | target bpb | after FT | break-even (base, FT) | "
        + " | ".join(label for _, label in columns)
        + " | pays (x base, FT) |",
        "|---|---|---|---|---|" + "---|" * len(columns) + "---|",
    ]
    for name in _names(rows, target):
        group = _by(rows, target=target, method=name)
        cells = [multiplier_cell(group, column) for column, _ in columns]
        lines.append(
            f"| {name} | {_mean(group, 'flops_vs_base')} | {_mean(group, 'target_bpb')} | "
            f"{_mean(group, 'target_bpb_finetuned')} | "
            f"{_mean(group, 'break_even_base_finetuned')} | "
            + " | ".join(cells)
            + f" | {pays(group, 'multiplier_base_finetuned')} |"
        )
    return [*lines, ""]


def summary_lines(preset, rows) -> list[str]:
    """One line per method, a column per target: its multiplier against base's frontier
    after fine-tuning and the verdict (the tables' last two columns side by side)."""
    targets = [t for t in preset.targets if _by(rows, target=t)]
    column = "multiplier_base_finetuned"
    lines = [
        "## Summary: multiplier against base's frontier, after fine-tuning",
        "",
        "| method | FLOPs x base | " + " | ".join(targets) + " |",
        "|---|---|" + "---|" * len(targets),
    ]
    # Every method, and each mixing frontier's 1x point (base's points have no multiplier).
    names = dict.fromkeys(
        r["method"]
        for r in rows
        if not r["frontier"] or (r["frontier"] != "base" and r["budget"] == 1)
    )
    for name in names:
        cells = []
        for target in targets:
            group = _by(rows, target=target, method=name)
            verdict = pays(group, column)
            cells.append("-" if verdict == "-" else f"{multiplier_cell(group, column)} {verdict}")
        lines.append(
            f"| {name} | {_mean(_by(rows, method=name), 'flops_vs_base')} | "
            + " | ".join(cells)
            + " |"
        )
    return [*lines, ""]


def equal_step_cell(rows, target: str, name: str, reference: str) -> str:
    """``name`` against ``reference`` (both at the preset's steps) after fine-tuning: mean
    relative paired difference in target test bpb over the seeds both have [95% t interval
    of that fraction] and the verdict (``stats.compare``)."""
    by_seed = {
        method: {
            r["seed"]: r["target_bpb_finetuned"] for r in _by(rows, target=target, method=method)
        }
        for method in (name, reference)
    }
    seeds = sorted(set(by_seed[name]) & set(by_seed[reference]))
    if len(seeds) < 2:
        return "-"
    a, b = [by_seed[name][s] for s in seeds], [by_seed[reference][s] for s in seeds]
    diff = stats.relative_paired_difference(a, b)
    verdict = stats.compare(a, b)
    verdict = "=" if verdict == stats.NOT_DISTINGUISHABLE else verdict
    return f"{diff.mean:+.1%} [{diff.low:+.1%}, {diff.high:+.1%}] {verdict}"


def equal_step_lines(preset, rows) -> list[str]:
    """Every method at the preset's steps against base and mixing at the same steps (the
    benchmark's question, at the tuned recipe): one table, a column per target."""
    targets = [t for t in preset.targets if _by(rows, target=t)]
    methods = [
        name
        for name in dict.fromkeys(r["method"] for r in rows if not r["frontier"])
        if any(_by(rows, target=t, method=name) for t in targets)
    ]
    lines = [
        "## Equal steps (after fine-tuning)",
        "",
        f"Each method at {preset.steps} steps against base and mixing (the authors' separate "
        "target batch) at the same steps and recipe: mean relative paired difference in "
        "target test bpb [95% t interval], negative is better; `=`: not distinguishable.",
        "",
        "| method | reference | " + " | ".join(targets) + " |",
        "|---|---|" + "---|" * len(targets),
    ]
    for name in methods:
        for reference in ("base", "mixing"):
            cells = [equal_step_cell(rows, t, name, reference) for t in targets]
            lines.append(f"| {name} | {reference} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def status_lines(preset, rows, expected: Sequence[str]) -> list[str]:
    """Whether the grid has finished: every (target, ``expected`` row name, seed) of the
    preset has a row. Otherwise the count of finished rows and, per target, the seeds that
    have every row, so a partial report cannot be read as the study's result."""
    finished = {(r["target"], r["method"], r["seed"]) for r in rows}
    planned = [(t, name, s) for t in preset.targets for name in expected for s in preset.seeds]
    missing = [key for key in planned if key not in finished]
    if not missing:
        return [f"Status: complete ({len(planned)} rows: every target, method and seed).", ""]
    complete = {
        target: [s for s in preset.seeds if all((target, n, s) in finished for n in expected)]
        for target in preset.targets
    }
    seeds = "; ".join(
        f"{target}: {', '.join(map(str, done)) if done else 'none'}"
        for target, done in complete.items()
    )
    return [
        f"**Status: partial, the grid has not finished.** {len(planned) - len(missing)} of "
        f"{len(planned)} rows (target, method or frontier point, seed) have finished; seeds "
        f"with every row finished: {seeds}. A cell is a result only once its n equals the "
        f"{len(preset.seeds)} seeds.",
        "",
    ]


def markdown(preset, rows, recipe, flops, command: str, expected: Sequence[str]) -> str:
    """The report: header, status (``status_lines`` against the ``expected`` row names),
    the recipe, one multiplier table per target and the FLOPs per step of each variant."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Effective compute multipliers",
        "",
        f"Preset `{preset.size}` model, {preset.steps} steps of b = {preset.batch_size}, "
        f"k = {preset.downsampling}, seeds {list(preset.seeds)}, targets "
        f"{list(preset.targets)}. Written {now} on {platform.node() or 'this machine'} "
        f"({platform.machine()}, jax {jax.__version__}, {jax.default_backend()}).",
        "",
        f"Command: `{command}`",
        "",
        *status_lines(preset, rows, expected),
        "A multiplier is the FLOPs at which the frontier (base or mixing trained at 1x-8x "
        "base's FLOPs, each run annealed to its own end) reaches the method's target test "
        "bpb, over the method's training FLOPs; above 1 the method buys more than its "
        "compute would as plain training. Cells: geometric mean over seeds [95% t interval "
        "of the log] (n seeds); `<` / `>`: some seed fell below the frontier's cheapest / "
        "beyond its dearest point and was extrapolated along the nearest segment. Rows "
        "`base_x2`... are the frontier points themselves. Break-even: base's fine-tuned "
        "frontier at the method's FLOPs (seed mean), the bpb the method had to reach to "
        "pay for its compute.",
        "",
        *summary_lines(preset, rows),
        *recipe_lines(recipe),
    ]
    for target in preset.targets:
        if _by(rows, target=target):
            lines += target_lines(target, rows)
    lines += equal_step_lines(preset, rows)
    lines += ["## FLOPs per step (XLA cost analysis, x base)", ""]
    lines += ["| variant | warm-up | selection | selection + outer update |", "|---|---|---|---|"]
    base = flops.get("base", {}).get("warmup")
    for name, phases in flops.items():
        cells = [
            f"{phases[p] / base:.2f}" if base and p in phases else "-"
            for p in ("warmup", "select", "select_outer")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _log_x(ax) -> None:
    """Log x axis with plain tick labels at the frontier's budgets."""
    ax.set_xscale("log")
    ax.set_xticks([0.5, 1, 2, 4, 8, 16])
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plots(out: pathlib.Path, preset, rows) -> None:
    """``<target>_frontier.png`` per target and ``amortisation_frontier.png``."""
    colours = family_colours([r for r in rows if not r["frontier"]])
    for target in preset.targets:
        target_rows = _by(rows, target=target)
        if not target_rows:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharex=True)
        for ax, column, title in zip(
            axes, ("target_bpb", "target_bpb_finetuned"), ("before", "after")
        ):
            for frontier, style in zip(frontiers(rows), FRONTIER_STYLES):
                points = {}
                for r in _by(target_rows, frontier=frontier):
                    points.setdefault(r["flops_vs_base"], []).append(r[column])
                if points:
                    xs = sorted(points)
                    ax.plot(xs, [statistics.fmean(points[x]) for x in xs], style, label=frontier)
            points: dict[str, list[tuple[float, float, str]]] = {}
            for name in _names(target_rows, target):
                group = [r for r in _by(target_rows, method=name) if not r["frontier"]]
                if group:
                    x = statistics.fmean(r["flops_vs_base"] for r in group)
                    y = statistics.fmean(r[column] for r in group)
                    points.setdefault(amortisation_family(name), []).append((x, y, name))
            plot_families(ax, points, colours)
            _log_x(ax)
            ax.set_xlabel("training FLOPs / base's at the preset's steps")
            ax.set_ylabel("target test bpb (mean over seeds)")
            ax.set_title(f"{target}: {title} fine-tuning")
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / f"{target}_frontier.png", dpi=110)
        plt.close(fig)
    amortisation_plot(out, preset, [r for r in rows if not r["frontier"]])


def amortisation_family(name: str) -> str:
    """The variants of one scorer that differ only in how often the outer update runs
    (``anograd``, ``anograd_every4``... -> ``anograd``; ``anograd_every8_smallcnn`` ->
    ``anograd_smallcnn``): joined by a line on the amortisation frontier."""
    return re.sub(r"_every\d+", "", name)


def family_colours(selection) -> dict[str, Any]:
    """One colour per amortisation family, the same in every panel and plot."""
    families = dict.fromkeys(amortisation_family(r["method"]) for r in selection)
    return {f: plt.cm.tab20(i % 20) for i, f in enumerate(families)}


def plot_families(ax, points: Mapping[str, list[tuple[float, float, str]]], colours) -> None:
    """Each family's ``(x, y, name)`` points in its colour, joined in order of x when it has
    several (then each is labelled with what sets it apart, e.g. ``every16``)."""
    for family, members in points.items():
        members = sorted(members)
        xs, ys, names = zip(*members)
        ax.plot(xs, ys, "o-" if len(members) > 1 else "o", color=colours[family], label=family)
        if len(members) == 1:
            continue
        for x, y, name in members:
            setting = re.search(r"every\d+", name)
            ax.annotate(
                setting.group(0) if setting else "every1",
                (x, y),
                fontsize=6,
                color=colours[family],
                xytext=(3, 3),
                textcoords="offset points",
            )


def amortisation_plot(out: pathlib.Path, preset, selection) -> None:
    """``amortisation_frontier.png``: per target, each method's multiplier against base's
    frontier after fine-tuning (geometric mean over seeds) at its training FLOPs, the
    variants of a family (``amortisation_family``) joined in order of FLOPs."""
    targets = [t for t in preset.targets if _by(selection, target=t)]
    if not targets:
        return
    colours = family_colours(selection)
    fig, axes = plt.subplots(
        1, len(targets), figsize=(5.5 * len(targets), 5), sharey=True, squeeze=False
    )
    for ax, target in zip(axes[0], targets):
        points: dict[str, list[tuple[float, float, str]]] = {}
        for name in _names(selection, target):
            group = _by(selection, target=target, method=name)
            values = [r["multiplier_base_finetuned"] for r in group]
            if values and all(isinstance(v, (int, float)) for v in values):
                x = statistics.fmean(r["flops_vs_base"] for r in group)
                y = stats.ratio_interval(values).mean
                points.setdefault(amortisation_family(name), []).append((x, y, name))
        plot_families(ax, points, colours)
        ax.axhline(1.0, color="grey", lw=1)
        _log_x(ax)
        ax.set_yscale("log")
        ax.set_xlabel("training FLOPs / base's (FLOPs per step x steps)")
        ax.set_title(f"{target}: amortisation frontier")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("effective compute multiplier (x base, after FT)")
    fig.tight_layout()
    fig.savefig(out / "amortisation_frontier.png", dpi=110)
    plt.close(fig)
