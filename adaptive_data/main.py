"""Command-line entry point.

    python -m adaptive_data.main --config=configs/default.py --workdir=/tmp/run

The logic lives in ``adaptive_data.train`` so tests and notebooks can import it.
Multi-process runs (several hosts, or several local CPU processes) pass
``--coordinator_address`` / ``--num_processes`` / ``--process_id``, or set
``--distributed`` on platforms where ``jax.distributed.initialize()`` finds them itself
(TPU pods, SLURM).
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import socket
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from adaptive_data import exit_codes, peers

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/default.py:method=mixing.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "diagnose"],
    "train: train and evaluate; diagnose: the preflight test (will selection help at equal "
    "steps, will it pay for its compute) on an early checkpoint of --workdir "
    "(config.diagnose.step; default the latest within 15% of train.steps); writes "
    "WORKDIR/diagnose.json.",
)
_DIAGNOSE_BATCHES = flags.DEFINE_integer(
    "diagnose_batches", 8, "Big batches averaged over by --mode=diagnose."
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() with auto-detected settings."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
_PEER_TIMEOUT = flags.DEFINE_float(
    "peer_timeout_s",
    60.0,
    "Multi-process runs: a process not heard from for this many seconds is taken for dead; "
    "the others then exit with code 76 (exit_codes.PEER_LOST), naming it and the last "
    "checkpoint. Relaunch all processes with the same command to resume.",
)

_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir",
    None,
    "Directory of JAX's persistent compilation cache: a run whose step functions were "
    "compiled before (same shapes, same jax) loads them instead of compiling again "
    "(seconds to minutes per run on CPU). Default: $JAX_COMPILATION_CACHE_DIR if set, "
    "else ~/.cache/adaptive_data/xla/HOSTNAME (one per machine: compiled CPU code is "
    "specific to the CPU it was built on). An empty value turns the cache off.",
)

flags.mark_flags_as_required(["config", "workdir"])


_CHATTY_LIBRARIES = ("/orbax/", "/grain/", "/tensorflow_datasets/", "/absl/")


class _HideLibraryInfo(std_logging.Filter):
    """Drops INFO records of libraries that log every checkpoint file operation."""

    def filter(self, record) -> bool:
        if record.levelno >= std_logging.WARNING:
            return True
        return not any(s in record.pathname for s in _CHATTY_LIBRARIES)


def _exit_code(error: BaseException) -> int | None:
    """The documented exit code of an expected stop (``exit_codes``); None otherwise."""
    from adaptive_data import checkpoint, faults, validation, workdir_lock

    codes = (
        (workdir_lock.WorkdirInUse, exit_codes.WORKDIR_IN_USE),
        (faults.Preempted, exit_codes.PREEMPTED),
        (faults.StorageError, exit_codes.STORAGE),
        (checkpoint.CheckpointError, exit_codes.NO_RESTORABLE_CHECKPOINT),
        (validation.ConfigError, exit_codes.BAD_CONFIG),
        (checkpoint.ConfigMismatchError, exit_codes.BAD_CONFIG),
    )
    return next((code for kind, code in codes if isinstance(error, kind)), None)


def compilation_cache_dir(flag_value: str | None, environ=os.environ) -> str | None:
    """Where JAX's persistent compilation cache goes; None leaves it off.

    An explicit ``--compilation_cache_dir`` wins ('' turns the cache off); then
    ``$JAX_COMPILATION_CACHE_DIR``, which JAX reads itself; then a directory per host under
    ``~/.cache``, so cluster nodes sharing a home directory never load each other's
    CPU code."""
    if flag_value is not None:
        return flag_value or None
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return environ["JAX_COMPILATION_CACHE_DIR"]
    home = os.path.expanduser("~")
    return os.path.join(home, ".cache", "adaptive_data", "xla", socket.gethostname())


def _enable_compilation_cache() -> None:
    """Points JAX's persistent cache at ``compilation_cache_dir`` before anything compiles."""
    path = compilation_cache_dir(_COMPILATION_CACHE.value)
    jax.config.update("jax_compilation_cache_dir", path)
    # Every program, however fast it compiled: with JAX's default threshold (1 s) what is
    # cached depends on the machine's load, and a rerun may compile again.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if path:
        logging.info("Compiled programs are cached in %s (--compilation_cache_dir).", path)


def _initialize_distributed() -> None:
    """``jax.distributed.initialize`` through ``peers``: a process that dies makes the others
    exit with ``exit_codes.PEER_LOST`` after ``--peer_timeout_s``."""
    if _COORDINATOR.value:
        # CPU processes exchange collectives over gloo; other platforms ignore this option.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        peers.initialize(
            _COORDINATOR.value,
            _NUM_PROCESSES.value,
            _PROCESS_ID.value,
            workdir=_WORKDIR.value,
            timeout_s=_PEER_TIMEOUT.value,
        )
    elif _DISTRIBUTED.value:
        peers.initialize(workdir=_WORKDIR.value, timeout_s=_PEER_TIMEOUT.value)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_HideLibraryInfo())
    _enable_compilation_cache()
    _initialize_distributed()
    logging.info(
        "Process %d of %d; %d local devices of %d: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices(),
    )
    from adaptive_data import diagnose, train, workdir_lock

    try:
        if _MODE.value == "train":  # holds the workdir's lock itself
            result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
        else:
            with workdir_lock.hold(_WORKDIR.value):  # it writes WORKDIR/diagnose.json
                result = diagnose.diagnose(
                    _CONFIG.value, _WORKDIR.value, num_batches=_DIAGNOSE_BATCHES.value
                )
    except BaseException as error:
        code = _exit_code(error)
        # Multi-process: a lost peer exits here with PEER_LOST; else the others are told.
        if not peers.end(error):
            peers.exit_now(code or 1, error)  # some processes are gone: do not wait for them
        if code is None:
            raise
        # An expected stop: its message says what happened and what to do; no traceback.
        log = logging.warning if code == exit_codes.PREEMPTED else logging.error
        log("%s", error)
        sys.exit(code)
    all_there = peers.finish()  # waits until every process has finished
    if jax.process_index() == 0:
        print(json.dumps(result, sort_keys=True))
    if not all_there:
        peers.exit_now(0)


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    app.run(main)
