"""One writer per workdir (``adaptive_data.workdir_lock``).

Unit tests drive ``WorkdirLock`` in this process, with records of other holders written
by hand (a dead pid of this host; another host, whose heartbeat advances or not). The
slow tests launch real runs: a second launch on a live workdir (single and 2-process) is
refused with exit code 73 while the first run's files stay byte-identical, and a relaunch
after SIGKILL takes the stale lock over and ends with the metrics of an uninterrupted run.
"""

import hashlib
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from adaptive_data import exit_codes, workdir_lock

from conftest import (
    REPO_ROOT,
    RESUME_FLAGS,
    deterministic_rows,
    kill_after_checkpoint,
    main_command,
    metrics_rows,
)

HOST = socket.gethostname()


def _fast_lock(workdir, **options):
    return workdir_lock.WorkdirLock(
        workdir, **{"settle_s": 0.01, "heartbeat_interval_s": 0.05, **options}
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_record(workdir: pathlib.Path, **record):
    record = {"started": time.time() - 3600, "token": "someone-else", **record}
    (workdir / workdir_lock.RECORD_NAME).write_text(json.dumps(record))


# -- the lock logic ------------------------------------------------------------------------


def test_free_workdir_is_taken_and_released(tmp_path):
    lock = _fast_lock(tmp_path / "run")
    lock.acquire()
    record = json.loads((tmp_path / "run" / workdir_lock.RECORD_NAME).read_text())
    assert (record["host"], record["pid"]) == (HOST, os.getpid())
    assert abs(record["heartbeat"] - time.time()) < 5
    time.sleep(0.3)  # a few heartbeats
    refreshed = json.loads((tmp_path / "run" / workdir_lock.RECORD_NAME).read_text())
    assert refreshed["heartbeat"] > record["heartbeat"]
    assert refreshed["started"] == record["started"]
    lock.release()
    assert not (tmp_path / "run" / workdir_lock.RECORD_NAME).exists()
    assert (tmp_path / "run" / workdir_lock.LOCK_NAME).exists()  # never deleted


def test_live_holder_in_this_process_is_refused_and_named(tmp_path):
    first = _fast_lock(tmp_path)
    first.acquire()
    before = (tmp_path / workdir_lock.RECORD_NAME).read_bytes()
    with pytest.raises(workdir_lock.WorkdirInUse) as refused:
        _fast_lock(tmp_path).acquire()
    message = str(refused.value)
    assert message.startswith(f"Workdir {tmp_path} is in use by another run (host {HOST}, pid ")
    assert f"pid {os.getpid()}, since " in message
    assert f"or use another --workdir (exit code {exit_codes.WORKDIR_IN_USE}" in message
    assert message.count(". ") == 0  # one sentence
    assert (tmp_path / workdir_lock.RECORD_NAME).read_bytes() == before  # untouched
    first.release()
    second = _fast_lock(tmp_path)
    second.acquire()  # free again
    second.release()


@pytest.mark.slow
def test_live_holder_in_another_process_is_refused(tmp_path):
    holder = _hold_in_another_process(tmp_path)
    try:
        with pytest.raises(workdir_lock.WorkdirInUse, match=f"pid {holder.pid}, since "):
            _fast_lock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    _fast_lock(tmp_path).acquire()  # the kernel dropped the flock; its pid is gone


@pytest.mark.slow
def test_lock_of_a_dead_process_of_this_host_is_taken_over(tmp_path, caplog):
    pid = _dead_pid()
    _write_record(tmp_path, host=HOST, pid=pid, heartbeat=time.time())  # fresh, but dead
    caplog.set_level(logging.WARNING)
    lock = _fast_lock(tmp_path)
    lock.acquire()
    assert f"Took over the lock of workdir {tmp_path}, left by a run that did not end " in (
        caplog.text
    )
    assert f"(host {HOST}, pid {pid}, since " in caplog.text
    assert "its process no longer exists" in caplog.text
    assert json.loads((tmp_path / workdir_lock.RECORD_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_stale_heartbeat_of_another_host_is_taken_over(tmp_path, caplog):
    _write_record(tmp_path, host="elsewhere", pid=os.getpid(), heartbeat=time.time() - 90)
    caplog.set_level(logging.WARNING)
    lock = _fast_lock(tmp_path, stale_after_s=60)
    lock.acquire()
    assert "(host elsewhere, pid" in caplog.text
    assert "its heartbeat is 90 s old" in caplog.text
    lock.release()


def test_another_host_whose_heartbeat_stops_is_taken_over_once_stale(tmp_path):
    """A fresh record with the flock free: a file system without a shared flock. The
    heartbeat does not advance, so the holder is taken for dead after ``stale_after_s``."""
    _write_record(tmp_path, host="elsewhere", pid=1, heartbeat=time.time())
    started = time.time()
    lock = _fast_lock(tmp_path, stale_after_s=1.0)
    lock.acquire()
    assert 1.0 <= time.time() - started < 5.0
    lock.release()


def test_another_host_whose_heartbeat_advances_is_refused(tmp_path):
    _write_record(tmp_path, host="elsewhere", pid=4242, heartbeat=time.time())
    stop = threading.Event()

    def beat():  # the other host's run, alive
        while not stop.wait(0.1):
            _write_record(tmp_path, host="elsewhere", pid=4242, heartbeat=time.time())

    thread = threading.Thread(target=beat)
    thread.start()
    try:
        with pytest.raises(workdir_lock.WorkdirInUse, match="host elsewhere, pid 4242, since "):
            _fast_lock(tmp_path, stale_after_s=30.0).acquire()
    finally:
        stop.set()
        thread.join()
    assert json.loads((tmp_path / workdir_lock.RECORD_NAME).read_text())["host"] == "elsewhere"


def test_exclusive_releases_when_the_run_raises(tmp_path):
    @workdir_lock.exclusive
    def failing_run(config, workdir):
        assert (pathlib.Path(workdir) / workdir_lock.RECORD_NAME).exists()
        raise KeyError(config)

    with pytest.raises(KeyError):
        failing_run("config", tmp_path)
    assert not (tmp_path / workdir_lock.RECORD_NAME).exists()
    with workdir_lock.hold(tmp_path, settle_s=0.0) as lock:  # free again
        assert lock.held


# -- real runs ------------------------------------------------------------------------------


def _snapshot(workdir: pathlib.Path) -> dict[str, str]:
    """sha256 of every file of the first run that a second writer could change."""
    files = [workdir / "metrics.jsonl", workdir / "config.json"]
    files += [p for p in (workdir / "checkpoints").rglob("*") if p.is_file()]
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _wait_for(path: pathlib.Path, procs, timeout_s=400):
    deadline = time.time() + timeout_s
    while not path.exists():
        for p in procs:
            assert p.poll() is None, "the first run ended too early"
        assert time.time() < deadline, f"no {path} after {timeout_s} s"
        time.sleep(0.05)


def _in_use_line(stderr: str, workdir) -> str:
    lines = [line for line in stderr.splitlines() if f"Workdir {workdir} is in use" in line]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_second_launch_on_a_live_workdir_is_refused_and_touches_nothing(tfds_dir, tmp_path):
    workdir = tmp_path / "run"
    command = main_command(workdir, tfds_dir, *RESUME_FLAGS)
    first = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(workdir / "checkpoints" / "40", [first])
        first.send_signal(signal.SIGSTOP)  # its files stay still while the second one runs
        before = _snapshot(workdir)
        second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert _snapshot(workdir) == before
        first.send_signal(signal.SIGCONT)
        assert second.returncode == exit_codes.WORKDIR_IN_USE, second.stderr[-3000:]
        line = _in_use_line(second.stderr, workdir)
        assert f"(host {HOST}, pid {first.pid}, since " in line
        assert "Traceback" not in second.stderr
        _, stderr = first.communicate(timeout=600)
        assert first.returncode == 0, stderr[-3000:]
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.wait()
    steps = [row["step"] for row in metrics_rows(workdir)]
    assert steps == sorted(set(steps)) and steps[-1] == 160  # one writer: no duplicates


@pytest.mark.slow
def test_relaunch_after_sigkill_takes_the_lock_over_and_resumes_identically(
    uninterrupted_run, tfds_dir, tmp_path
):
    workdir = tmp_path / "killed"
    command = main_command(workdir, tfds_dir, *RESUME_FLAGS)
    kill_after_checkpoint(command, str(workdir / "checkpoints" / "40"))
    record = json.loads((workdir / workdir_lock.RECORD_NAME).read_text())  # left behind
    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Took over the lock of workdir {workdir}, left by a run that did not end " in (
        resumed.stderr
    )
    assert f"pid {record['pid']}" in resumed.stderr
    assert deterministic_rows(metrics_rows(workdir)) == deterministic_rows(
        metrics_rows(uninterrupted_run)
    )
    assert not (workdir / workdir_lock.RECORD_NAME).exists()  # released at the end


# -- two processes ------------------------------------------------------------------------------

TWO_PROCESS_FLAGS = (
    "--config.train.steps=24",
    "--config.checkpoint.every=8",
    "--config.train.eval_every=8",
    "--config.train.log_every=4",
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(workdir, tfds_dir, log_dir, peer_timeout_s):
    """Both processes of a 2-process run; logs in files (the coordination service's child
    process shares process 0's stderr)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    procs = []
    for i in range(2):
        command = main_command(
            workdir,
            tfds_dir,
            *TWO_PROCESS_FLAGS,
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            f"--peer_timeout_s={peer_timeout_s}",
        )
        with open(log_dir / f"err{i}.txt", "w") as err:
            procs.append(
                subprocess.Popen(
                    command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err
                )
            )
    return procs


def _wait_all(procs, timeout_s=600):
    return [p.wait(timeout=timeout_s) for p in procs]


def _stop_all(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()


def _hold_in_another_process(workdir) -> subprocess.Popen:
    """A process that holds ``workdir``'s lock until killed (a live run, as far as the
    lock can tell), once it has printed ``held``."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from adaptive_data import workdir_lock\n"
            "workdir_lock.WorkdirLock(sys.argv[1], settle_s=0).acquire()\n"
            "print('held', flush=True); time.sleep(600)",
            str(workdir),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
def test_two_processes_refused_together_and_relaunch_after_sigkill(tfds_dir, tmp_path):
    # The uninterrupted reference.
    reference = tmp_path / "reference"
    assert _wait_all(_launch_two(reference, tfds_dir, tmp_path / "first", 10)) == [0, 0]

    # A second 2-process job on a workdir that a live process holds: both refuse.
    holder = _hold_in_another_process(reference)
    try:
        before = _snapshot(reference)
        second = _launch_two(reference, tfds_dir, tmp_path / "second", peer_timeout_s=10)
        codes = _wait_all(second, timeout_s=300)
        assert _snapshot(reference) == before
    finally:
        holder.kill()
        holder.wait()
    errs = [(tmp_path / "second" / f"err{i}.txt").read_text() for i in range(2)]
    assert codes == [exit_codes.WORKDIR_IN_USE] * 2, errs[0][-2000:] + errs[1][-2000:]
    lines = [_in_use_line(err, reference) for err in errs]
    assert f"(host {HOST}, pid {holder.pid}, since " in lines[0]
    assert lines[0].split("Workdir ", 1)[1] == lines[1].split("Workdir ", 1)[1]

    # SIGKILL process 0 (the lock's holder) after a checkpoint; process 1 stops on its own
    # (peer timeout); both relaunched: the lock is taken over, the run ends as the reference.
    killed = tmp_path / "killed"
    procs = _launch_two(killed, tfds_dir, tmp_path / "killed_logs", peer_timeout_s=10)
    try:
        _wait_for(killed / "checkpoints" / "8", procs)
        procs[0].send_signal(signal.SIGKILL)
        assert procs[1].wait(timeout=60) == exit_codes.PEER_LOST
        procs[0].wait()
    finally:
        _stop_all(procs)
    relaunched = _launch_two(killed, tfds_dir, tmp_path / "relaunch_logs", peer_timeout_s=10)
    try:
        codes = _wait_all(relaunched)
    finally:
        _stop_all(relaunched)
    err0 = (tmp_path / "relaunch_logs" / "err0.txt").read_text()
    assert codes == [0, 0], err0[-3000:]
    assert f"Took over the lock of workdir {killed}, left by a run that did not end " in err0
    assert f"pid {procs[0].pid}, since " in err0
    assert deterministic_rows(metrics_rows(killed)) == deterministic_rows(metrics_rows(reference))
