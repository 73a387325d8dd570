"""One writer per workdir: a run holds an exclusive lock on its workdir while it runs.

A scheduler that restarts a job while its first incarnation still runs would otherwise
have two runs write checkpoints and metrics rows into one workdir. The lock is two files
in the workdir:

- ``workdir.lock``: an empty file the holder keeps ``flock``-ed (exclusive, non-blocking).
  The kernel drops the lock when the holder's process dies, however it dies; on NFS the
  client's lock manager does the same on the server. The file is never deleted (deleting
  a flock-ed file lets two processes lock two different files of one name).
- ``workdir.lock.json``: the holder's record ``{host, pid, started, heartbeat, token}``,
  replaced atomically (write to a temporary file, rename). A thread of the holder
  refreshes ``heartbeat`` (``time.time()``) every ``HEARTBEAT_INTERVAL_S``; a clean end
  deletes the record.

A new run on the workdir (``acquire``):

1. takes the flock; if another process holds it, the workdir is in use: refused;
2. reads the record (no record: the workdir is free). The holder it names is alive if its
   heartbeat is younger than ``STALE_AFTER_S`` and, on this host, its pid exists. A
   record of this host whose pid is gone, or with a stale heartbeat, was left by a run
   that was killed (SIGKILL, preemption, a lost peer): taken over, with a log line. A
   fresh record of another host with the flock free means a file system whose flock does
   not reach across hosts (some shared file systems): the heartbeat decides, so the new
   run watches it until it advances (alive: refused, within one interval) or grows
   stale (taken over, within ``STALE_AFTER_S``);
3. writes its own record, and reads it back after ``SETTLE_S``: if another launcher's
   record replaced it meanwhile (two launchers on hosts without a common flock), that
   launcher wins and this one is refused.

A refusal raises ``WorkdirInUse`` before anything of the workdir is touched;
``adaptive_data.main`` exits with ``exit_codes.WORKDIR_IN_USE``. In a multi-process run
process 0 holds the lock and publishes its decision through the coordination service's
key-value store; every other process waits for it and raises the same ``WorkdirInUse``,
so all processes refuse together. Heartbeats compare the holder's clock with the
reader's: clocks of hosts that share a workdir must agree to well within
``STALE_AFTER_S``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import json
import os
import pathlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from absl import logging

from adaptive_data import exit_codes

LOCK_NAME = "workdir.lock"
RECORD_NAME = "workdir.lock.json"
HEARTBEAT_INTERVAL_S = 10.0
STALE_AFTER_S = 60.0
SETTLE_S = 0.5
# Key of process 0's decision in the coordination service (fresh for every launch).
_DECISION_KEY = "adaptive_data/workdir_lock"


class WorkdirInUse(RuntimeError):
    """Another live run holds the workdir; nothing of the workdir was touched."""


def _now() -> float:
    return time.time()


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _read_record(path: pathlib.Path) -> dict[str, Any] | None:
    """The holder's record; None if there is none (or it is unreadable: a partial write
    of a run killed before its rename cannot happen, so unreadable means damaged)."""
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return (
        record if isinstance(record, dict) and {"host", "pid", "heartbeat"} <= set(record) else None
    )


def _write_record(path: pathlib.Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{record['token']}.tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    tmp.replace(path)


def holder_description(record: dict[str, Any], now: float) -> str:
    """``host H, pid P, since S, last heartbeat N s ago``."""
    return (
        f"host {record['host']}, pid {record['pid']}, since "
        f"{_iso(record.get('started', record['heartbeat']))}, last heartbeat "
        f"{max(0.0, now - record['heartbeat']):.0f} s ago"
    )


def refusal(workdir: pathlib.Path, record: dict[str, Any] | None, now: float) -> str:
    """The one sentence a refused run prints."""
    holder = (
        holder_description(record, now) if record is not None else "its record is not written yet"
    )
    return (
        f"Workdir {workdir} is in use by another run ({holder}), so this run stops without "
        f"writing anything; wait for that run to end or stop it, or use another "
        f"--workdir (exit code {exit_codes.WORKDIR_IN_USE}, WORKDIR_IN_USE)."
    )


class WorkdirLock:
    """The exclusive lock of one workdir (see the module doc); ``acquire`` / ``release``.

    ``stale_after_s``, ``heartbeat_interval_s`` and ``settle_s`` are for tests.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        stale_after_s: float = STALE_AFTER_S,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        settle_s: float = SETTLE_S,
        host: str | None = None,
    ):
        self.workdir = pathlib.Path(workdir).expanduser().absolute()
        self.lock_path = self.workdir / LOCK_NAME
        self.record_path = self.workdir / RECORD_NAME
        self._stale_after_s = stale_after_s
        self._interval_s = heartbeat_interval_s
        self._settle_s = settle_s
        self._host = host or socket.gethostname()
        self._handle = None
        self._record: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._record is not None

    # -- taking it -----------------------------------------------------------------------

    def acquire(self) -> None:
        """Takes the lock or raises ``WorkdirInUse``; see the module doc for the rules."""
        if self.held:
            raise RuntimeError(f"{self.workdir}: this WorkdirLock is already held")
        self.workdir.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a")  # noqa: SIM115 (kept open while held)
        try:
            if not self._flock(handle):
                raise WorkdirInUse(refusal(self.workdir, self._read_settled(), _now()))
            previous = self._judge(_read_record(self.record_path))
            record = {
                "host": self._host,
                "pid": os.getpid(),
                "started": _now(),
                "heartbeat": _now(),
                "token": uuid.uuid4().hex,
            }
            _write_record(self.record_path, record)
            time.sleep(self._settle_s)
            winner = _read_record(self.record_path)
            if winner is None or winner.get("token") != record["token"]:
                raise WorkdirInUse(refusal(self.workdir, winner, _now()))
        except BaseException:
            handle.close()
            raise
        if previous is not None:
            gone, reason = previous
            logging.warning(
                "Took over the lock of workdir %s, left by a run that did not end (host %s, "
                "pid %s, since %s; %s).",
                self.workdir,
                gone["host"],
                gone["pid"],
                _iso(gone.get("started", gone["heartbeat"])),
                reason,
            )
        self._handle, self._record = handle, record
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._heartbeat, name="workdir-lock-heartbeat", daemon=True
        )
        self._thread.start()

    def _flock(self, handle) -> bool:
        """True if the flock is ours (or the file system has none); False if it is held."""
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                logging.info(
                    "No flock on the file system of %s (%s); the lock relies on its heartbeat.",
                    self.workdir,
                    error.strerror,
                )
                return True
            raise
        return True

    def _read_settled(self) -> dict[str, Any] | None:
        """The record of a holder that has just taken the flock may not be written yet."""
        deadline = _now() + max(2.0, 4 * self._settle_s)
        record = _read_record(self.record_path)
        while record is None and _now() < deadline:
            time.sleep(0.05)
            record = _read_record(self.record_path)
        return record

    def _judge(self, record: dict[str, Any] | None) -> tuple[dict[str, Any], str] | None:
        """None if the workdir is free; ``(record, reason)`` if its holder is gone (to be
        taken over); raises ``WorkdirInUse`` if it is alive."""
        if record is None:
            return None
        same_host = record["host"] == self._host
        if same_host and not _pid_exists(record["pid"]):
            return record, "its process no longer exists"
        # The flock is ours, yet the holder may live: on another host whose flock does not
        # reach ours, or (same host) a reused pid. Watch its heartbeat.
        first_beat = record["heartbeat"]
        while True:
            age = _now() - record["heartbeat"]
            if age >= self._stale_after_s:
                return record, f"its heartbeat is {age:.0f} s old"
            if record["heartbeat"] != first_beat:
                raise WorkdirInUse(refusal(self.workdir, record, _now()))
            time.sleep(min(1.0, self._interval_s / 4))
            newer = _read_record(self.record_path)
            if newer is None:  # it ended cleanly meanwhile
                return None
            if newer.get("token") != record.get("token"):  # someone else took it
                raise WorkdirInUse(refusal(self.workdir, newer, _now()))
            record = newer

    # -- holding it ----------------------------------------------------------------------

    def _heartbeat(self) -> None:
        while not self._stop.wait(self._interval_s):
            record = self._record
            if record is None:
                return
            current = _read_record(self.record_path)
            if current is not None and current.get("token") != record["token"]:
                logging.error(
                    "Workdir %s was taken over by another run (%s) while this one still runs: "
                    "this run's heartbeat stalled for over %g s. Two runs now write into it; "
                    "stop one of them.",
                    self.workdir,
                    holder_description(current, _now()),
                    self._stale_after_s,
                )
                return
            with contextlib.suppress(OSError):
                record = {**record, "heartbeat": _now()}
                _write_record(self.record_path, record)
                self._record = record

    def release(self) -> None:
        """Deletes the record (if still ours) and unlocks; idempotent."""
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        record, self._record = self._record, None
        with contextlib.suppress(OSError):
            current = _read_record(self.record_path)
            if current is not None and current.get("token") == record["token"]:
                self.record_path.unlink()
        handle, self._handle = self._handle, None
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


# -- one lock per job, held by process 0 -------------------------------------------------


def _distributed_client():
    """jax's coordination-service client if this is a multi-process run, else None."""
    import jax

    if jax.process_count() == 1:
        return None
    from jax._src import distributed

    return distributed.global_state.client


@contextlib.contextmanager
def hold(workdir: str | os.PathLike, **options) -> Iterator[WorkdirLock | None]:
    """Holds ``workdir``'s lock for the block (process 0 of a multi-process run; the others
    wait for its decision and yield None). Raises ``WorkdirInUse`` on every process if the
    workdir is in use. ``options``: those of ``WorkdirLock``."""
    import jax

    client = _distributed_client()
    lock = WorkdirLock(workdir, **options) if jax.process_index() == 0 else None
    if lock is not None:
        try:
            lock.acquire()
        except WorkdirInUse as refused:
            if client is not None:
                client.key_value_set(_DECISION_KEY, json.dumps({"refused": str(refused)}))
            raise
        if client is not None:
            client.key_value_set(_DECISION_KEY, json.dumps({"refused": None}))
    else:
        wait_s = options.get("stale_after_s", STALE_AFTER_S) + 120
        decision = json.loads(client.blocking_key_value_get(_DECISION_KEY, int(wait_s * 1000)))
        if decision["refused"] is not None:
            raise WorkdirInUse(decision["refused"])
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def exclusive(function: Callable) -> Callable:
    """Decorates ``function(config, workdir, ...)`` to run holding ``workdir``'s lock."""

    @functools.wraps(function)
    def locked(config, workdir, *args, **kwargs):
        with hold(workdir):
            return function(config, workdir, *args, **kwargs)

    return locked
