"""Runs the sweep of a config file: one training run (one workdir) per ``add(...)`` call
of the file's ``sweep(add, arg)`` (the big_vision pattern), locally or as command lines
for a cluster launcher, and a results table.

    # every registered method that runs on its own (methods.names(needs_other_runs=False))
    # on every embedded target task (sequentially)
    python experiments/sweep.py --config=configs/default.py --workdir=/tmp/ad_sweep

    # ANOGRAD's outer learning rate x temperature, tiny model, 3 runs at a time, 100 steps
    python experiments/sweep.py --config=configs/default.py:runlocal,sweep=anograd_grid \\
        --workdir=/tmp/ad_anograd_grid --parallel 3 --set train.steps=100

    # print one shell-quoted `python -m adaptive_data.main ...` line per run, to run from
    # the repository root (e.g. one cluster job per line); runs nothing
    python experiments/sweep.py --config=configs/default.py:sweep=anograd_grid \\
        --workdir=/scratch/ad_grid --dry_run > /tmp/ad_grid_jobs.txt

    # rebuild the results table of whatever has finished so far
    python experiments/sweep.py --config=configs/default.py --workdir=/tmp/ad_sweep \\
        --collect_only

    # a part of the grid: five methods on the python task (the README's comparison table)
    python experiments/sweep.py --config=configs/default.py --workdir=/tmp/cmp_new \\
        --only method=base,anograd,dds,soba,l2rw --only data.task=python

``--config`` is the string the driver gets (``PATH[:ARG]``); ``sweep(add, arg)`` receives
the same ``ARG`` and calls ``add(**overrides)`` once per run with dotted config keys, e.g.
``add(method="anograd", **{"outer.learning_rate": 1e-3})``. Every run gets the driver's
``--config=PATH[:ARG]``, its overrides as ``--config.KEY=VALUE`` flags, then the
``--set KEY=VALUE`` overrides shared by all runs (and ``--tfds_data_dir``);
``--only KEY=V1,V2`` keeps the runs that set KEY to one of the values. Each run's
workdir is ``ROOT/<its overrides>`` (``method=anograd, data.task=python`` ->
``method-anograd__data.task-python``). Before anything starts, every run's config is built
(an unknown key or a badly typed value fails here, naming the key) and its command line is
parsed back with the driver's flag parser and checked to give exactly that config.

A run is finished when ``ROOT/<name>/metrics.jsonl`` has a row at its ``train.steps``;
finished runs are skipped, any other run is (re)started, and the driver resumes it from
its last checkpoint. Each run's output goes to ``ROOT/<name>/sweep.log``. A failed run
does not stop the others; the exit code is 1 if any failed. At the end (or with
``--collect_only``) ``ROOT/sweep_results.csv`` and ``ROOT/sweep_results.md`` get one row
per run: the keys whose values vary across runs, the workdir (under ROOT), its status,
then the final ``step``, ``eval/target_bpb``, ``eval/generic_bpb`` and
``eval/target_valid_bpb``, the best ``eval/target_valid_bpb`` over the run, and the mean
``select/target_share`` and ``select/pool_target_share`` over the logged steps after the
selection warm-up (the selected examples' target share next to the big batches'; empty
for methods that select nothing). Metrics are empty unless the run is finished.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import hashlib
import math
import os
import pathlib
import re
import shlex
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import ml_collections  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from ml_collections.config_flags import tuple_parser  # noqa: E402

from adaptive_data import command_line, config_args, metrics  # noqa: E402

DRIVER = command_line.DRIVER_MODULE
RESULTS_STEM = "sweep_results"
LOG_NAME = "sweep.log"
# Final metrics of each run (from its row at train.steps), then the best target_valid.
FINAL_METRICS = ("step", "eval/target_bpb", "eval/generic_bpb", "eval/target_valid_bpb")
BEST_METRIC = "eval/target_valid_bpb"
BEST_COLUMN = f"best {BEST_METRIC}"
# Means over the logged steps after select.warmup_steps: the selected examples' target
# share and the big batches'.
SHARE_METRICS = ("select/target_share", "select/pool_target_share")
SHARE_COLUMNS = tuple(f"mean {key}" for key in SHARE_METRICS)
METRIC_COLUMNS = (*FINAL_METRICS, BEST_COLUMN, *SHARE_COLUMNS)
# How each field type of a config is read from a `--config.KEY=VALUE` flag (as the
# driver's ml_collections config flag reads it).
_FLAG_PARSERS = {
    bool: flags.BooleanParser(),
    int: flags.IntegerParser(),
    float: flags.FloatParser(),
    str: flags.ArgumentParser(),
    tuple: tuple_parser.TupleParser(),
}


@dataclasses.dataclass
class Run:
    """One run of the sweep."""

    name: str  # its workdir under the sweep's root
    overrides: dict[str, Any]  # what sweep() passed to add(), in order
    config: ml_collections.ConfigDict  # the driver's config: spec + overrides + --set
    command: list[str]  # argv of the driver (argv[0]: the Python interpreter)
    workdir: pathlib.Path


# ------------------------------------------------------------------------- expansion


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"PATH[:ARG]"`` -> (PATH, ARG or None)."""
    path, sep, arg = str(spec).partition(":")
    return path, (arg if sep else None)


def portable_spec(spec: str) -> str:
    """``spec`` with its path relative to the repository root (where the driver runs) if
    the file is inside it, else absolute."""
    path, arg = split_spec(spec)
    resolved = config_args.resolve_config_path(path).resolve()
    try:
        path = str(resolved.relative_to(REPO_ROOT))
    except ValueError:
        path = str(resolved)
    return path if arg is None else f"{path}:{arg}"


def expand(spec: str) -> list[dict[str, Any]]:
    """The overrides of each run of the config file's ``sweep(add, arg)``."""
    path, arg = split_spec(spec)
    module = config_args.load_config_module(path)
    if not callable(getattr(module, "sweep", None)):
        raise ValueError(f"Config file {path!r} defines no sweep(add, arg) function.")
    runs: list[dict[str, Any]] = []

    def add(**overrides):
        for key, value in overrides.items():
            if value is None:
                raise ValueError(
                    f"sweep() of {path!r} sets {key}=None, which no command-line flag can "
                    "pass; leave the key out instead."
                )
        runs.append(dict(overrides))

    module.sweep(add, arg)
    if not runs:
        raise ValueError(f"sweep() of {spec!r} added no runs.")
    return runs


def keep_only(
    grid: Sequence[dict[str, Any]], only: Sequence[str], spec: str = ""
) -> list[dict[str, Any]]:
    """The runs of ``grid`` that set each KEY of ``only`` (``["KEY=V1,V2", ...]``) to one
    of its values (compared as the flag values ``format_value`` writes)."""
    kept = list(grid)
    for item in only:
        key, sep, values = item.partition("=")
        key = key.strip().removeprefix("config.")
        wanted = {v.strip() for v in values.split(",") if v.strip()}
        if not sep or not key or not wanted:
            raise ValueError(f"--only {item!r}: expected KEY=V1[,V2...], e.g. method=base,anograd.")
        known = {format_value(run[key]) for run in grid if key in run}
        if not known:
            raise ValueError(f"--only {item!r}: no run of the sweep {spec} sets {key!r}.")
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(
                f"--only {item!r}: no run of the sweep {spec} sets {key}={unknown}; "
                f"its values are {sorted(known)}."
            )
        kept = [run for run in kept if key in run and format_value(run[key]) in wanted]
    if not kept:
        raise ValueError(f"No run of the sweep {spec} matches all of --only {list(only)}.")
    return kept


def format_value(value: Any) -> str:
    """``value`` as a ``--config.KEY=VALUE`` flag value the driver reads back as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    raise ValueError(f"Cannot pass {value!r} ({type(value).__name__}) as a config flag.")


def run_name(overrides: dict[str, Any]) -> str:
    """A readable file name of ``overrides``: ``{"method": "anograd", "data.task":
    "python"}`` -> ``"method-anograd__data.task-python"`` (``"default"`` if empty)."""
    if not overrides:
        return "default"
    text = "__".join(f"{key}-{format_value(value)}" for key, value in overrides.items())
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"
    if len(name) > 200:  # file names are limited to 255 bytes
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        name = f"{name[:180]}__{digest}"
    return name


def _field_type(config: ml_collections.ConfigDict, dotted: str) -> type:
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise KeyError(f"Unknown config key {dotted!r}.")
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise KeyError(f"Unknown config key {dotted!r}.")
    return node.get_type(leaf)


def parse_set(items: Sequence[str], config: ml_collections.ConfigDict) -> dict[str, str]:
    """``["train.steps=100", ...]`` -> ``{"train.steps": "100", ...}`` (the values as
    given; the key must exist in ``config`` and the value parse as its type)."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("config.")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=100.")
        typed_value(config, key, value)  # fails early on an unknown key or a bad value
        parsed[key] = value
    return parsed


def typed_value(config: ml_collections.ConfigDict, key: str, text: str) -> Any:
    """``text`` read as the type of ``config.<key>``, as the driver's flag parser does."""
    field_type = _field_type(config, key)
    parser = _FLAG_PARSERS.get(field_type)
    if parser is None:
        raise ValueError(f"Config key {key!r} of type {field_type.__name__} can't be set.")
    try:
        return parser.parse(text)
    except ValueError as e:
        raise ValueError(f"Config key {key!r}: bad value {text!r}: {e}") from None


def driver_command(
    spec: str, workdir: str, flag_overrides: dict[str, str], python: str = sys.executable
) -> list[str]:
    """The driver's argv for one run (``flag_overrides``: key -> flag value text)."""
    return command_line.driver_command(spec, workdir, overrides=flag_overrides, python=python)


def parse_command(command: Sequence[str]) -> ml_collections.ConfigDict:
    """The config the driver builds from ``command`` (its ``--config`` flags), parsed with
    a fresh ml_collections config flag; a relative config path is taken from the
    repository root (the driver's working directory)."""
    args = list(command[command.index(DRIVER) + 1 :]) if DRIVER in command else list(command)
    argv = [DRIVER]
    for item in args:
        if item.startswith("--config="):
            path, arg = split_spec(item.removeprefix("--config="))
            if not os.path.isabs(path):
                path = str(REPO_ROOT / path)
            item = f"--config={path}" + ("" if arg is None else f":{arg}")
        if item.startswith("--config"):
            argv.append(item)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "Config file.", flag_values=values, lock_config=True, sys_argv=argv
    )
    with warnings.catch_warnings():  # ml_collections loads the file with load_module()
        warnings.simplefilter("ignore", DeprecationWarning)
        values(argv)
    return values.config


def plan(
    spec: str,
    root: str | pathlib.Path,
    sets: Sequence[str] = (),
    *,
    only: Sequence[str] = (),
    tfds_data_dir: str | None = None,
    python: str = sys.executable,
) -> list[Run]:
    """Every run of the sweep (those ``only`` keeps, see ``keep_only``), validated: its
    config built (unknown keys and bad values raise, naming the key), its name unique,
    and its command line parsed back by the driver's flag parser to exactly that config."""
    spec = portable_spec(spec)
    root = pathlib.Path(root).expanduser().absolute()
    base = config_args.load_config(spec)
    shared = parse_set(sets, base)
    if tfds_data_dir:
        shared["data.tfds_data_dir"] = os.path.abspath(os.path.expanduser(tfds_data_dir))
    runs: list[Run] = []
    seen: dict[str, dict[str, Any]] = {}
    for overrides in keep_only(expand(spec), only, spec):
        name = run_name(overrides)
        if name in seen:
            raise ValueError(
                f"Two runs of the sweep have the same name {name!r}: {seen[name]} and {overrides}."
            )
        seen[name] = overrides
        clash = sorted(set(overrides) & set(shared))
        if clash:
            raise ValueError(f"--set {clash} would override keys that the sweep itself varies.")
        try:
            config = config_args.override(config_args.load_config(spec), overrides)
            config = config_args.override(
                config, {key: typed_value(config, key, value) for key, value in shared.items()}
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"Run {name!r} ({overrides}): {e}") from e
        flag_values = {key: format_value(value) for key, value in overrides.items()}
        flag_values.update(shared)
        command = driver_command(spec, str(root / name), flag_values, python=python)
        if parse_command(command).to_dict() != config.to_dict():
            raise ValueError(
                f"Run {name!r}: its command line does not reproduce its config: "
                f"{shlex.join(command)}"
            )
        runs.append(Run(name, dict(overrides), config, command, root / name))
    return runs


# ------------------------------------------------------------------------- running


def final_row(run: Run) -> dict[str, Any] | None:
    """The metrics row at the run's last step, if it got there."""
    steps = int(run.config.train.steps)
    rows = metrics.read_metrics(run.workdir, missing_ok=True)
    rows = [row for row in rows if row["step"] == steps]
    return rows[-1] if rows else None


def is_finished(run: Run) -> bool:
    return final_row(run) is not None


def launch(run: Run) -> int:
    """Runs the driver for ``run`` from the repository root, its output appended to
    ``workdir/sweep.log``; returns the exit code."""
    run.workdir.mkdir(parents=True, exist_ok=True)
    with (run.workdir / LOG_NAME).open("a") as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(run.command)}\n")
        log.flush()
        return subprocess.run(
            run.command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode


def run_all(runs: Sequence[Run], parallel: int = 1, *, launcher=None) -> dict[str, str]:
    """Runs the unfinished runs, up to ``parallel`` at a time; returns each run's status:
    ``skipped``, ``finished`` or ``failed``."""
    launcher = launcher or launch
    total = len(runs)
    lock = threading.Lock()
    status: dict[str, str] = {}

    def say(index: int, run: Run, message: str) -> None:
        with lock:
            print(f"[{index}/{total}] {run.name}: {message}", flush=True)

    def one(index: int, run: Run) -> None:
        say(index, run, "started")
        start = time.time()
        try:
            code = launcher(run)
        except Exception as e:  # one broken run must not stop the others
            code = f"{type(e).__name__}: {e}"
        if code == 0 and is_finished(run):
            status[run.name] = "finished"
            say(index, run, f"finished in {time.time() - start:.0f}s")
        else:
            status[run.name] = "failed"
            why = (
                f"exit code {code}" if code != 0 else f"no metrics at step {run.config.train.steps}"
            )
            say(index, run, f"FAILED ({why}; see {run.workdir / LOG_NAME})")

    todo = []
    for index, run in enumerate(runs, 1):
        if is_finished(run):
            status[run.name] = "skipped"
            say(index, run, "skipped (finished)")
        else:
            todo.append((index, run))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for future in [pool.submit(one, index, run) for index, run in todo]:
            future.result()
    return status


# ------------------------------------------------------------------------- results


def _config_value(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def varying_keys(runs: Sequence[Run]) -> list[str]:
    """The override keys whose config values differ between runs, in order of first use
    (all of them if nothing varies)."""
    keys = list(dict.fromkeys(key for run in runs for key in run.overrides))
    varying = [
        key for key in keys if len({repr(_config_value(run.config, key)) for run in runs}) > 1
    ]
    return varying or keys


def results(runs: Sequence[Run], status: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per run: its varying keys, workdir name, status and final metrics."""
    status = status or {}
    keys = varying_keys(runs)
    table = []
    for run in runs:
        row: dict[str, Any] = {key: _config_value(run.config, key) for key in keys}
        row["workdir"] = run.name
        final = final_row(run)
        if final is not None:
            row["status"] = "finished"
        elif status.get(run.name) == "failed":
            row["status"] = "failed"
        else:
            row["status"] = "unfinished" if run.workdir.is_dir() else "not started"
        for key in FINAL_METRICS:
            row[key] = final.get(key) if final else None
        rows = metrics.read_metrics(run.workdir, missing_ok=True) if final else []
        best = [r[BEST_METRIC] for r in rows if _is_number(r.get(BEST_METRIC))]
        row[BEST_COLUMN] = min(best) if best else None
        shares = metrics.mean_after(rows, SHARE_METRICS, int(run.config.select.warmup_steps))
        row.update(zip(SHARE_COLUMNS, shares.values()))
        table.append(row)
    return table


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value: Any, *, short: bool = False) -> str:
    """A table cell; ``short``: floats to 4 decimals (the metrics in markdown)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if short else repr(value)
    if isinstance(value, (bool, int, str, tuple, list)):
        return format_value(value)
    return str(value)


def write_results(table: Sequence[dict[str, Any]], root: pathlib.Path) -> list[pathlib.Path]:
    """Writes ``root/sweep_results.csv`` and ``.md``; returns their paths."""
    columns = list(table[0]) if table else ["workdir", "status", *METRIC_COLUMNS]
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / f"{RESULTS_STEM}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in table:
            writer.writerow([_cell(row.get(c)) for c in columns])
    md_path = root / f"{RESULTS_STEM}.md"
    md_path.write_text(markdown_table(table, columns) + "\n")
    return [csv_path, md_path]


def markdown_table(table: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        cells = (_cell(row.get(c), short=c in METRIC_COLUMNS).replace("|", "\\|") for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Runs the sweep(add, arg) of a config file (see the module docstring).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", required=True, help="PATH[:ARG], as given to the driver's --config."
    )
    parser.add_argument("--workdir", required=True, help="Root: one sub-directory per run.")
    parser.add_argument("--parallel", type=int, default=1, help="Runs at a time (local).")
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="Print one driver command line per run (run them from the repository root); "
        "run nothing.",
    )
    parser.add_argument("--collect_only", action="store_true", help="Only write the results table.")
    parser.add_argument(
        "--tfds_data_dir", default=None, help="Passed as --config.data.tfds_data_dir."
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Config override for every run, e.g. --set train.steps=100 (repeatable).",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="Keep the runs that set KEY to one of the values, e.g. --only method=base,anograd "
        "(repeatable: all must hold).",
    )
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be at least 1.")
    if args.dry_run and args.collect_only:
        parser.error("--dry_run and --collect_only exclude each other.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = plan(
        args.config,
        args.workdir,
        args.sets,
        only=args.only,
        tfds_data_dir=args.tfds_data_dir,
        python="python" if args.dry_run else sys.executable,
    )
    if args.dry_run:
        for run in runs:
            print(shlex.join(run.command), flush=True)
        return 0
    root = pathlib.Path(args.workdir).expanduser().absolute()
    status = {} if args.collect_only else run_all(runs, args.parallel)
    table = results(runs, status)
    paths = write_results(table, root)
    print(markdown_table(table, list(table[0])))
    counts = {s: list(status.values()).count(s) for s in ("finished", "skipped", "failed")}
    if not args.collect_only:
        print(
            f"{len(runs)} runs: {counts['finished']} finished, {counts['skipped']} skipped "
            f"(already finished), {counts['failed']} failed."
        )
    print("Results: " + ", ".join(str(p) for p in paths))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
