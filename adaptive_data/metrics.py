"""Metric logging: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard.

Only process 0 writes. On resume from step s, lines of steps > s (written after the
checkpoint the run resumes from) are dropped, so a resumed run's file equals an
uninterrupted run's; every earlier line is kept. ``read_metrics`` is the one reader of
the file (driver, plots, sweep, benchmarks, tests).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import re
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from adaptive_data import faults


def to_python(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


METRICS_FILE = "metrics.jsonl"


def _parse_row(line: str) -> dict[str, Any] | None:
    """The JSON object of one metrics line, or None unless it is an object with a step."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and "step" in row else None


def read_metrics(workdir: str | os.PathLike, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """The rows of ``workdir/metrics.jsonl``, in the order written.

    A last line that is not a JSON object with a ``step`` was torn by a kill in the
    middle of a write (rows are appended whole, so only the last one can be); it is left
    out, as a resumed run drops it. Blank lines are skipped.

    Raises:
      FileNotFoundError: the file is absent (unless ``missing_ok``: then ``[]``).
      ValueError: a line before the last one is not a metrics row (the file was edited
        or damaged); names the file and line.
    """
    path = pathlib.Path(workdir).expanduser() / METRICS_FILE
    if not path.is_file():
        if missing_ok:
            return []
        raise FileNotFoundError(
            f"No metrics file {str(path)!r}: {str(workdir)!r} is not the workdir of a training "
            "run yet. Train first (python -m adaptive_data.main --config=... "
            f"--workdir={workdir})."
        )
    text = path.read_text().splitlines()
    lines = [(number, line) for number, line in enumerate(text, 1) if line.strip()]
    rows = []
    for index, (number, line) in enumerate(lines):
        row = _parse_row(line)
        if row is not None:
            rows.append(row)
        elif index < len(lines) - 1:
            raise ValueError(
                f"{path}, line {number}: not a metrics row (a JSON object with a 'step'): "
                f"{line[:80]!r}. Only the last line can be torn by a kill; restore the file "
                "from a copy, or delete that line."
            )
    return rows


def mean_after(
    rows: list[Mapping[str, Any]], keys: tuple[str, ...], after_step: int
) -> dict[str, float | None]:
    """Mean of each key over the rows of steps > ``after_step`` that logged it (None if
    none did): e.g. the selected target share once the selection warm-up is over."""
    means = {}
    for key in keys:
        values = [float(r[key]) for r in rows if r["step"] > after_step and key in r]
        means[key] = sum(values) / len(values) if values else None
    return means


class MetricWriter:
    """Appends metrics to ``workdir/metrics.jsonl`` and TensorBoard event files."""

    def __init__(self, workdir: pathlib.Path, *, resume_step: int | None):
        self._active = jax.process_index() == 0
        self.path = workdir / METRICS_FILE
        self._tb = None
        if not self._active:
            return
        self._truncate_after(resume_step if resume_step is not None else -1)
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(workdir), flush_secs=30)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [row for row in read_metrics(self.path.parent) if row["step"] <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with faults.storage_errors(tmp, "the rewound metrics"):
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
            tmp.replace(self.path)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self._active:
            return
        row = {"step": int(step)}
        row.update({k: to_python(v) for k, v in sorted(metrics.items())})
        self._append(json.dumps(row) + "\n")
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(key, value, global_step=step)

    def _append(self, line: str) -> None:
        """Appends one whole line; on a failed write, cuts any partial line off again."""
        with faults.storage_errors(self.path, "a metrics row"):
            size = self.path.stat().st_size if self.path.exists() else 0
            try:
                with self.path.open("a") as f:
                    f.write(line)
            except OSError:
                with contextlib.suppress(OSError):
                    os.truncate(self.path, size)
                raise

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def name_domains(row: Mapping[str, Any], domains: tuple[str, ...]) -> dict[str, Any]:
    """Expands per-domain metrics into one scalar per domain name.

    A float[K] value under ``key`` becomes ``key/<domain>``; a key ``prefix/<k>`` with an
    integer domain index k (e.g. ``mixture/alpha/3``) becomes ``prefix/<domain>``.
    """
    named = {}
    for key, value in row.items():
        if np.ndim(value) == 1 and len(value) == len(domains):
            named.update({f"{key}/{d}": float(x) for d, x in zip(domains, value)})
            continue
        match = re.fullmatch(r"(.+)/(\d+)", key)
        if match and int(match.group(2)) < len(domains):
            key = f"{match.group(1)}/{domains[int(match.group(2))]}"
        named[key] = value
    return named


def check_finite(step: int, metrics: Mapping[str, Any]) -> None:
    """Raises FloatingPointError naming the step and quantity of a NaN/inf scalar."""
    for key, value in metrics.items():
        if np.ndim(value) == 0 and not math.isfinite(float(value)):
            raise FloatingPointError(
                f"Non-finite {key} = {float(value)} at step {step}. The run stopped; the last "
                "good checkpoint is kept in the workdir. Check the data, or start again in a "
                "new --workdir with a lower config.train.learning_rate (a resume refuses a "
                "changed learning rate, and an unchanged one would repeat the same steps)."
            )


# Metrics shown on the progress line (all of them go to metrics.jsonl and TensorBoard).
PROGRESS_KEYS = (
    "train/loss",
    "eval/",
    "select/target_share",
    "select/pool_target_share",
    "outer/objective",
)


class CollapseMonitor:
    """Warns once per kind when selection collapses onto few examples or one domain.

    Kinds: the sampling distribution's effective sample size is below ``min_ess`` times
    the model batch b (so few effective candidates that most of the b drawn are forced
    from a sliver of the probability mass); one domain makes up at least ``max_share`` of
    the selected examples; one domain has at least ``max_share`` of the mixture weights
    alpha. (An effective sample size somewhat below b is the normal state of a learned
    selection: on the scarce preset most weighting-model runs reach 10-15 of 64 with
    b = 16, so the default flags only a far smaller one.)
    """

    def __init__(
        self,
        batch_size: int,
        big_batch_size: int,
        max_share: float = 0.95,
        min_ess: float = 0.25,
    ):
        self._batch_size = batch_size
        self._big_batch_size = big_batch_size
        self._max_share = max_share
        self._min_ess = min_ess
        self._warned: set[str] = set()

    def check(self, step: int, row: Mapping[str, Any]) -> list[str]:
        """Messages of the collapses first seen in ``row`` (each kind only once per run)."""
        if row.get("select/active", 0.0) != 1.0:
            return []
        found = {}
        ess = row.get("select/ess_fraction")
        big = self._big_batch_size
        if ess is not None and ess * big < self._min_ess * self._batch_size:
            found["ess"] = (
                f"effective sample size of the selection weights is "
                f"{ess * big:.1f} examples of {big}, under {self._min_ess:g} of the batch "
                f"of {self._batch_size} (the draw is close to a fixed top b)"
            )
        for prefix, what in (
            ("select/domain_share/", "selected examples"),
            ("mixture/alpha/", "mixture weight"),
        ):
            shares = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
            if shares and max(shares.values()) >= self._max_share:
                domain = max(shares, key=shares.get)
                found[prefix] = f"{shares[domain]:.0%} of the {what} are from domain {domain!r}"
        messages = [
            f"Selection collapse at step {step}: {text}. Check select.temperature, "
            "outer.learning_rate or mixture.smoothing if this is not intended."
            for kind, text in found.items()
            if kind not in self._warned
        ]
        self._warned.update(found)
        return messages


class Progress:
    """One log line per call: step, steps/s over the last window, ETA, latest metrics."""

    def __init__(self, start_step: int, total_steps: int):
        self._total = total_steps
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def rate(self, step: int) -> float:
        """Steps per second since the previous call (resets the window)."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        return rate

    def restart_clock(self) -> None:
        """Starts the next window now (so evaluation and checkpoint time are not counted)."""
        self._last_time = time.perf_counter()

    def line(self, step: int, rate: float, metrics: Mapping[str, Any]) -> str:
        eta = (self._total - step) / rate if rate > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        shown = " ".join(
            f"{k}={float(v):.4f}"
            for k, v in sorted(metrics.items())
            if k.startswith(PROGRESS_KEYS) and np.ndim(v) == 0
        )
        return f"step {step}/{self._total} | {rate:.2f} steps/s | ETA {eta_text} | {shown}"
