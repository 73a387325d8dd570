"""The when-does-selection-work test (docs/algorithms.md, "When does selection help").

At an early checkpoint theta of a workdir (``config.diagnose.step``; default the earliest
at or after ``config.select.warmup_steps``), for several big generic batches B
(``select.downsampling * b`` examples), each with two ``target_train`` batches T_a, T_b and
one held-out ``target_valid`` batch V:

- the scores are the exact alignment filter's ``a_i = <grad l_i, g_a>`` under the
  gradient g_a of T_a; g_sel is the mean gradient of the b best-scoring examples of B,
  g_rand that of a uniform b of B (its first b: the stream is shuffled);
(i)   alignment ``<g_sel, g_v> - <g_rand, g_v>`` and the same difference of cosines with
      g_v, the gradient of the held-out batch V. Not against g_a: ``<g_sel, g_a>`` is the
      mean of the b largest scores, so the top b would beat a uniform b by construction,
      even when g_a is pure noise;
(ii)  one-step look-ahead gain ``L_V(theta - eta g_rand) - L_V(theta - eta g_sel)``
      (positive: the selected batch helps the target more than a random one),
      eta = ``train.learning_rate``;
(iii) Spearman rank correlation of the per-example scores of B under g_a and under the
      gradient of T_b, and under g_a at theta and at a second checkpoint (when the
      workdir keeps two): the one just before theta, or, when theta is the first
      checkpoint, the one just after it.

Selection is expected to pay off when (i) and (ii) are clearly positive (their mean
is more than two standard errors above zero) and (iii) is stable (mean rank
correlation >= 0.5).

The statistics work with any per-example loss ``loss_fn(params, batch) -> float[n]`` and
batches given as pytrees of arrays (``make_batch_statistics`` and
``batch_statistics_summary``), so they can be checked on problems with a known answer.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from adaptive_data import checkpoint as ckpt
from adaptive_data import validation
from adaptive_data.core import alignment, selection
from adaptive_data.data import pipeline, sources
from adaptive_data.models import transformer

# Thresholds of the verdict.
MIN_RANK_CORRELATION = 0.5
STANDARD_ERRORS = 2.0


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation (Pearson correlation of ranks; ties broken by position)."""
    rx = np.argsort(np.argsort(x)).astype(np.float64)
    ry = np.argsort(np.argsort(y)).astype(np.float64)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt(np.sum(rx**2) * np.sum(ry**2))
    return float(np.sum(rx * ry) / denom) if denom > 0 else 0.0


def make_batch_statistics(loss_fn, b: int, eta: float):
    """Returns the jitted statistics of one big batch.

    Args:
      loss_fn: ``(params, batch) -> float[n]`` per-example losses.
      b: number of examples selected out of each big batch.
      eta: step size of the look-ahead (ii).

    Returns:
      ``stats(params, big, target_a, target_b, heldout, previous_params=None)`` ->
      ``(values, scores)``: ``values`` the scalars of (i) and (ii) (``alignment_*`` and
      ``cosine_*`` for ``selected``, ``random`` and their ``gain``, ``lookahead_gain``);
      ``scores`` the per-example scores of ``big`` under g_a (``"a"``), under the
      gradient of ``target_b`` (``"b"``) and, when ``previous_params`` is given, under
      g_a at ``previous_params`` (``"previous"``), for (iii).
    """

    def scores_under(params, big, target):
        g = alignment.mean_gradient(loss_fn, params, target)
        return alignment.per_example_alignment(loss_fn, params, big, g, method="jvp"), g

    def stats(params, big, target_a, target_b, heldout, previous_params=None):
        scores_a, _ = scores_under(params, big, target_a)
        scores_b, _ = scores_under(params, big, target_b)
        g_v = alignment.mean_gradient(loss_fn, params, heldout)
        top, _ = selection.top_b(scores_a, b)
        g_sel = alignment.mean_gradient(loss_fn, params, selection.gather(big, top))
        g_rand = alignment.mean_gradient(loss_fn, params, selection.gather(big, jnp.arange(b)))

        def heldout_loss(g):
            stepped = jax.tree.map(lambda p, d: p - eta * d, params, g)
            return jnp.mean(loss_fn(stepped, heldout))

        def cosine(g):
            return optax.tree.vdot(g, g_v) / (optax.tree.norm(g) * optax.tree.norm(g_v) + 1e-30)

        values = {
            "alignment_selected": optax.tree.vdot(g_sel, g_v),
            "alignment_random": optax.tree.vdot(g_rand, g_v),
            "cosine_selected": cosine(g_sel),
            "cosine_random": cosine(g_rand),
            "lookahead_gain": heldout_loss(g_rand) - heldout_loss(g_sel),
        }
        values["alignment_gain"] = values["alignment_selected"] - values["alignment_random"]
        values["cosine_gain"] = values["cosine_selected"] - values["cosine_random"]
        scores = {"a": scores_a, "b": scores_b}
        if previous_params is not None:
            scores["previous"], _ = scores_under(previous_params, big, target_a)
        return values, scores

    return jax.jit(stats)


def _summary(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    stderr = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return {
        "mean": float(arr.mean()),
        "stderr": stderr,
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def batch_statistics_summary(
    stats_fn, params, batches: Iterable[Sequence[Any]], previous_params=None
) -> dict[str, dict[str, float]]:
    """Runs ``stats_fn`` (from ``make_batch_statistics``) over big batches and summarises.

    Args:
      stats_fn: the statistics of one big batch.
      params: parameters theta at which everything is measured.
      batches: iterable of ``(big, target_a, target_b, heldout)`` batches.
      previous_params: a second checkpoint's parameters, for ``rank_corr_checkpoints``
        (omitted from the results when None).

    Returns:
      ``{statistic: {"mean", "stderr", "min", "max"}}`` over the batches, for every value
      of ``stats_fn`` plus ``rank_corr_target_batches`` (and ``rank_corr_checkpoints``):
      the input of ``verdict``.
    """
    per_batch: dict[str, list[float]] = {}
    for big, target_a, target_b, heldout in batches:
        values, scores = stats_fn(params, big, target_a, target_b, heldout, previous_params)
        values = {k: float(v) for k, v in values.items()}
        scores = {k: np.asarray(v) for k, v in scores.items()}
        values["rank_corr_target_batches"] = rank_correlation(scores["a"], scores["b"])
        if "previous" in scores:
            values["rank_corr_checkpoints"] = rank_correlation(scores["a"], scores["previous"])
        for k, v in values.items():
            per_batch.setdefault(k, []).append(v)
    if not per_batch:
        raise ValueError("batch_statistics_summary needs at least one big batch.")
    return {k: _summary(v) for k, v in per_batch.items()}


def verdict(results: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether selection should pay off, and the reasons (one line per statistic)."""
    reasons, ok = [], True
    for name, key in (
        ("(i) alignment gain", "alignment_gain"),
        ("(ii) look-ahead gain", "lookahead_gain"),
    ):
        s = results[key]
        positive = s["mean"] > STANDARD_ERRORS * s["stderr"]
        ok &= positive
        reasons.append(
            f"{name}: mean {s['mean']:.4g} +- {s['stderr']:.3g} -> "
            f"{'clearly positive' if positive else 'not clearly positive'}"
        )
    for key in ("rank_corr_target_batches", "rank_corr_checkpoints"):
        if key not in results:
            reasons.append(f"(iii) {key}: not computed")
            continue
        stable = results[key]["mean"] >= MIN_RANK_CORRELATION
        ok &= stable
        reasons.append(
            f"(iii) {key}: {results[key]['mean']:.3f} -> "
            f"{'stable' if stable else 'unstable'} (threshold {MIN_RANK_CORRELATION})"
        )
    return bool(ok), reasons


def choose_checkpoints(
    steps: Sequence[int], warmup_steps: int, step: int | None = None
) -> tuple[int, int | None]:
    """The checkpoint to diagnose and the one to compare its scores with.

    Args:
      steps: the available checkpoint steps (any order, non-empty).
      warmup_steps: the selection warm-up, ``config.select.warmup_steps``.
      step: the requested step (``config.diagnose.step``), or None: the earliest
        checkpoint at or after the warm-up (the latest one if none is).

    Returns:
      ``(step, comparison_step)``: comparison_step is the checkpoint just before
      ``step``, or the one just after it when ``step`` is the first; None when there is
      only one checkpoint.

    Raises:
      ValueError: ``step`` is given and no checkpoint has it.
    """
    steps = sorted(steps)
    if step is None:
        chosen = next((s for s in steps if s >= warmup_steps), steps[-1])
    elif step in steps:
        chosen = step
    else:
        raise ValueError(
            f"config.diagnose.step={step} has no checkpoint; available steps: {steps}."
        )
    i = steps.index(chosen)
    if i > 0:
        return chosen, steps[i - 1]
    return chosen, steps[1] if len(steps) > 1 else None


def diagnose(config, workdir: str, *, num_batches: int = 8) -> dict[str, Any]:
    """Computes the statistics at an early checkpoint; writes ``workdir/diagnose.json``.

    The checkpoint is ``config.diagnose.step`` (default: see ``choose_checkpoints``).
    The report holds ``checkpoint_step``, ``comparison_checkpoint_step`` (the second
    checkpoint of ``rank_corr_checkpoints``, or None), ``num_batches``, ``big_batch``,
    ``b``, ``eta``, ``statistics`` (``batch_statistics_summary``),
    ``selection_expected_to_help`` and ``reasons`` (``verdict``).

    Raises:
      adaptive_data.validation.ConfigError: the config has values out of range.
    """
    validation.validate_config(config)
    workdir_path = pathlib.Path(workdir).expanduser()
    steps = ckpt.checkpoint_steps(workdir_path)
    if not steps:
        raise FileNotFoundError(
            f"No checkpoint in {str(workdir_path)!r}: train first "
            "(--mode=train) with the same --config and --workdir."
        )
    requested = (config.get("diagnose") or {}).get("step")
    step, comparison_step = choose_checkpoints(steps, int(config.select.warmup_steps), requested)
    corpus = sources.load_corpus(config.data)
    model = transformer.from_config(config.model)
    loss_fn = transformer.make_loss_fn(model)
    b = int(config.train.batch_size)
    big_size = int(config.select.downsampling) * b
    eta = float(config.train.learning_rate)
    stats_fn = make_batch_statistics(loss_fn, b, eta)

    def stream(split, size, offset):
        return iter(
            pipeline.train_stream(
                corpus.splits[split],
                domains=corpus.domains,
                max_length=config.model.max_length,
                global_batch_size=size,
                seed=config.seed * 1000 + offset,
            )
        )

    def batches():
        generic = stream("generic_train", big_size, 11)
        targets = stream("target_train", int(config.train.target_batch_size), 12)
        heldout = stream("target_valid", int(config.train.target_batch_size), 13)
        for _ in range(num_batches):
            yield tuple(
                pipeline.device_view(next(it)) for it in (generic, targets, targets, heldout)
            )

    params = ckpt.restore_params(str(workdir_path), step=step)
    previous = (
        ckpt.restore_params(str(workdir_path), step=comparison_step)
        if comparison_step is not None
        else None
    )
    results = batch_statistics_summary(stats_fn, params, batches(), previous)
    pays_off, reasons = verdict(results)
    report = {
        "checkpoint_step": step,
        "comparison_checkpoint_step": comparison_step,
        "num_batches": num_batches,
        "big_batch": big_size,
        "b": b,
        "eta": eta,
        "statistics": results,
        "selection_expected_to_help": pays_off,
        "reasons": reasons,
    }
    if jax.process_index() == 0:
        (workdir_path / "diagnose.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"{k:28s} mean {s['mean']:+.4g}  stderr {s['stderr']:.3g}"
        for k, s in sorted(results.items())
    ]
    logging.info(
        "Diagnosis at step %d (checkpoints %s; comparison %s):\n%s\nVerdict: selection %s.\n%s",
        step,
        steps,
        comparison_step,
        "\n".join(lines),
        "is expected to help" if pays_off else "is not expected to help",
        "\n".join(reasons),
    )
    return report
