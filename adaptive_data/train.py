"""The training driver: data, model, method, mesh, checkpoints, evaluation, logging.

``train_and_evaluate(config, workdir)`` runs ``config.method`` for ``config.train.steps``
model updates, evaluating bits per byte on the generic validation split and the target
splits every ``train.eval_every`` steps, checkpointing every ``checkpoint.every`` steps
and resuming from the latest checkpoint of ``workdir`` (see ``checkpoint.py``).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from adaptive_data import checkpoint as ckpt
from adaptive_data import faults, methods, run_setup, sharding, validation, workdir_lock
from adaptive_data import metrics as metrics_lib
from adaptive_data.data import pipeline, sources
from adaptive_data.models import lm

# Evaluation splits: metric name -> corpus split.
EVAL_SPLITS = {"generic": "generic_valid", "target_valid": "target_valid", "target": "target_test"}
# Offsets that give each input stream its own shuffling seed.
_STREAM_SEED_OFFSETS = {"generic": 1, "target": 2}


def train_streams(corpus, method, config, tokenizer) -> dict[str, Any]:
    """An iterator of host batches per input stream of ``method`` (``method.streams``:
    stream -> (corpus split, global batch size)) in examples of ``tokenizer`` (the run's
    ``data.tokenizer``), each with its own shuffling seed; the
    batches of one step are one ``next`` of each. This process reads its share. A
    ``method.document_scorer`` is built here, once, and scores every document read."""
    score_document = (
        None if method.document_scorer is None else method.document_scorer(corpus.splits)
    )
    return {
        name: iter(
            pipeline.train_stream(
                corpus.splits[split],
                domains=corpus.domains,
                max_length=config.model.max_length,
                tokenizer=tokenizer,
                global_batch_size=batch_size,
                seed=config.seed * 1000 + _STREAM_SEED_OFFSETS[name],
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                num_threads=config.data.num_threads,
                score_document=score_document,
            )
        )
        for name, (split, batch_size) in method.streams.items()
    }


class _Evaluator:
    """Bits per byte of fixed, pre-placed batches of each evaluation split."""

    def __init__(self, model: lm.LanguageModel, corpus, config, to_device):
        self._eval_fn = jax.jit(lm.make_eval_fn(model))
        self._sets = {
            name: [
                to_device(sharding.process_rows(b))
                for b in pipeline.eval_batches(
                    corpus.splits[split],
                    domains=corpus.domains,
                    max_length=config.model.max_length,
                    tokenizer=model.tokenizer,
                    batch_size=config.eval.batch_size,
                    max_examples=config.eval.max_examples,
                )
            ]
            for name, split in EVAL_SPLITS.items()
        }

    def __call__(self, params) -> dict[str, float]:
        results = {}
        for name, batches in self._sets.items():
            totals = sharding.to_host([self._eval_fn(params, b) for b in batches])
            nll = sum(float(t[0]) for t in totals)
            num_bytes = sum(float(t[1]) for t in totals)
            results[f"eval/{name}_bpb"] = nll / math.log(2.0) / max(num_bytes, 1.0)
        return results


@workdir_lock.exclusive
def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Trains ``config.method``; returns the last metrics row written.

    Holds the workdir's lock throughout (``workdir_lock``): raises
    ``workdir_lock.WorkdirInUse``, touching nothing, if another live run holds it.
    Raises ``validation.ConfigError`` (every bad value at once) before anything runs,
    ``faults.Preempted`` after saving a checkpoint on SIGTERM, ``faults.StorageError``
    when a checkpoint or metrics write fails, and ``checkpoint.CheckpointError`` when no
    checkpoint of the workdir restores.
    """
    validation.validate_config(config)
    workdir = pathlib.Path(workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointer = ckpt.Checkpointer(workdir / "checkpoints", keep=config.checkpoint.keep)
    resume_step = checkpointer.latest_step()
    ckpt.check_and_save_config(config.to_dict(), workdir, resume_step is not None)

    corpus = sources.load_corpus(config.data)
    setup = run_setup.build(config, domains=corpus.domains, target_domain=corpus.target_domain)
    method = setup.method

    # ------------------------------------------------------------------ mesh & batches
    mesh = sharding.make_mesh(config.mesh.fsdp)
    data_sharding = sharding.batch_sharding(mesh)
    logging.info(
        "Data: %s; domains %s; target domain %s; tokenizer %s (vocabulary %d); model %s; "
        "method %s; mesh %s.",
        corpus.description,
        corpus.domains,
        corpus.target_domain,
        setup.model.tokenizer.spec,
        setup.model.vocab_size,
        setup.model.name,
        method.name,
        dict(mesh.shape),
    )
    for name, (_, batch_size) in method.streams.items():
        sharding.check_divisible(
            batch_size,
            f"the global {name} batch size ({method.name}: "
            "config.train.*batch_size x config.select.downsampling)",
        )
    sharding.check_divisible(config.eval.batch_size, "config.eval.batch_size")

    def to_device(batch):
        return sharding.to_global(pipeline.device_view(batch), data_sharding)

    iterators = train_streams(corpus, method, config, setup.model.tokenizer)

    # ------------------------------------------------------------------ state
    abstract_state = setup.abstract_state()
    state_sharding = sharding.state_shardings(abstract_state, mesh, setup.model.partition)
    resume_step, state = checkpointer.restore_latest_intact(
        jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            abstract_state,
            state_sharding,
        ),
        iterators,
    )
    if resume_step is not None:
        logging.info("Resumed from the checkpoint of step %d in %s.", resume_step, workdir)
    else:
        state = setup.initial_state(state_sharding)
        # A method's own starting point (finetune.init_from) before the model's.
        init_from = method.init_from or config.model.init_from
        if init_from:
            logging.info("Starting from the parameters of %s.", init_from)
            params = ckpt.restore_pretrained_params(init_from, abstract_state.params)
            state = jax.device_put(
                state.replace(params=jax.tree.map(jnp.asarray, params)), state_sharding
            )
        if method.load_state is not None:

            def target_train():  # every target_train example once, for load_state
                split = corpus.splits["target_train"]
                return pipeline.eval_batches(
                    split,
                    domains=corpus.domains,
                    max_length=config.model.max_length,
                    tokenizer=setup.model.tokenizer,
                    batch_size=config.eval.batch_size,
                    max_examples=len(split),
                )

            method_state = method.load_state(state.method_state, target_train)
            state = jax.device_put(state.replace(method_state=method_state), state_sharding)

    train_step = methods.jit_train_step(method, state_sharding)
    evaluator = _Evaluator(setup.model, corpus, config, to_device)
    writer = metrics_lib.MetricWriter(workdir, resume_step=resume_step)
    best = None
    if method.keep_best:
        history = metrics_lib.read_metrics(workdir, missing_ok=True)  # rewound by the writer
        best = ckpt.BestParams(workdir, history, resume_step or 0)

    # ------------------------------------------------------------------ loop
    step = int(sharding.to_host(state.step))
    total = int(config.train.steps)
    progress = metrics_lib.Progress(step, total)
    collapse = metrics_lib.CollapseMonitor(
        method.batch_size, big_batch_size=method.streams.get("generic", (None, 0))[1]
    )
    last_row: dict[str, Any] = {}
    if step == 0:
        last_row = evaluator(state.params)
        writer.write(0, last_row)
        logging.info("step 0/%d | %s", total, last_row)
        if best:
            best.update(0, state.params, last_row)
        progress.restart_clock()
    pending = None  # (step, device metrics) read one step late to keep dispatch async
    try:
        with faults.PreemptionWatch() as preemption:
            while step < total:
                batches = {name: to_device(next(it)) for name, it in iterators.items()}
                with jax.set_mesh(mesh):
                    state, step_metrics = train_step(state, batches, **method.flags(step))
                step += 1
                if pending is not None:
                    metrics_lib.check_finite(pending[0], sharding.to_host(pending[1]))
                pending = (step, step_metrics)
                preempted = preemption.reached(step)
                is_eval = step % config.train.eval_every == 0 or step == total
                is_log = step % config.train.log_every == 0 or is_eval
                is_ckpt = step % config.checkpoint.every == 0 or step == total or preempted
                if not (is_log or is_ckpt):
                    continue
                row = metrics_lib.name_domains(sharding.to_host(step_metrics), corpus.domains)
                metrics_lib.check_finite(step, row)
                for message in collapse.check(step, row):
                    logging.warning("%s", message)
                pending = None
                if is_log:
                    row["steps_per_sec"] = progress.rate(step)
                    if is_eval:
                        row.update(evaluator(state.params))
                        metrics_lib.check_finite(step, row)
                        if best:
                            best.update(step, state.params, row)
                    writer.write(step, row)
                    logging.info("%s", progress.line(step, row["steps_per_sec"], row))
                    last_row = {"step": step, **row}
                if is_ckpt:
                    checkpointer.save(step, state, iterators)
                if preempted:
                    # No metrics row for this step: the resumed run writes the rows an
                    # uninterrupted one would.
                    raise faults.Preempted(step, str(checkpointer.directory / str(step)))
                progress.restart_clock()
    finally:
        checkpointer.wait()
        checkpointer.close()
        writer.close()
        if best:
            best.close()
    if best:
        last_row["eval/best_target_valid_bpb"] = best.best
    return {k: metrics_lib.to_python(v) for k, v in last_row.items()}
