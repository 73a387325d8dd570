"""Checkpoints (orbax) of the whole training state and the data iterators, and resume rules.

Layout of a workdir: ``checkpoints/<step>/`` holds items ``state`` (params, optimizer
state, step, RNG key, method state) and one item per data iterator (grain state);
``best/<step>/`` (fine-tuning) holds the best parameters by ``eval/target_valid_bpb``;
``config.json`` is the resolved config the run was started with.

Resume order: the latest checkpoint in ``workdir/checkpoints`` if any; else, for
fine-tuning, the parameters of ``config.finetune.init_from``; else those of
``config.model.init_from`` (continued pretraining from any parameters on disk, see
``read_params``); else a fresh init.
A workdir is only resumed with a config that matches it in every key that changes the
result (model, method, data, optimiser, seeds, batch sizes); the keys in
``HARMLESS_KEYS`` (run length, logging, evaluation and checkpoint cadence) may change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint._src import asyncio_utils

from adaptive_data import faults
from adaptive_data.sharding import leaf_path

HARMLESS_KEYS = (
    "train.steps",
    "train.eval_every",
    "train.log_every",
    "eval.",
    "checkpoint.",
    "data.num_threads",
    "data.tfds_data_dir",
    "finetune.init_from",
    "model.init_from",
    "log.",
)


class ConfigMismatchError(ValueError):
    """Resuming a workdir with a config that would change the result."""


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Values of a key that a later version added in its "off" state (e.g. extra_modules=()):
# a run saved before the key existed behaved the same, so resuming it is allowed.
_EMPTY_VALUES = (None, "", [], ())
# Keys a later version added with a default that does what runs saved without them did:
# such a run resumes while the key keeps that value (another value is a difference).
BACKWARD_DEFAULTS = {
    "data.reserved_fraction": 0.0,
    "data.generic_shard": "rest",
    "mixing.batch": "separate",
    "dsir.features": "bytes",
    "dsir.word_buckets": 10_000,
    "data.tokenizer": "bytes",
    "model.name": "transformer",
}
_ABSENT = object()


def _added_in_its_old_behaviour(key: str, value: Any) -> bool:
    """Whether ``key``, absent from one side, has a value that changes nothing there."""
    return value in _EMPTY_VALUES or BACKWARD_DEFAULTS.get(key, _ABSENT) == value


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ and that are not harmless, with both values.

    A key on one side only is no difference when its value on the other is empty (None,
    '', [] or ()) or its ``BACKWARD_DEFAULTS`` value: a setting added by a later version of
    the library, left as the earlier version behaved.
    """
    old, new = _flatten(saved), _flatten(current)
    diffs = []
    for key in sorted(set(old) | set(new)):
        if any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS_KEYS):
            continue
        if (key not in old and _added_in_its_old_behaviour(key, new[key])) or (
            key not in new and _added_in_its_old_behaviour(key, old[key])
        ):
            continue
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            diffs.append(f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}")
    return diffs


def check_and_save_config(
    config_json: dict[str, Any], workdir: pathlib.Path, has_checkpoint: bool
) -> None:
    """Refuses to resume with a config that matters differently; writes ``config.json``."""
    path = workdir / "config.json"
    config_json = json.loads(json.dumps(config_json))  # tuples -> lists, as saved
    if has_checkpoint and path.exists():
        diffs = config_differences(json.loads(path.read_text()), config_json)
        if diffs:
            raise ConfigMismatchError(
                f"Workdir {str(workdir)!r} holds a run with a different config; resuming it "
                "would mix two experiments. Differences:\n  "
                + "\n  ".join(diffs)
                + "\nUse a new --workdir, or restore the original values of these keys."
            )
    if jax.process_index() == 0:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(config_json, indent=2, sort_keys=True))
        tmp.replace(path)


# How long a failed restore waits for its other reads still in flight before giving up on them.
_DRAIN_TIMEOUT_S = 60.0


def _run_until_all_reads_end(coro):
    """orbax's ``asyncio_utils._run_sync_via_new_loop``, except that the event loop is
    closed only once every task still pending on it has ended.

    Orbax runs a restore as one coroutine that gathers a read per array
    (``asyncio.gather``) in a fresh event loop, and closes the loop as soon as the
    coroutine returns. When one read fails (a truncated file), the gather raises at once
    while the others are still in flight in tensorstore's threads; each of them, on
    completion, calls ``loop.call_soon_threadsafe`` on the closed loop and prints an
    ignored ``RuntimeError: Event loop is closed`` traceback. Here the loop first waits
    (at most ``_DRAIN_TIMEOUT_S``) for those reads, and their errors are retrieved, so a
    failed restore ends with nothing left to print.
    """
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=_DRAIN_TIMEOUT_S))
                for task in pending:
                    if task.done() and not task.cancelled():
                        task.exception()  # retrieved: no "exception was never retrieved"
        finally:
            asyncio.set_event_loop(None)
            loop.close()


@contextlib.contextmanager
def _reads_drained() -> Iterator[None]:
    """While active, orbax's synchronous calls close their event loop only after all the
    reads they started have ended (``_run_until_all_reads_end``)."""
    original = getattr(asyncio_utils, "_run_sync_via_new_loop", None)
    if original is None:  # another orbax version: nothing to replace
        yield
        return
    asyncio_utils._run_sync_via_new_loop = _run_until_all_reads_end
    try:
        yield
    finally:
        asyncio_utils._run_sync_via_new_loop = original


class CheckpointError(RuntimeError):
    """No checkpoint of a workdir that has some can be restored."""


class Checkpointer:
    """Saves and restores ``{state, <iterator name>...}`` with an orbax CheckpointManager.

    Writes go through ``faults.storage_errors``: a full or read-only disk raises a
    ``StorageError`` naming the directory, and orbax's write-to-temporary-then-rename
    leaves every earlier checkpoint as it was.
    """

    def __init__(self, directory: pathlib.Path, *, keep: int):
        self.directory = directory.absolute()
        self._keep = keep
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self._keep)
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, iterators: Mapping[str, Any]) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        items.update({name: grain.checkpoint.CheckpointSave(it) for name, it in iterators.items()})
        with faults.storage_errors(self.directory / str(step), "the checkpoint"):
            self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state, iterators: Mapping[str, Any]):
        """Returns the state of ``step``; sets the iterators' positions in place."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        items.update(
            {name: grain.checkpoint.CheckpointRestore(it) for name, it in iterators.items()}
        )
        with _reads_drained():  # a damaged checkpoint's failed reads end before we go on
            return self._manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def restore_latest_intact(
        self, abstract_state, iterators: Mapping[str, Any]
    ) -> tuple[int | None, Any]:
        """``(step, state)`` of the newest checkpoint that restores; ``(None, None)`` if none exist.

        A checkpoint that fails to restore (missing or truncated files, unreadable
        metadata) is logged with the reason and, once an older one has restored, moved
        aside to ``<step>.corrupt`` (never deleted). If none restores, nothing is moved
        and ``CheckpointError`` names each with its error.
        """
        failures: list[tuple[int, str]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state = self.restore(step, abstract_state, iterators)
            except Exception as error:  # orbax/tensorstore raise many types for one cause
                root_cause = list(faults.error_chain(error))[-1]
                reason = f"{type(root_cause).__name__}: {str(root_cause).splitlines()[0][:300]}"
                logging.warning(
                    "The checkpoint of step %d in %s cannot be restored (%s); trying an older one.",
                    step,
                    self.directory,
                    reason,
                )
                failures.append((step, reason))
                # A failed restore can leave the manager unusable ("Event loop is closed").
                self._manager.close()
                self._manager = self._open()
                continue
            for bad_step, reason in failures:
                moved = self._set_aside(bad_step)
                logging.warning(
                    "Resuming from step %d; the damaged checkpoint of step %d was moved to %s "
                    "(%s).",
                    step,
                    bad_step,
                    moved,
                    reason,
                )
            return step, state
        if failures:
            raise CheckpointError(
                f"None of the checkpoints in {self.directory} can be restored:\n  "
                + "\n  ".join(f"step {s}: {r}" for s, r in failures)
                + "\nNothing was moved or deleted. Restore them from a copy if you have one; "
                "to start the run over, move the checkpoints directory and metrics.jsonl "
                "of this workdir away (or use a new --workdir)."
            )
        return None, None

    def _set_aside(self, step: int) -> pathlib.Path:
        """Renames ``<step>`` to ``<step>.corrupt`` (``.corrupt-N`` if taken); process 0 only."""
        target = self.directory / f"{step}.corrupt"
        if jax.process_index() == 0:
            n = 1
            while target.exists():
                n += 1
                target = self.directory / f"{step}.corrupt-{n}"
            (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self._manager.close()
        self._manager = self._open()
        return target

    def wait(self) -> None:
        with faults.storage_errors(self.directory, "the checkpoint"):
            self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def _reader(root: pathlib.Path) -> ocp.CheckpointManager:
    """A manager that only lists and restores the checkpoints of an existing directory.

    (Orbax's ``read_only`` option would log three warnings per use; this manager never
    saves, so it changes nothing either.)
    """
    return ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(create=False))


def _checkpoint_root(path: str | pathlib.Path) -> pathlib.Path:
    root = pathlib.Path(path).expanduser().absolute()
    return root / "checkpoints" if (root / "checkpoints").is_dir() else root


def checkpoint_steps(path: str | pathlib.Path) -> list[int]:
    """Sorted steps of the finished checkpoints under ``path`` (a workdir or checkpoints dir)."""
    root = _checkpoint_root(path)
    if not root.is_dir():
        return []
    manager = _reader(root)
    steps = sorted(manager.all_steps())
    manager.close()
    return steps


def restore_params(path: str, step: int | None = None) -> Any:
    """Parameters of checkpoint ``step`` (default: the latest) under ``path``.

    ``path`` is a workdir or its checkpoints dir. Returned as saved (host arrays); the
    caller checks they fit its model.
    """
    root = _checkpoint_root(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"No checkpoint directory at {str(root)!r}; give the workdir "
            "of a run that saved checkpoints."
        )
    manager = _reader(root)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{str(root)!r} holds no checkpoint.")
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    return restored["state"]["params"]


def best_params_dir(workdir: str | pathlib.Path) -> pathlib.Path | None:
    """``workdir/best`` if that run kept its best parameters there (``BestParams``)."""
    best = pathlib.Path(workdir).expanduser().absolute() / "best"
    return best if best.is_dir() and any(p.name.isdigit() for p in best.iterdir()) else None


# Files of an orbax checkpoint of one pytree (``ocp.StandardCheckpointer().save(path, p)``).
_ORBAX_ITEM_FILES = ("_CHECKPOINT_METADATA", "_METADATA")


def read_params(path: str) -> Any:
    """The parameter pytree stored at ``path``, in one of three forms:

    - the workdir of a run of this package (or its ``checkpoints`` dir): its latest
      checkpoint's parameters;
    - a directory holding an orbax checkpoint of the parameters alone, as
      ``orbax.checkpoint.StandardCheckpointer().save(path, params)`` writes it;
    - a file of ``flax.serialization.to_bytes(params)`` (msgpack).

    Raises FileNotFoundError (naming the three forms) when ``path`` is none of them.
    """
    location = pathlib.Path(path).expanduser().absolute()
    if location.is_file():
        import flax.serialization

        return flax.serialization.msgpack_restore(location.read_bytes())
    if checkpoint_steps(location):
        return restore_params(str(location))
    if any((location / name).exists() for name in _ORBAX_ITEM_FILES):
        return ocp.StandardCheckpointer().restore(location)
    raise FileNotFoundError(
        f"No parameters at {str(location)!r}: give the workdir of a run, a directory "
        "saved by orbax.checkpoint.StandardCheckpointer().save(path, params), or a file "
        "of flax.serialization.to_bytes(params)."
    )


def restore_pretrained_params(path: str, abstract_params: Any, *, prefer_best: bool = False) -> Any:
    """Parameters at ``path`` (``read_params``), checked against the model's.

    For a run's workdir: the latest checkpoint's, or with ``prefer_best`` the best by
    target_valid where the run kept them (``workdir/best``: fine-tuning runs).
    ``abstract_params``: the expected tree of shapes and dtypes (``jax.eval_shape``).
    Raises ``ConfigMismatchError`` naming ``path`` and the first leaf that differs.
    """
    best = best_params_dir(path) if prefer_best else None
    if best is not None:
        manager = _reader(best)
        restored = manager.restore(
            manager.latest_step(), args=ocp.args.Composite(params=ocp.args.StandardRestore())
        )
        manager.close()
        params = restored["params"]
    else:
        params = read_params(path)
    expected = _leaf_layouts(abstract_params)
    got = _leaf_layouts(params)
    if expected != got:
        differing = sorted(set(expected.items()) ^ set(got.items()))[0][0]
        raise ConfigMismatchError(
            f"The parameters in {path!r} do not fit config.model (different sizes or "
            f"layers; first difference at {differing!r}: expected "
            f"{expected.get(differing, 'no such leaf')}, found "
            f"{got.get(differing, 'no such leaf')}); use parameters of the same model config "
            "and tokenizer."
        )
    return params


def _leaf_layouts(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``"/"``-joined path -> (shape, dtype) of every leaf."""
    return {
        leaf_path(path): (tuple(np.shape(x)), str(np.dtype(x.dtype)))
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
    }


class BestParams:
    """Keeps the parameters with the lowest ``eval/target_valid_bpb`` under workdir/best."""

    KEY = "eval/target_valid_bpb"

    def __init__(self, workdir: pathlib.Path, history: list[dict[str, Any]], resume_step: int):
        self._manager = ocp.CheckpointManager(
            (workdir / "best").absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=1)
        )
        for step in self._manager.all_steps():
            if step > resume_step:  # saved by a run killed after its last checkpoint
                self._manager.delete(step)
        values = [row[self.KEY] for row in history if self.KEY in row]
        self.best = min(values) if values else math.inf

    def update(self, step: int, params, eval_metrics: dict[str, float]) -> None:
        if eval_metrics[self.KEY] < self.best:
            self.best = eval_metrics[self.KEY]
            self._manager.save(
                step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)), force=True
            )

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
