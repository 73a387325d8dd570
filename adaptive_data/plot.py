"""Curves of training runs from their ``metrics.jsonl`` (PNG files, matplotlib Agg backend).

Every run writes ``WORKDIR/metrics.jsonl`` (one JSON object per logged step, see
``adaptive_data.metrics``) and ``WORKDIR/config.json``. From the command line:

    python -m adaptive_data.plot /tmp/ad_base /tmp/ad_anograd --out /tmp/plots
    python -m adaptive_data.plot /tmp/ad_* --out /tmp/plots --keys train/loss,eval/target_bpb
    python -m adaptive_data.plot /tmp/ad_* --out /tmp/plots --config configs/default.py

writes one PNG per metric (one line per run, e.g. ``eval_target_bpb.png``) and, for each
run of a selection method, ``domain_shares_<label>.png`` (stacked per-domain shares of the
selected examples). With ``--config``, the config file's ``metrics(arg)`` (if it defines
one) names the default keys. From Python (scripts, notebooks):

    from adaptive_data import metrics, plot
    rows = metrics.read_metrics("/tmp/ad_base")
    plot.plot_metric({"base": rows}, "eval/target_bpb", "/tmp/target_bpb.png")
    plot.plot_domain_shares(metrics.read_metrics("/tmp/ad_anograd"), "/tmp/shares.png")
    plot.plot_runs(["/tmp/ad_base", "/tmp/ad_anograd"], "/tmp/plots")
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from adaptive_data import metrics  # noqa: E402

# Curves plotted by default (those of them that some run logged).
DEFAULT_KEYS = (
    "train/loss",
    "eval/target_bpb",
    "eval/generic_bpb",
    "eval/target_valid_bpb",
    "select/target_share",
)
DOMAIN_SHARE_PREFIX = "select/domain_share/"
POOL_TARGET_SHARE = "select/pool_target_share"

PathLike = str | pathlib.Path
Rows = Sequence[Mapping[str, Any]]
XValues = Callable[[str, list[Mapping[str, Any]]], Sequence[float]]


def run_label(workdir: PathLike) -> str:
    """``"<method> (<data.task>)"`` from ``workdir/config.json``, else the directory name."""
    workdir = pathlib.Path(workdir).expanduser()
    name = workdir.resolve().name or str(workdir)
    try:
        config = json.loads((workdir / "config.json").read_text())
    except (OSError, ValueError):
        return name
    if not isinstance(config, dict) or not config.get("method"):
        return name
    data = config.get("data")
    task = data.get("task") if isinstance(data, dict) else None
    return f"{config['method']} ({task})" if task else str(config["method"])


def safe_name(text: str) -> str:
    """A file-name stem for ``text``: ``"eval/target_bpb"`` -> ``"eval_target_bpb"``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "metric"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _points(rows: Rows, key: str) -> list[Mapping[str, Any]]:
    """The rows holding a scalar number under ``key``."""
    return [row for row in rows if _is_number(row.get(key))]


def _sparse(key: str, runs: Mapping[str, Rows]) -> bool:
    """Whether ``key`` is logged only on some steps (evaluation): its curve gets markers."""
    if key.startswith("eval/"):
        return True
    return any(0 < len(_points(rows, key)) < 0.5 * len(rows) for rows in runs.values())


def _save(fig, path: PathLike) -> pathlib.Path:
    path = pathlib.Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_metric(
    runs: Mapping[str, Rows],
    key: str,
    path: PathLike,
    *,
    x: str = "step",
    x_values: XValues | None = None,
    xlabel: str | None = None,
    title: str | None = None,
    logx: bool = False,
) -> bool:
    """One line per run (label -> metric rows) of ``key`` against ``x`` into a PNG.

    ``x_values(label, rows)``, if given, maps a run's rows holding ``key`` to the x value of
    each (e.g. cumulative FLOPs at each row's step) instead of ``row[x]``. Metrics logged on
    evaluation steps only are drawn with markers. Returns False (and writes nothing) when
    no run has ``key``.
    """
    curves = {}
    for label, rows in runs.items():
        points = _points(rows, key)
        if not points:
            continue
        if x_values is not None:
            xs = [float(v) for v in x_values(label, points)]
            if len(xs) != len(points):
                raise ValueError(
                    f"x_values gave {len(xs)} values for the {len(points)} rows "
                    f"of {key!r} of run {label!r}."
                )
            ys = [float(row[key]) for row in points]
        else:
            pairs = [(float(row[x]), float(row[key])) for row in points if _is_number(row.get(x))]
            xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        if xs:
            curves[label] = (xs, ys)
    if not curves:
        return False
    marker = "o" if _sparse(key, runs) else None
    # Ten colours, then the same colours dashed, then dotted: every run stays distinct.
    cmap = plt.get_cmap("tab10")
    styles = ("-", "--", ":", "-.")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for i, (label, (xs, ys)) in enumerate(curves.items()):
            ax.plot(
                xs,
                ys,
                marker=marker,
                markersize=4,
                linewidth=1.5,
                label=label,
                color=cmap(i % 10),
                linestyle=styles[(i // 10) % len(styles)],
            )
        if logx and any(v > 0 for xs, _ in curves.values() for v in xs):
            ax.set_xscale("log")
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(key)
        ax.set_title(title or key)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    except BaseException:
        plt.close(fig)
        raise
    _save(fig, path)
    return True


def _domains(rows: Rows, prefix: str) -> list[str]:
    """Domain names under ``prefix``, in order of first appearance."""
    names: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(prefix) and len(key) > len(prefix) and _is_number(value):
                names.setdefault(key[len(prefix) :])
    return list(names)


def plot_domain_shares(
    rows: Rows, path: PathLike, *, title: str | None = None, prefix: str = DOMAIN_SHARE_PREFIX
) -> bool:
    """Stacked area of the per-domain shares ``<prefix><domain>`` over steps into a PNG.

    When logged, ``select/pool_target_share`` (the target domain's share of the pool) is a
    dashed line for comparison. Returns False (and writes nothing) without such keys.
    """
    domains = _domains(rows, prefix)
    if not domains:
        return False
    points = [
        row
        for row in rows
        if _is_number(row.get("step")) and any(_is_number(row.get(prefix + d)) for d in domains)
    ]
    if not points:
        return False
    steps = [float(row["step"]) for row in points]
    shares = [
        [
            float(row.get(prefix + d, 0.0)) if _is_number(row.get(prefix + d)) else 0.0
            for row in points
        ]
        for d in domains
    ]
    cmap = plt.get_cmap("tab10" if len(domains) <= 10 else "tab20")
    colors = [cmap(i % cmap.N) for i in range(len(domains))]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        ax.stackplot(steps, shares, labels=domains, colors=colors, alpha=0.85)
        pool = [
            (float(row["step"]), float(row[POOL_TARGET_SHARE]))
            for row in rows
            if _is_number(row.get("step")) and _is_number(row.get(POOL_TARGET_SHARE))
        ]
        if pool:
            ax.plot(
                [p[0] for p in pool],
                [p[1] for p in pool],
                linestyle="--",
                color="black",
                linewidth=1.5,
                label="pool target share",
            )
        top = max(sum(column) for column in zip(*shares))
        ax.set_ylim(0.0, max(1.0, top) if math.isfinite(top) else 1.0)
        if len(steps) > 1:
            ax.set_xlim(min(steps), max(steps))
        ax.set_xlabel("step")
        ax.set_ylabel("share of selected examples")
        ax.set_title(title or "selected domain shares")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    except BaseException:
        plt.close(fig)
        raise
    _save(fig, path)
    return True


def _unique_labels(workdirs: Sequence[PathLike]) -> list[str]:
    """Run labels, with the directory name appended where two runs share one."""
    plain = [run_label(w) for w in workdirs]
    labels = [
        f"{label} [{pathlib.Path(w).expanduser().resolve().name}]"
        if plain.count(label) > 1
        else label
        for label, w in zip(plain, workdirs)
    ]
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # still equal (same directory name): number them
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    return labels


def plot_runs(
    workdirs: Sequence[PathLike], out_dir: PathLike, keys: Sequence[str] | None = None
) -> list[pathlib.Path]:
    """Plots a set of runs into ``out_dir``: one ``<key>.png`` per metric key (one line per
    run; default keys: those of ``DEFAULT_KEYS`` some run logged) and
    ``domain_shares_<label>.png`` for each run with per-domain selected shares.

    Returns the paths written.
    """
    out_dir = pathlib.Path(out_dir).expanduser()
    runs = dict(zip(_unique_labels(workdirs), (metrics.read_metrics(w) for w in workdirs)))
    if keys is None:
        logged = {key for rows in runs.values() for row in rows for key in row}
        keys = [key for key in DEFAULT_KEYS if key in logged]
    written = []
    for key in dict.fromkeys(keys):
        path = out_dir / f"{safe_name(key)}.png"
        if plot_metric(runs, key, path):
            written.append(path)
    for label, rows in runs.items():
        path = out_dir / f"domain_shares_{safe_name(label)}.png"
        if plot_domain_shares(rows, path, title=f"{label}: selected domain shares"):
            written.append(path)
    return written


def config_metrics(spec: str) -> list[str] | None:
    """``metrics(arg)`` of the config file ``"PATH[:ARG]"``, or None if it defines none."""
    from adaptive_data import config_args

    path, _, arg = spec.partition(":")
    module = config_args.load_config_module(path)
    metrics_fn = getattr(module, "metrics", None)
    return None if metrics_fn is None else list(metrics_fn(arg or None))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adaptive_data.plot",
        description="Plot the metrics.jsonl curves of one or more training runs as PNGs.",
    )
    parser.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="run workdirs")
    parser.add_argument("--out", required=True, help="directory of the PNG files")
    parser.add_argument(
        "--keys",
        default=None,
        help="comma-separated metric keys (default: the config's metrics() "
        f"with --config, else those of {', '.join(DEFAULT_KEYS)})",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="PATH[:ARG]",
        help="config file whose metrics(arg) gives the default --keys",
    )
    args = parser.parse_args(argv)
    keys = None
    if args.keys:
        keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    elif args.config:
        keys = config_metrics(args.config)
    try:
        written = plot_runs(args.workdirs, args.out, keys)
    except (FileNotFoundError, ValueError) as error:  # no metrics file, or a damaged one
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    if not written:
        print(
            f"No curves written: none of the runs logged any of {keys or list(DEFAULT_KEYS)}.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
