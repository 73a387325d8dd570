"""What pods do to runs, on the tiny model: preemption by SIGTERM, a damaged checkpoint,
a full disk. Each test compares the final metrics with those of an uninterrupted run
(``uninterrupted_run``: 160 steps, checkpoints every 40, keep 2); all but the metrics-row
test (in-process, no run) are in the slow tier.
"""

import errno
import json
import logging
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from adaptive_data import checkpoint as ckpt
from adaptive_data import exit_codes, faults, train
from adaptive_data import metrics as metrics_lib

from conftest import (
    REPO_ROOT,
    RESUME_FLAGS,
    deterministic_rows,
    main_command,
    metrics_rows,
    run_config,
)


def _resume_config(tfds_dir):
    """The config of ``RESUME_FLAGS``, for in-process runs."""
    overrides = dict(flag[len("--config.") :].split("=") for flag in RESUME_FLAGS)
    return run_config(tfds_dir, **{k: int(v) for k, v in overrides.items()})


def _run(workdir, tfds_dir):
    return subprocess.run(
        main_command(workdir, tfds_dir, *RESUME_FLAGS),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _assert_same_as_uninterrupted(workdir, uninterrupted_run):
    assert deterministic_rows(metrics_rows(workdir)) == deterministic_rows(
        metrics_rows(uninterrupted_run)
    )


# ----------------------------------------------------------------------------- SIGTERM


@pytest.mark.slow
def test_sigterm_saves_exits_with_preempted_code_and_resumes_identically(
    uninterrupted_run, tfds_dir, tmp_path
):
    workdir = tmp_path / "preempted"
    # A random step that is not a checkpoint step, so the saved checkpoint is the
    # preemption's own.
    signal_after = random.Random(os.getpid()).choice([s for s in range(15, 140, 5) if s % 40])
    proc = subprocess.Popen(
        main_command(workdir, tfds_dir, *RESUME_FLAGS),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (
        (workdir / "metrics.jsonl").exists()
        and metrics_rows(workdir)
        and metrics_rows(workdir)[-1]["step"] >= signal_after
    ):
        assert proc.poll() is None, "run ended before it could be signalled"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == exit_codes.PREEMPTED, stderr[-3000:]
    saved = ckpt.checkpoint_steps(workdir)
    assert saved and saved[-1] % 40 != 0 and saved[-1] < 160
    assert f"saved the checkpoint of step {saved[-1]}" in stderr
    assert "run the same command again" in stderr
    assert "Traceback" not in stderr

    resumed = _run(workdir, tfds_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from the checkpoint of step {saved[-1]}" in resumed.stderr
    _assert_same_as_uninterrupted(workdir, uninterrupted_run)


# ----------------------------------------------------------------------------- damage


def _largest_file(directory: pathlib.Path) -> pathlib.Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate_largest_file(checkpoint: pathlib.Path) -> None:
    path = _largest_file(checkpoint)
    os.truncate(path, path.stat().st_size // 2)


def _delete_array_manifest(checkpoint: pathlib.Path) -> None:
    (checkpoint / "state" / "manifest.ocdbt").unlink()


def _garble_iterator_state(checkpoint: pathlib.Path) -> None:
    (checkpoint / "generic" / "process_0-of-1.json").write_text("{not json")


# A read the fallback abandoned would surface here as an "ignored" exception.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "damage", [_truncate_largest_file, _delete_array_manifest, _garble_iterator_state]
)
@pytest.mark.slow
def test_damaged_latest_checkpoint_is_set_aside_and_run_ends_identical(
    damage, uninterrupted_run, tfds_dir, tmp_path, caplog
):
    workdir = tmp_path / "damaged"
    shutil.copytree(uninterrupted_run, workdir)
    checkpoints = workdir / "checkpoints"
    assert ckpt.checkpoint_steps(workdir) == [120, 160]
    damage(checkpoints / "160")

    caplog.set_level(logging.INFO)
    train.train_and_evaluate(_resume_config(tfds_dir), str(workdir))
    assert f"The checkpoint of step 160 in {checkpoints} cannot be restored" in caplog.text
    assert f"moved to {checkpoints / '160.corrupt'}" in caplog.text
    assert "Resumed from the checkpoint of step 120" in caplog.text
    assert (checkpoints / "160.corrupt").is_dir()  # set aside, not deleted
    assert ckpt.checkpoint_steps(workdir) == [120, 160]  # 160 saved again by the resumed run
    _assert_same_as_uninterrupted(workdir, uninterrupted_run)


@pytest.mark.slow
def test_damaged_checkpoint_fallback_prints_its_warnings_and_no_traceback(
    uninterrupted_run, tfds_dir, tmp_path
):
    workdir = tmp_path / "damaged"
    shutil.copytree(uninterrupted_run, workdir)
    _truncate_largest_file(workdir / "checkpoints" / "160")
    resumed = _run(workdir, tfds_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "The checkpoint of step 160 in " in resumed.stderr
    assert "Resuming from step 120; the damaged checkpoint of step 160 was moved" in (
        resumed.stderr
    )
    assert "Traceback" not in resumed.stderr
    assert "Event loop is closed" not in resumed.stderr
    _assert_same_as_uninterrupted(workdir, uninterrupted_run)


_ABANDONED_READS = """
import asyncio, contextlib, gc, sys, time
import tensorstore as ts
from orbax.checkpoint._src import asyncio_utils
from adaptive_data import checkpoint

async def restore():
    # What orbax's restore does: one gather of a read per array, one of which fails.
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": sys.argv[1]}}
    array = await ts.open(
        spec, create=True, dtype=ts.float32, shape=[1 << 20],
        chunk_layout=ts.ChunkLayout(chunk_shape=[1 << 16]),
    )
    await array.write(1.0)

    async def damaged():
        raise ValueError("damaged array")

    await asyncio.gather(damaged(), *[array.read() for _ in range(16)])

drained = checkpoint._reads_drained() if sys.argv[2] == "drained" else contextlib.nullcontext()
with contextlib.suppress(ValueError), drained:
    asyncio_utils.run_sync(restore())
time.sleep(1)  # reads still in flight complete meanwhile
gc.collect()
"""


@pytest.mark.slow
@pytest.mark.parametrize("drained", [False, True], ids=["orbax_as_is", "drained"])
def test_failed_restore_leaves_no_reads_in_flight(tmp_path, drained):
    """Orbax as is: the reads in flight when the gather fails complete on a closed event
    loop, each printing an ignored "Event loop is closed" traceback; drained, none."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _ABANDONED_READS,
            str(tmp_path / "array"),
            "drained" if drained else "as_is",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if drained:
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
    else:
        assert "RuntimeError: Event loop is closed" in result.stderr


@pytest.mark.slow
def test_no_restorable_checkpoint_names_each_and_moves_nothing(
    uninterrupted_run, tfds_dir, tmp_path
):
    workdir = tmp_path / "all_damaged"
    shutil.copytree(uninterrupted_run, workdir)
    for step in (120, 160):
        _truncate_largest_file(workdir / "checkpoints" / str(step))
    rows_before = (workdir / "metrics.jsonl").read_text()
    with pytest.raises(ckpt.CheckpointError) as error:
        train.train_and_evaluate(_resume_config(tfds_dir), str(workdir))
    message = str(error.value)
    assert "None of the checkpoints" in message and "step 160: " in message
    assert "step 120: " in message and "Nothing was moved or deleted" in message
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["120", "160"]
    assert (workdir / "metrics.jsonl").read_text() == rows_before


# ----------------------------------------------------------------------------- full disk


@pytest.mark.slow
def test_full_disk_during_checkpoint_keeps_earlier_work_and_resume_is_identical(
    uninterrupted_run, tfds_dir, tmp_path, monkeypatch
):
    workdir = tmp_path / "disk_full_checkpoint"
    real_save = ocp.CheckpointManager.save

    def save_fails_at_80(self, step, *args, **kwargs):
        if step == 80:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_fails_at_80)
    with pytest.raises(faults.StorageError) as error:
        train.train_and_evaluate(_resume_config(tfds_dir), str(workdir))
    message = str(error.value)
    assert f"the checkpoint to {workdir.absolute() / 'checkpoints' / '80'}" in message
    assert "No space left on device (ENOSPC)" in message
    assert ckpt.checkpoint_steps(workdir) == [40]
    assert metrics_rows(workdir)[-1]["step"] == 80  # every row up to the failure

    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    train.train_and_evaluate(_resume_config(tfds_dir), str(workdir))
    _assert_same_as_uninterrupted(workdir, uninterrupted_run)


def test_full_disk_during_metrics_write_leaves_no_partial_row(tmp_path, monkeypatch):
    writer = metrics_lib.MetricWriter(tmp_path, resume_step=None)
    writer.write(0, {"loss": np.float32(1.5)})
    real_open = pathlib.Path.open

    class HalfWrite:
        """A file whose write stores half the text, then fails as a full disk does."""

        def __init__(self, f):
            self._f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def write(self, text):
            self._f.write(text[: len(text) // 2])
            self._f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_full_disk(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return HalfWrite(f) if self.name == "metrics.jsonl" and mode == "a" else f

    monkeypatch.setattr(pathlib.Path, "open", open_full_disk)
    with pytest.raises(faults.StorageError, match=r"a metrics row to .*metrics.jsonl: No space"):
        writer.write(5, {"loss": np.float32(1.25)})
    monkeypatch.setattr(pathlib.Path, "open", real_open)
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"step": 0, "loss": 1.5}]
