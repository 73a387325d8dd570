"""Metric helpers: per-domain naming, finiteness check, collapse warnings, the metrics.jsonl
reader and its rewind on resume."""

import math

import numpy as np
import pytest

from adaptive_data import metrics


def test_name_domains_expands_vectors_and_indices():
    row = {"select/domain_share": np.array([0.25, 0.75]), "mixture/alpha/1": 0.6, "train/loss": 1.0}
    named = metrics.name_domains(row, ("code", "news"))
    assert named == {
        "select/domain_share/code": 0.25,
        "select/domain_share/news": 0.75,
        "mixture/alpha/news": 0.6,
        "train/loss": 1.0,
    }


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_finite_names_step_and_quantity_of_a_non_finite_scalar(bad):
    row = {"train/loss": 1.0, "outer/objective": np.float32(bad)}
    with pytest.raises(FloatingPointError, match=rf"outer/objective = {bad} at step 7"):
        metrics.check_finite(7, row)
    # Vector metrics (per-domain shares, which are NaN for an empty domain) are left out.
    row = {"train/loss": 1.0, "select/domain_share": np.array([0.5, bad])}
    assert metrics.check_finite(7, row) is None


def test_collapse_monitor_warns_once_per_kind():
    monitor = metrics.CollapseMonitor(batch_size=8, big_batch_size=64)
    healthy = {
        "select/active": 1.0,
        "select/ess_fraction": 0.1,  # 6.4 of 64: below b = 8, above b / 4
        "select/domain_share/a": 0.5,
        "select/domain_share/b": 0.5,
    }
    assert monitor.check(1, healthy) == []
    collapsed = dict(
        healthy,
        **{
            "select/ess_fraction": 0.025,  # 1.6 of 64: below b / 4 = 2
            "select/domain_share/a": 1.0,
            "select/domain_share/b": 0.0,
        },
    )
    messages = monitor.check(2, collapsed)
    assert len(messages) == 2 and "1.6 examples of 64" in messages[0]
    assert "100% of the selected examples are from domain 'a'" in messages[1]
    assert monitor.check(3, collapsed) == []
    assert monitor.check(4, dict(collapsed, **{"select/active": 0.0})) == []


def test_writer_truncates_rows_after_the_resumed_checkpoint(tmp_path):
    writer = metrics.MetricWriter(tmp_path, resume_step=None)
    for step in (0, 5, 10, 15):
        writer.write(step, {"train/loss": float(step)})
    writer.close()
    resumed = metrics.MetricWriter(tmp_path, resume_step=10)
    assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [0, 5, 10]
    resumed.close()
    assert list(tmp_path.glob("events.out.tfevents*"))


def test_writer_drops_a_row_torn_by_a_kill_when_resuming(tmp_path):
    writer = metrics.MetricWriter(tmp_path, resume_step=None)
    for step in (0, 5):
        writer.write(step, {"train/loss": float(step)})
    writer.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 10, "train/lo')  # SIGKILL in the middle of a write
    resumed = metrics.MetricWriter(tmp_path, resume_step=5)
    assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [0, 5]
    resumed.close()


def _write_lines(workdir, lines):
    (workdir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))


def test_read_metrics_returns_the_rows_in_order(tmp_path):
    _write_lines(tmp_path, ['{"step": 0, "loss": 2.5}', "", '{"step": 5, "loss": NaN}'])
    rows = metrics.read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [0, 5]
    assert rows[0]["loss"] == 2.5 and math.isnan(rows[1]["loss"])


@pytest.mark.parametrize("torn", ['{"step": 10, "lo', '{"lo', "[1, 2]", '{"loss": 1.0}'])
def test_read_metrics_leaves_out_a_torn_last_line(tmp_path, torn):
    _write_lines(tmp_path, ['{"step": 0}', '{"step": 5}'])
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(torn)  # a kill mid-write leaves no newline
    assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [0, 5]


def test_read_metrics_refuses_a_damaged_line_before_the_last(tmp_path):
    _write_lines(tmp_path, ['{"step": 0}', '{"step": 5, "lo', '{"step": 10}'])
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a metrics row"):
        metrics.read_metrics(tmp_path)


def test_read_metrics_of_a_workdir_without_metrics(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        metrics.read_metrics(tmp_path / "nothing")
    assert "metrics.jsonl" in str(info.value) and "Train first" in str(info.value)
    assert metrics.read_metrics(tmp_path / "nothing", missing_ok=True) == []


def test_rewind_keeps_the_kept_lines_byte_for_byte(tmp_path):
    writer = metrics.MetricWriter(tmp_path, resume_step=None)
    for step, loss in ((0, 1 / 3), (5, 1e-30), (10, float("nan"))):
        writer.write(step, {"train/loss": loss, "eval/x": 7})
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines(keepends=True)
    metrics.MetricWriter(tmp_path, resume_step=5).close()
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(lines[:2])
