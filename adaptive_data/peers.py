"""Multi-process runs: when a process dies, the others stop within a bounded time, saying so.

Without this, the survivors of a killed process block in their next collective and abort
minutes later (jax's heartbeat timeout) with a C++ fatal log and a core-dump style listing,
or at once if the dead process was process 0. Here:

- Every process runs a ``Watchdog`` thread that, each second, writes a heartbeat and its
  state (running, finished, failed, exited) to the key-value store of the
  ``jax.distributed`` coordination service and reads everyone else's. A process not heard
  from for ``timeout_s`` (``--peer_timeout_s``), or one that stopped with an error while the
  others still run, makes each survivor log one sentence (the lost process: index, host,
  pid; the last checkpoint: step and path; relaunch all processes with the same command to
  resume) and exit with ``exit_codes.PEER_LOST``. ``os._exit``: the main thread may be
  blocked in a collective.
- jax's own heartbeat timeout is set above ``timeout_s`` (``jax_heartbeat_timeout_s``), so
  its abort never comes first.
- Process 0 hosts the coordination service in a small child process
  (``ChildService``) instead of in itself. In-process, the service dies with process 0
  and jaxlib's client then terminates every other process within ~0.1 s (a fatal C++ log;
  its ``missed_heartbeat_callback`` cannot be set from Python, as the status it passes has
  no Python type). The child serves until process 0 exits; if process 0 dies, it keeps
  serving until the other processes have disconnected (they report process 0 lost after
  ``timeout_s``), at most jax's heartbeat timeout, then exits. It ignores SIGINT, SIGTERM
  and SIGHUP: a preemption notice must not take the service away from processes that are
  still saving their checkpoint.
- A normal end (``finish``) waits, still watching, until every process has finished, and
  only then stops the watchdog, so processes that end at slightly different times do not
  look dead to each other. An error (``end``) is published so that the others stop too, as
  ``PEER_LOST`` naming this process and its error, instead of waiting in a collective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from absl import logging

from adaptive_data import exit_codes, faults

KEY_PREFIX = "adaptive_data/peers/"
INTERVAL_S = 1.0
# A peer that reports an error while this process still runs gets this long (at most) to be
# joined by the others: all processes raise together at an agreed end (e.g. preemption).
FAILED_GRACE_S = 10.0
# Messages of errors that a lost peer causes in the survivors (gloo collectives, the
# coordination service); with such an error, ``end`` first waits for the watchdog's verdict.
_PEER_ERROR_WORDS = (
    "gloo",
    "nccl",
    "connection reset",
    "connection refused",
    "connection closed",
    "socket closed",
    "broken pipe",
    "coordination service",
    "heartbeat",
    "barrier",
)

RUNNING, FINISHED, FAILED, EXITED = "running", "finished", "failed", "exited"

_watchdog: Watchdog | None = None


def jax_heartbeat_timeout_s(timeout_s: float) -> int:
    """jax's heartbeat timeout for our ``timeout_s``: late enough never to come first."""
    return int(2 * timeout_s + 30)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    workdir: str,
    timeout_s: float,
) -> None:
    """``jax.distributed.initialize`` (arguments ``None``: detected by jax), with the
    coordination service in a child process of process 0 and jax's heartbeat timeout above
    ``timeout_s``; then starts the watchdog if there is more than one process."""
    import jax
    from jax._src import distributed

    global _watchdog
    if timeout_s <= 0:
        raise ValueError(f"--peer_timeout_s must be positive, got {timeout_s}.")
    heartbeat_s = jax_heartbeat_timeout_s(timeout_s)
    with _service_in_child_process(linger_s=heartbeat_s):
        jax.distributed.initialize(
            coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            heartbeat_timeout_seconds=heartbeat_s,
        )
    state = distributed.global_state
    if state.num_processes > 1:
        _watchdog = Watchdog(
            state.client,
            process_id=state.process_id,
            num_processes=state.num_processes,
            timeout_s=timeout_s,
            workdir=workdir,
            coordinator_address=state.coordinator_address,
        )
        _watchdog.start()
        logging.info(
            "Watching the %d other process(es): one not heard from for %g s stops the run "
            "(exit code %d).",
            state.num_processes - 1,
            timeout_s,
            exit_codes.PEER_LOST,
        )


def finish() -> bool:
    """Normal end of this process: waits, still watching, until every process has finished
    (a process that dies meanwhile still ends the run with ``PEER_LOST``), then stops.

    Returns False in the rare case that another process has exited on a lost process of
    its own: then leave with ``exit_now(0)``, as ``jax.distributed.shutdown`` would wait
    for it.
    """
    global _watchdog
    watchdog, _watchdog = _watchdog, None
    if watchdog is None:
        return True
    watchdog.set_state(FINISHED)
    safe = watchdog.wait_for_peers_to_end()
    watchdog.stop()
    return safe


def end(error: BaseException) -> bool:
    """This process stops with ``error``; returns whether leaving normally is safe.

    If ``error`` looks like a consequence of a lost peer (a failed gloo collective, ...),
    first waits up to the peer timeout for the watchdog's verdict, which exits with
    ``PEER_LOST``. Otherwise publishes the error (the other processes then stop and name
    this one) and waits until every other process has stopped too. True: all of them are
    still connected (they stopped with an error or finished), so the normal exit, which
    waits for every process in ``jax.distributed.shutdown``, cannot hang. False: some are
    gone; leave with ``exit_now``.
    """
    global _watchdog
    watchdog = _watchdog
    if watchdog is None:
        return True
    if looks_like_lost_peer(error):
        watchdog.await_verdict(watchdog.timeout_s + 3 * watchdog.interval_s)
    _watchdog = None
    watchdog.set_state(FAILED, f"{type(error).__name__}: {_first_line(error)}")
    safe = watchdog.wait_for_peers_to_end()
    watchdog.stop()
    return safe


def exit_now(code: int, error: BaseException | None = None) -> None:
    """Exits with ``code`` at once (after logging ``error`` with its traceback), skipping
    ``jax.distributed.shutdown``, which would wait for processes that are gone."""
    logging.log(
        logging.ERROR if error is not None else logging.WARNING,
        "Some other processes are gone, so this one exits without waiting for them (exit code %d).",
        code,
        exc_info=error,
    )
    _flush()
    os._exit(code)


def looks_like_lost_peer(error: BaseException) -> bool:
    """Whether ``error`` (or one of its causes) is an error a dead peer causes."""
    from adaptive_data import workdir_lock

    if isinstance(error, workdir_lock.WorkdirInUse):  # names the holder's "heartbeat"
        return False
    return any(
        word in str(e).lower() for e in faults.error_chain(error) for word in _PEER_ERROR_WORDS
    )


@dataclasses.dataclass
class _Peer:
    """What this process knows of another one."""

    last_change: float  # local clock when its heartbeat last advanced (or we started)
    beat: int = -1
    state: str = RUNNING
    state_since: float = 0.0
    detail: str = ""  # FAILED: the error; EXITED: the process it lost
    host: str | None = None
    pid: int | None = None


@dataclasses.dataclass
class Verdict:
    """Process ``lost`` is lost, for ``reason``: ``silent`` (``age`` s without heartbeat),
    ``failed`` (``detail``: its error), ``exited`` (it stopped on a lost process of its own)
    or ``service`` (``detail``: our error reaching the coordination service it hosts)."""

    lost: int
    reason: str
    age: float = 0.0
    detail: str = ""


class Watchdog:
    """Heartbeats through the coordination service's key-value store; see the module doc.

    ``client``: ``jax._src.distributed.global_state.client`` (``key_value_set`` with
    ``allow_overwrite``, ``key_value_dir_get``). ``clock`` and ``exit`` are for tests.
    """

    def __init__(
        self,
        client: Any,
        *,
        process_id: int,
        num_processes: int,
        timeout_s: float,
        workdir: str,
        coordinator_address: str | None,
        interval_s: float = INTERVAL_S,
        failed_grace_s: float = FAILED_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
        exit: Callable[[int], None] = os._exit,
    ):
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self._client = client
        self._id = process_id
        self._n = num_processes
        self._workdir = workdir
        self._coordinator = coordinator_address
        self._failed_grace_s = min(failed_grace_s, timeout_s)
        self._clock = clock
        self._exit = exit
        now = clock()
        self._peers = {i: _Peer(last_change=now) for i in range(num_processes) if i != self._id}
        self._beat = 0
        self._state, self._detail = RUNNING, ""
        self._service_failing_since: float | None = None
        self._service_error = ""
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._fired = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-watchdog", daemon=True)
        self._info = {"host": socket.gethostname(), "pid": os.getpid()}

    # -- the thread --------------------------------------------------------------------

    def start(self) -> None:
        self._publish()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10 * self.interval_s)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                verdict = self.tick()
            except Exception:  # never let the watchdog die silently
                logging.exception("Peer watchdog: unexpected error; still watching.")
                continue
            if verdict is not None and not self._stopped.is_set():
                self.fire(verdict)

    def tick(self) -> Verdict | None:
        """One round: publish our heartbeat, read the others'; a verdict if one is lost."""
        with self._lock:
            self._beat += 1
        now = self._clock()
        try:
            self._publish()
            entries = self._client.key_value_dir_get(KEY_PREFIX)
        except Exception as error:
            if self._service_failing_since is None:
                self._service_failing_since = now
            self._service_error = _first_line(error)
            if now - self._service_failing_since >= self.timeout_s and self._id != 0:
                return Verdict(0, "service", detail=self._service_error)
            return None
        self._service_failing_since = None
        for key, value in entries:
            self._update(key, value, now)
        return self._verdict(now)

    def _publish(self) -> None:
        with self._lock:
            value = json.dumps(
                {"beat": self._beat, "state": self._state, "detail": self._detail, **self._info}
            )
        self._client.key_value_set(f"{KEY_PREFIX}{self._id}", value, allow_overwrite=True)

    def _update(self, key: str, value: str, now: float) -> None:
        try:
            index = int(key.rsplit("/", 1)[-1])
            record = json.loads(value)
        except ValueError:
            return
        peer = self._peers.get(index)
        if peer is None:
            return
        if record.get("beat") != peer.beat:
            peer.beat, peer.last_change = record.get("beat"), now
        if record.get("state") != peer.state:
            peer.state, peer.state_since = record.get("state", RUNNING), now
        peer.detail = record.get("detail", "")
        peer.host, peer.pid = record.get("host"), record.get("pid")

    def _verdict(self, now: float) -> Verdict | None:
        for i, peer in self._peers.items():
            if peer.state == RUNNING and now - peer.last_change >= self.timeout_s:
                return Verdict(i, "silent", age=now - peer.last_change)
        if self._state == FAILED:  # ending with its own error: the others stop on it
            return None
        for i, peer in self._peers.items():
            if (
                peer.state == FAILED
                and self._state == RUNNING
                and now - peer.state_since >= self._failed_grace_s
            ):
                return Verdict(i, "failed", detail=peer.detail)
        for i, peer in self._peers.items():
            if peer.state == EXITED:
                # It stopped because it lost a process: name that one, as it saw it.
                with contextlib.suppress(ValueError, TypeError):
                    relayed = Verdict(**json.loads(peer.detail))
                    if relayed.lost in self._peers:
                        return relayed
                return Verdict(i, "exited")
        return None

    # -- what the main thread calls ------------------------------------------------------

    def set_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            self._state, self._detail = state, detail
        with contextlib.suppress(Exception):
            self._publish()

    def await_verdict(self, timeout_s: float) -> None:
        """Waits up to ``timeout_s`` for the watchdog to find a lost peer (and exit)."""
        self._fired.wait(timeout_s)

    def wait_for_peers_to_end(self) -> bool:
        """Waits until no other process runs: True if all are still there (finished, or
        failed and in ``end``), False if one is gone (exited). Meanwhile the watchdog
        thread still fires on a running process that goes silent, or, while this process
        is finished, on one that exits; failed, this process waits at most until the
        others have stopped on its error."""
        deadline = self._clock() + self.timeout_s + self._failed_grace_s + 5 * self.interval_s
        while True:
            now = self._clock()
            peers = list(self._peers.values())
            gone = any(
                p.state == EXITED or (p.state == FAILED and now - p.last_change >= self.timeout_s)
                for p in peers
            )
            if not any(p.state == RUNNING for p in peers):
                return not gone
            if self._state == FAILED and (gone or now >= deadline):
                return False
            time.sleep(self.interval_s / 4)

    # -- the end ---------------------------------------------------------------------------

    def fire(self, verdict: Verdict) -> None:
        """Logs the sentence for ``verdict`` and exits with ``PEER_LOST`` (once)."""
        if self._fired.is_set():
            return
        self._fired.set()
        try:
            sentence = self.sentence(verdict)
        except Exception:  # the exit matters more than the details
            sentence = (
                f"Lost process {verdict.lost} of {self._n} ({verdict.reason}), so process "
                f"{self._id} stops too; relaunch all {self._n} processes with the same command "
                f"to resume from the last checkpoint (exit code {exit_codes.PEER_LOST}, PEER_LOST)."
            )
        with contextlib.suppress(Exception):
            self.set_state(EXITED, json.dumps(dataclasses.asdict(verdict)))
        logging.error("%s", sentence)
        _flush()
        self._exit(exit_codes.PEER_LOST)

    def sentence(self, verdict: Verdict) -> str:
        """The one sentence that says which process is lost and how to resume."""
        peer = self._peers.get(verdict.lost, _Peer(last_change=0.0))
        where = []
        if peer.host is not None:
            where.append(f"host {peer.host}, pid {peer.pid}")
        if verdict.lost == 0 and self._coordinator:
            where.append(f"coordinator {self._coordinator}")
        where = f" ({'; '.join(where)})" if where else ""
        if verdict.reason == "silent":
            what = f"stopped responding (no heartbeat for {verdict.age:.0f} s)"
        elif verdict.reason == "failed":
            what = f"stopped with an error ({verdict.detail})"
        elif verdict.reason == "exited":
            what = "stopped after losing another process"
        else:
            what = (
                "became unreachable (the coordination service it hosts no longer answers: "
                f"{verdict.detail})"
            )
        step, path = last_checkpoint(self._workdir)
        if step is None:
            resume = (
                f"no checkpoint was saved yet in {self._workdir}, so relaunching all {self._n} "
                "processes with the same command starts the run over"
            )
        else:
            resume = (
                f"the last checkpoint is step {step} at {path}: relaunch all {self._n} "
                "processes with the same command to resume from it"
            )
        return (
            f"Lost process {verdict.lost} of {self._n}{where}, which {what}, so process "
            f"{self._id} stops too; {resume} (exit code {exit_codes.PEER_LOST}, PEER_LOST)."
        )


def last_checkpoint(workdir: str) -> tuple[int | None, str | None]:
    """``(step, path)`` of the newest finished checkpoint of ``workdir``, or ``(None, None)``.

    Reads the directory: ``checkpoint.checkpoint_steps`` cannot be used here, as orbax's
    manager agrees on the steps with every process (a collective), which blocks when one
    is dead. Orbax writes a checkpoint under a temporary name and renames it to its step
    once complete, so the directories named by a number are the finished checkpoints.
    """
    root = os.path.join(workdir, "checkpoints")
    try:
        steps = sorted(int(name) for name in os.listdir(root) if name.isdigit())
    except OSError:
        steps = []
    if not steps:
        return None, None
    return steps[-1], os.path.join(root, str(steps[-1]))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        logging.flush()


# -- the coordination service in a child process of process 0 ----------------------------


@contextlib.contextmanager
def _service_in_child_process(linger_s: float) -> Iterator[None]:
    """While active, jax's ``get_distributed_runtime_service`` starts a ``ChildService``."""
    from jax._src.lib import _jax

    original = getattr(_jax, "get_distributed_runtime_service", None)
    if original is None:  # another jaxlib: keep the service in process 0
        yield
        return

    def start(address, num_nodes, **options):
        return ChildService(address, num_nodes, linger_s=linger_s, **options)

    _jax.get_distributed_runtime_service = start
    try:
        yield
    finally:
        _jax.get_distributed_runtime_service = original


class ChildService:
    """jaxlib's ``DistributedRuntimeService``, run by a child process (``serve``)."""

    def __init__(self, address: str, num_nodes: int, *, linger_s: float, **options):
        spec = {"address": address, "num_nodes": num_nodes, "linger_s": linger_s, **options}
        spec["parent"] = os.getpid()
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        serve = (
            "import sys; sys.path.append(sys.argv[1]); "
            "from adaptive_data import peers; peers.serve(sys.argv[2])"
        )
        self._process = subprocess.Popen(
            [sys.executable, "-c", serve, package_parent, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = iter(self._process.stdout.readline, "")
        if not any(line.strip() == "ready" for line in lines):
            code = self._process.wait()
            raise RuntimeError(
                f"The jax.distributed coordination service could not start on {address} "
                f"(exit code {code}; its error is above). Is the port of "
                "--coordinator_address in use?"
            )
        logging.info(
            "jax.distributed coordination service on %s in child process %d.",
            address,
            self._process.pid,
        )

    def shutdown(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(OSError):
                self._process.stdin.write("stop\n")
                self._process.stdin.flush()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def serve(spec_json: str) -> None:
    """The child: serves until told ``stop`` on stdin, or until its parent is gone and the
    other processes have disconnected (at most ``linger_s`` more seconds)."""
    import signal

    spec = json.loads(spec_json)

    from jaxlib import _jax  # what jax._src.lib._jax is, without importing jax

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)

    parent, linger_s = spec.pop("parent"), spec.pop("linger_s")
    address, num_nodes = spec.pop("address"), spec.pop("num_nodes")
    service = _jax.get_distributed_runtime_service(address, num_nodes, **spec)
    print("ready", flush=True)
    stop = threading.Event()

    def read_commands():
        for line in sys.stdin:
            if line.strip() == "stop":
                stop.set()
                return

    threading.Thread(target=read_commands, daemon=True).start()
    while not stop.wait(0.2):
        if os.getppid() != parent:
            _linger(int(address.rsplit(":", 1)[1]), linger_s, stop)
            break
    service.shutdown()
    os._exit(0)


def _linger(port: int, linger_s: float, stop: threading.Event) -> None:
    """Waits until no connection to ``port`` of this process is open for 1 s, for at most
    ``linger_s`` (all of it where /proc cannot tell)."""
    deadline = time.monotonic() + linger_s
    idle = 0
    while time.monotonic() < deadline and not stop.is_set():
        idle = idle + 1 if _open_connections(port) == 0 else 0
        if idle >= 3:
            return
        time.sleep(0.5)


def _open_connections(port: int) -> int | None:
    """Established TCP connections of this process on local ``port``; None if unknown."""
    try:
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not os.path.exists(table):
                continue
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                        count += inode in inodes
        return count
    except (OSError, ValueError, IndexError):
        return None
