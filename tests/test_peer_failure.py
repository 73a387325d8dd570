"""A dead process of a multi-process run: the others exit with ``exit_codes.PEER_LOST``.

Unit tests drive ``peers.Watchdog`` with an in-memory key-value store and a fake clock.
The slow tests SIGKILL one of two real processes of a runlocal run (process 1, then
process 0, which hosts the coordination service) once a checkpoint exists, and check that
the survivor exits within ``--peer_timeout_s`` plus a margin, with exit code 76 and one
sentence naming the lost process and the last checkpoint, and no abort dump.
"""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from adaptive_data import exit_codes, peers, workdir_lock

from conftest import REPO_ROOT, main_command

# -- the watchdog, in memory -----------------------------------------------------------------


class FakeKV:
    """The two calls of jax's distributed client the watchdog uses."""

    def __init__(self):
        self.store = {}
        self.down = False

    def key_value_set(self, key, value, allow_overwrite=False):
        if self.down:
            raise RuntimeError("UNAVAILABLE: Failed to send RPC to coordination service")
        assert allow_overwrite or key not in self.store
        self.store[key] = value

    def key_value_dir_get(self, prefix):
        if self.down:
            raise RuntimeError("UNAVAILABLE: Failed to send RPC to coordination service")
        return sorted((k, v) for k, v in self.store.items() if k.startswith(prefix))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _watchdogs(tmp_path, n=2, timeout_s=10.0, grace_s=4.0):
    kv, clock, exits = FakeKV(), Clock(), []
    dogs = [
        peers.Watchdog(
            kv,
            process_id=i,
            num_processes=n,
            timeout_s=timeout_s,
            workdir=str(tmp_path),
            coordinator_address="10.0.0.1:1234",
            failed_grace_s=grace_s,
            clock=clock,
            exit=exits.append,
        )
        for i in range(n)
    ]
    for dog in dogs:
        dog._publish()
    return kv, clock, exits, dogs


def _advance(clock, dogs, seconds):
    """Ticks ``dogs`` once a second for ``seconds``; the verdicts of the last tick."""
    verdicts = []
    for _ in range(int(seconds)):
        clock.now += 1.0
        verdicts = [dog.tick() for dog in dogs]
    return verdicts


def _until_verdict(clock, dogs, limit=60):
    """Ticks ``dogs`` once a second until ``dogs[0]`` has a verdict: (seconds, verdict)."""
    for seconds in range(1, limit + 1):
        verdict = _advance(clock, dogs, 1)[0]
        if verdict is not None:
            return seconds, verdict
    return None, None


def test_silent_peer_is_lost_after_the_timeout(tmp_path):
    (tmp_path / "checkpoints" / "8").mkdir(parents=True)
    (tmp_path / "checkpoints" / "16.orbax-checkpoint-tmp-1764").mkdir()  # unfinished
    _, clock, exits, (p0, p1) = _watchdogs(tmp_path, timeout_s=10.0)
    assert _advance(clock, [p0, p1], 5) == [None, None]
    # Process 1 stops; its last beat is read one tick later.
    seconds, verdict = _until_verdict(clock, [p0])
    assert 10 <= seconds <= 11
    assert (verdict.lost, verdict.reason) == (1, "silent")
    p0.fire(verdict)
    assert exits == [exit_codes.PEER_LOST]
    sentence = p0.sentence(verdict)
    assert sentence.startswith(f"Lost process 1 of 2 (host {socket.gethostname()}, pid ")
    assert "no heartbeat for 10 s" in sentence
    assert f"step 8 at {tmp_path / 'checkpoints' / '8'}" in sentence
    assert "relaunch all 2 processes with the same command to resume" in sentence
    assert sentence.count(". ") == 0  # one sentence


def test_sentence_names_the_coordinator_and_a_missing_checkpoint(tmp_path):
    _, clock, _, (p0, p1) = _watchdogs(tmp_path)
    _, verdict = _until_verdict(clock, [p1])
    assert verdict.lost == 0
    sentence = p1.sentence(verdict)
    assert "coordinator 10.0.0.1:1234" in sentence
    assert "no checkpoint was saved yet" in sentence


def test_finished_peer_may_go_quiet(tmp_path):
    _, clock, exits, (p0, p1) = _watchdogs(tmp_path)
    p1.set_state(peers.FINISHED)
    assert _advance(clock, [p0], 30) == [None]
    assert not exits


def test_failed_peer_stops_the_others_after_the_grace(tmp_path):
    _, clock, _, (p0, p1) = _watchdogs(tmp_path, grace_s=4.0)
    _advance(clock, [p0, p1], 1)
    p1.set_state(peers.FAILED, "ValueError: bad batch")
    seconds, verdict = _until_verdict(clock, [p0, p1])
    assert 4 <= seconds <= 5
    assert (verdict.lost, verdict.reason) == (1, "failed")
    assert "stopped with an error (ValueError: bad batch)" in p0.sentence(verdict)


def test_all_failing_together_is_no_lost_peer(tmp_path):
    """E.g. every process raises at the same step (a preemption): no PEER_LOST."""
    _, clock, _, (p0, p1) = _watchdogs(tmp_path, grace_s=4.0)
    p1.set_state(peers.FAILED, "Preempted: ...")
    _advance(clock, [p0, p1], 2)
    p0.set_state(peers.FAILED, "Preempted: ...")
    assert _advance(clock, [p0, p1], 20) == [None, None]


def test_silent_peer_is_lost_even_while_this_process_fails(tmp_path):
    """The error here was likely caused by the lost peer: PEER_LOST, not the error."""
    _, clock, _, (p0, p1) = _watchdogs(tmp_path)
    p0.set_state(peers.FAILED, "RuntimeError: while saving")
    _, verdict = _until_verdict(clock, [p0])
    assert (verdict.lost, verdict.reason) == (1, "silent")


def test_a_peer_that_exited_on_a_lost_process_is_relayed(tmp_path):
    _, clock, exits, (p0, p1, p2) = _watchdogs(tmp_path, n=3)
    _advance(clock, [p0, p1, p2], 1)
    _, verdict = _until_verdict(clock, [p1, p0])  # process 2 stops; process 1 notices first
    assert verdict.lost == 2
    p1.fire(verdict)
    relayed = p0.tick()
    assert (relayed.lost, relayed.reason) == (2, "silent")
    assert exits == [exit_codes.PEER_LOST]


def test_unreachable_coordination_service_names_process_0(tmp_path):
    kv, clock, _, (p0, p1) = _watchdogs(tmp_path)
    kv.down = True
    seconds, verdict = _until_verdict(clock, [p1])
    assert 10 <= seconds <= 11
    assert (verdict.lost, verdict.reason) == (0, "service")
    assert "coordination service it hosts no longer answers" in p1.sentence(verdict)


def _within(seconds, function):
    """``function()``, failing instead of hanging if it takes longer than ``seconds``."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"still waiting after {seconds} s"
    return result[0]


def test_wait_for_peers_to_end(tmp_path):
    _, clock, _, (p0, p1) = _watchdogs(tmp_path, grace_s=2.0)
    p0.interval_s = p1.interval_s = 0.01
    p0.set_state(peers.FINISHED)
    p1.set_state(peers.FINISHED)
    _advance(clock, [p0, p1], 1)
    assert _within(10, p0.wait_for_peers_to_end)
    # A failed process whose peer stopped on its error (and exited) must not wait for it.
    _, clock, _, (p0, p1) = _watchdogs(tmp_path, grace_s=2.0)
    p1.interval_s = 0.01
    p1.set_state(peers.FAILED, "KeyError: 'x'")
    _, verdict = _until_verdict(clock, [p0, p1])
    p0.fire(verdict)
    _advance(clock, [p1], 1)
    assert not _within(10, p1.wait_for_peers_to_end)


def test_errors_of_a_lost_peer_are_recognised():
    gloo = ValueError(
        "UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/transport/tcp/pair.cc:538] "
        "Read error [127.0.0.1]:61653: Connection reset by peer"
    )
    assert peers.looks_like_lost_peer(gloo)
    try:
        try:
            raise gloo
        except ValueError as error:
            raise RuntimeError("while saving") from error
    except RuntimeError as wrapped:
        assert peers.looks_like_lost_peer(wrapped)
    assert not peers.looks_like_lost_peer(KeyError("learning_rate"))
    holder = {"host": "h", "pid": 1, "started": 0.0, "heartbeat": 0.0}
    in_use = workdir_lock.WorkdirInUse(workdir_lock.refusal(pathlib.Path("/w"), holder, 5.0))
    assert "heartbeat" in str(in_use) and not peers.looks_like_lost_peer(in_use)


def test_jax_heartbeat_timeout_is_above_ours():
    for timeout_s in (1, 10, 60, 600):
        assert peers.jax_heartbeat_timeout_s(timeout_s) > timeout_s + 10


# -- two real processes ------------------------------------------------------------------------

PEER_TIMEOUT_S = 10
# Detection takes PEER_TIMEOUT_S (+1 s of polling); the rest is slack for a loaded machine.
EXIT_MARGIN_S = 25
DUMP_MARKERS = ("Fatal Python error", "Aborted", "Extension modules", "Check failure", "Traceback")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _launch(workdir, tfds_dir, port, process_id, log_dir):
    command = main_command(
        workdir,
        tfds_dir,
        "--config.train.steps=100000",
        "--config.checkpoint.every=8",
        "--config.train.eval_every=100000",
        "--config.train.log_every=8",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={process_id}",
        f"--peer_timeout_s={PEER_TIMEOUT_S}",
    )
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    # Files, not pipes: the coordination service's child process shares process 0's stderr.
    stdout = open(log_dir / f"out{process_id}.txt", "w")
    stderr = open(log_dir / f"err{process_id}.txt", "w")
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=stdout, stderr=stderr)
    stdout.close()
    stderr.close()
    return proc


def _service_pid(log_dir):
    """Pid of the coordination service's child process, from process 0's log."""
    found = re.search(r"in child process (\d+)", (log_dir / "err0.txt").read_text())
    return int(found.group(1)) if found else None


def _kill_if_alive(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"adaptive_data.peers" not in f.read():
                return
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["kill_process_1", "kill_coordinator"])
def test_survivor_exits_with_peer_lost(tfds_dir, tmp_path, victim):
    workdir, log_dir = tmp_path / "run", tmp_path / "logs"
    log_dir.mkdir()
    port = _free_port()
    procs = [_launch(workdir, tfds_dir, port, i, log_dir) for i in range(2)]
    survivor = 1 - victim
    service_pid = None
    try:
        deadline = time.time() + 400
        while not (workdir / "checkpoints" / "8").is_dir():
            for i, p in enumerate(procs):
                err = (log_dir / f"err{i}.txt").read_text()[-3000:]
                assert p.poll() is None, f"process {i} ended before its first checkpoint:\n{err}"
            assert time.time() < deadline, "no checkpoint of step 8 after 400 s"
            time.sleep(0.1)
        service_pid = _service_pid(log_dir)
        assert service_pid is not None
        procs[victim].send_signal(signal.SIGKILL)
        killed_at = time.time()
        try:
            code = procs[survivor].wait(timeout=PEER_TIMEOUT_S + EXIT_MARGIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process {survivor} still runs {PEER_TIMEOUT_S + EXIT_MARGIN_S} s after")
        took = time.time() - killed_at
        err = (log_dir / f"err{survivor}.txt").read_text()
        print(f"process {survivor}: exit code {code} {took:.1f} s after the kill")
        assert code == exit_codes.PEER_LOST, err[-3000:]
        steps = sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())
        lines = [line for line in err.splitlines() if f"Lost process {victim} of 2" in line]
        assert len(lines) == 1, err[-3000:]
        assert f"process {survivor} stops too" in lines[0]
        assert f"step {steps[-1]} at {workdir / 'checkpoints' / str(steps[-1])}" in lines[0]
        assert "relaunch all 2 processes with the same command to resume" in lines[0]
        if victim == 0:
            assert f"coordinator 127.0.0.1:{port}" in lines[0]
        for marker in DUMP_MARKERS:
            assert marker not in err, err[-3000:]
        # The coordination service's child process goes once nobody is connected.
        deadline = time.time() + 20
        while _port_in_use(port) and time.time() < deadline:
            time.sleep(0.2)
        assert not _port_in_use(port), "the coordination service outlived the run"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if service_pid is not None:
            _kill_if_alive(service_pid)


# -- the coordination service's child process -------------------------------------------------


@pytest.mark.slow
def test_child_service_stops_when_told_and_when_orphaned(tmp_path):
    """``shutdown`` stops it at once; if its parent dies, it exits once nobody is
    connected (here: nobody ever was)."""
    port = _free_port()
    service = peers.ChildService(f"127.0.0.1:{port}", 2, linger_s=60, heartbeat_timeout=50)
    assert _port_in_use(port)
    service.shutdown()
    assert not _port_in_use(port)

    # A parent that starts the service and is SIGKILLed.
    port = _free_port()
    script = (
        "import os, signal, sys, time\n"
        "from adaptive_data import peers\n"
        f"service = peers.ChildService('127.0.0.1:{port}', 2, linger_s=60)\n"
        "print(service._process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    child = None
    try:
        child = int(parent.stdout.readline())
        assert _port_in_use(port)
        parent.kill()
        parent.wait()
        deadline = time.time() + 15
        while _port_in_use(port) and time.time() < deadline:
            time.sleep(0.2)
        assert not _port_in_use(port)
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None:
            _kill_if_alive(child)


@pytest.mark.slow
def test_child_service_reports_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="could not start"):
            peers.ChildService(f"127.0.0.1:{port}", 2, linger_s=1)
