"""Metric helpers: per-domain naming, finiteness check, collapse warnings, JSONL resume."""

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


def test_check_finite_names_step_and_quantity():
    metrics.check_finite(3, {"train/loss": 1.0, "select/domain_share": np.array([np.nan])})
    with pytest.raises(FloatingPointError, match=r"train/loss = nan at step 7"):
        metrics.check_finite(7, {"train/loss": math.nan})


def test_collapse_monitor_warns_once_per_kind():
    monitor = metrics.CollapseMonitor(batch_size=8, big_batch_size=64)
    healthy = {
        "select/active": 1.0,
        "select/ess_fraction": 0.5,
        "select/domain_share/a": 0.5,
        "select/domain_share/b": 0.5,
    }
    assert monitor.check(1, healthy) == []
    collapsed = dict(
        healthy,
        **{"select/ess_fraction": 0.05, "select/domain_share/a": 1.0, "select/domain_share/b": 0.0},
    )
    messages = monitor.check(2, collapsed)
    assert len(messages) == 2 and "3.2 examples of 64" in messages[0]
    assert "100% of the selected examples are from domain 'a'" in messages[1]
    assert monitor.check(3, collapsed) == []
    assert monitor.check(4, dict(collapsed, **{"select/active": 0.0})) == []


def test_writer_truncates_rows_after_the_resumed_checkpoint(tmp_path):
    writer = metrics.MetricWriter(tmp_path, resume_step=None)
    for step in (0, 5, 10, 15):
        writer.write(step, {"train/loss": float(step)})
    writer.close()
    resumed = metrics.MetricWriter(tmp_path, resume_step=10)
    assert [r["step"] for r in resumed.history()] == [0, 5, 10]
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
    assert [r["step"] for r in resumed.history()] == [0, 5]
    resumed.close()
