"""What a run does when the machine fails it: preemption and storage errors.

- ``PreemptionWatch``: a SIGTERM (what TPU/GPU schedulers send before they stop a job)
  is turned into a checkpoint at the next step boundary. Single process: our own
  SIGTERM handler sets a flag. Several processes (``jax.distributed``): JAX's
  preemption service catches the signal on any host and every process agrees on the
  step through ``multihost_utils.reached_preemption_sync_point``, so all save the same
  step. The driver then raises ``Preempted``; ``adaptive_data.main`` exits with
  ``exit_codes.PREEMPTED`` and the same command resumes the run.
- ``storage_errors(path, what)``: an ``OSError`` (disk full, read-only file system,
  permissions) while writing a checkpoint or a metrics row becomes a ``StorageError``
  naming the path and the error; nothing already written is touched.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from collections.abc import Iterator

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
    """The run saved a checkpoint at ``step`` after a preemption notice and stopped."""

    def __init__(self, step: int, checkpoint_dir: str):
        self.step = step
        self.checkpoint_dir = checkpoint_dir
        super().__init__(
            f"Preempted: saved the checkpoint of step {step} in {checkpoint_dir} and stopped; "
            "run the same command again to resume from it."
        )


class StorageError(OSError):
    """A checkpoint or metrics write failed; earlier checkpoints and rows are intact."""


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and its causes, outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


@contextlib.contextmanager
def storage_errors(path, what: str) -> Iterator[None]:
    """Re-raises an ``OSError`` in the block (or as the cause of another error, as
    orbax wraps them) as a ``StorageError`` naming ``what``, ``path`` and the error."""
    try:
        yield
    except StorageError:
        raise
    except Exception as error:
        os_error = next((e for e in error_chain(error) if isinstance(e, OSError)), None)
        if os_error is None:
            raise
        reason = os_error.strerror or str(os_error)
        code = errno.errorcode.get(os_error.errno, "") if os_error.errno else ""
        raise StorageError(
            os_error.errno,
            f"Could not write {what} to {path}: {reason}{f' ({code})' if code else ''}. "
            "Every earlier checkpoint and metrics row is intact. Free space (or make the "
            "directory writable) and run the same command again to resume from the last "
            "checkpoint.",
        ) from error


class PreemptionWatch:
    """``reached(step)`` is True at the step boundary where the run must save and stop.

    Use as a context manager around the training loop: it installs the SIGTERM handler
    (single process, main thread only) and restores the previous one on exit.
    """

    def __init__(self):
        self._distributed = jax.process_count() > 1
        self._signalled = threading.Event()
        self._previous = None

    def __enter__(self) -> PreemptionWatch:
        in_main_thread = threading.current_thread() is threading.main_thread()
        if not self._distributed and in_main_thread:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        self._signalled.set()

    def reached(self, step: int) -> bool:
        """Called by every process after each model update, with the same ``step``."""
        if self._distributed:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._signalled.is_set()
