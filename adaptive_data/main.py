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

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/default.py:method=mixing.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_MODE = flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "diagnose"],
    "train: train and evaluate; diagnose: the when-does-selection-work test on an early "
    "checkpoint of --workdir (config.diagnose.step; default the earliest at or after "
    "config.select.warmup_steps); writes WORKDIR/diagnose.json.",
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

flags.mark_flags_as_required(["config", "workdir"])


_CHATTY_LIBRARIES = ("/orbax/", "/grain/", "/tensorflow_datasets/", "/absl/")


class _HideLibraryInfo(std_logging.Filter):
    """Drops INFO records of libraries that log every checkpoint file operation."""

    def filter(self, record) -> bool:
        if record.levelno >= std_logging.WARNING:
            return True
        return not any(s in record.pathname for s in _CHATTY_LIBRARIES)


def _initialize_distributed() -> None:
    if _COORDINATOR.value:
        # CPU processes exchange collectives over gloo; other platforms ignore this option.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            _COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value
        )
    elif _DISTRIBUTED.value:
        jax.distributed.initialize()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_HideLibraryInfo())
    _initialize_distributed()
    logging.info(
        "Process %d of %d; %d local devices of %d: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices(),
    )
    from adaptive_data import diagnose, train

    if _MODE.value == "train":
        result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    else:
        result = diagnose.diagnose(
            _CONFIG.value, _WORKDIR.value, num_batches=_DIAGNOSE_BATCHES.value
        )
    if jax.process_index() == 0:
        print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    app.run(main)
