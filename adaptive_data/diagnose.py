"""The when-does-selection-work test (docs/algorithms.md, "When does selection help").

At an early checkpoint theta of a run (by default the latest at or before
``BUDGET_FRACTION`` = 15% of ``train.steps``), with the model's own optimiser state, for
several big generic batches B (``select.downsampling * b`` examples), each with two
independent ``target_train`` batches T_score and T_step, one held-out ``target_valid``
batch V and one held-out generic (pool ``validation``) batch G:

- the exact alignment filter scores B under the gradient of T_score,
  ``a_i = <grad l_i, g_score>``; g_sel is the mean gradient of its top b, g_rand that of a
  uniform b of B (its first b: the stream is shuffled);
- (a) target-specific cosine gain
  ``[cos(g_sel, g_V) - cos(g_rand, g_V)] - [cos(g_sel, g_G) - cos(g_rand, g_G)]``:
  how much more the selected batch points along the held-out target gradient than a random
  batch does, beyond what it gains along the pool's own held-out gradient. Selection on
  T_score can beat a random batch on *any* held-out batch that shares the pool's mean
  gradient (larger, better-aligned gradients); the second bracket removes that part, so
  when the target is drawn from the pool's own distribution (V and G exchangeable) the
  statistic has mean exactly 0;
- (b) relative look-ahead gain: with ``U(g)`` the update the run's optimiser (AdamW from
  the checkpoint's moments and step count, clipping included) makes from gradient g,
  ``{[L_V(theta+U(g_rand)) - L_V(theta+U(g_sel))] - [L_G(theta+U(g_rand)) -
  L_G(theta+U(g_sel))]} / [L_V(theta) - L_V(theta+U(g_step))]``: the target-specific
  extra decrease of the held-out target loss from one selected step over a random one, as a
  fraction of the decrease one step on target_train (T_step) brings. 1 means a selected
  step is worth a target step, 0 that it is worth a random one. Reported as the ratio of
  the batch means with a delta-method standard error.

Both are scale-free (multiplying the loss by c > 0 scales every gradient by c, leaves the
ranking and every cosine unchanged, and, Adam being invariant to the gradient's scale,
scales numerator and denominator of (b) by c), and (b) is not a rescaling of (a): it
goes through the optimiser's per-parameter preconditioning and the curvature of the loss.

- (c) score stability: Spearman rank correlation of the scores of B under g_score at theta
  and at the checkpoint before it (the one after it if theta is the first and that one is
  still within the budget).

Verdict: selection is expected to help when (a) and (b) are both clearly positive (mean
above ``STANDARD_ERRORS`` standard errors) and, only for a method whose selection rests on
a weighting state learned online from past scores (``Method.init_state`` returns a state:
anograd, soba, dds, l2rw, classifier, domain_mixture, ...), (c) is at least
``MIN_RANK_CORRELATION``: weights learned from earlier scores only transfer if the scores
persist. A method that recomputes exact scores every step (align_filter) does not need (c).

The statistics work with any per-example loss ``loss_fn(params, batch) -> float[n]``, any
optax optimiser and batches given as pytrees of arrays (``make_batch_statistics``,
``batch_statistics_summary``), so they can be checked on problems with a known answer.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from adaptive_data import checkpoint as ckpt
from adaptive_data import run_setup, stats, validation
from adaptive_data.core import alignment, derivatives, selection
from adaptive_data.data import pipeline, sources
from adaptive_data.models import lm

# The verdict must be available within this fraction of the training budget.
BUDGET_FRACTION = 0.15
# Thresholds of the verdict.
STANDARD_ERRORS = 2.0
MIN_RANK_CORRELATION = 0.5


def make_batch_statistics(loss_fn, b: int, tx: optax.GradientTransformation):
    """Returns the jitted statistics of one big batch.

    Args:
      loss_fn: ``(params, batch) -> float[n]`` per-example losses.
      b: number of examples selected out of each big batch.
      tx: the run's optimiser; its update from the checkpoint's state is the look-ahead.

    Returns:
      ``stats(params, opt_state, big, target_score, target_step, heldout_target,
      heldout_generic, previous_params=None) -> (values, scores)``. ``values``: scalars
      ``cosine_gain`` (a) with its parts ``cosine_{target,generic}_{selected,random}``,
      ``lookahead_gain`` (numerator of (b)) and ``target_step_gain`` (its denominator).
      ``scores``: float[B] scores of ``big`` under g_score at ``params`` (``"current"``)
      and, when ``previous_params`` is given, at ``previous_params`` (``"previous"``).
    """

    def scores_under(params, big, target):
        g = derivatives.mean_loss_and_grad(loss_fn, params, target)[1]
        return alignment.per_example_alignment(loss_fn, params, big, g, method="jvp")

    def mean_loss(params, batch):
        return derivatives.mean_loss(loss_fn, params, batch)

    def gradient(params, batch):
        return derivatives.mean_loss_and_grad(loss_fn, params, batch)[1]

    def cosine(u, v):
        return optax.tree.vdot(u, v) / (optax.tree.norm(u) * optax.tree.norm(v) + 1e-30)

    def stats_fn(
        params,
        opt_state,
        big,
        target_score,
        target_step,
        heldout_target,
        heldout_generic,
        previous_params=None,
    ):
        scores = scores_under(params, big, target_score)
        top, _ = selection.top_b(scores, b)
        g_sel = gradient(params, selection.gather(big, top))
        g_rand = gradient(params, selection.gather(big, jnp.arange(b)))
        loss_v, g_v = derivatives.mean_loss_and_grad(loss_fn, params, heldout_target)
        g_g = gradient(params, heldout_generic)

        def stepped(g):
            updates, _ = tx.update(g, opt_state, params)
            return optax.apply_updates(params, updates)

        after_sel, after_rand = stepped(g_sel), stepped(g_rand)
        after_target = stepped(gradient(params, target_step))
        values = {
            "cosine_target_selected": cosine(g_sel, g_v),
            "cosine_target_random": cosine(g_rand, g_v),
            "cosine_generic_selected": cosine(g_sel, g_g),
            "cosine_generic_random": cosine(g_rand, g_g),
            "lookahead_gain": (
                mean_loss(after_rand, heldout_target)
                - mean_loss(after_sel, heldout_target)
                - mean_loss(after_rand, heldout_generic)
                + mean_loss(after_sel, heldout_generic)
            ),
            "target_step_gain": loss_v - mean_loss(after_target, heldout_target),
        }
        values["cosine_gain"] = (
            values["cosine_target_selected"]
            - values["cosine_target_random"]
            - values["cosine_generic_selected"]
            + values["cosine_generic_random"]
        )
        out_scores = {"current": scores}
        if previous_params is not None:
            out_scores["previous"] = scores_under(previous_params, big, target_score)
        return values, out_scores

    return jax.jit(stats_fn)


def _summary(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    stderr = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return {
        "mean": float(arr.mean()),
        "stderr": stderr,
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def ratio_of_means(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """``R = mean(num) / mean(den)`` with its delta-method standard error.

    ``stderr = sd(num_i - R den_i) / (sqrt(n) |mean(den)|)`` (the ratio estimator's usual
    linearisation); ``nan`` with one batch or when ``mean(den)`` is 0.
    """
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    mean_den = float(den.mean())
    if mean_den == 0.0:
        return {"mean": math.nan, "stderr": math.nan}
    ratio = float(num.mean()) / mean_den
    if num.size < 2:
        return {"mean": ratio, "stderr": math.nan}
    residual = num - ratio * den
    return {
        "mean": ratio,
        "stderr": float(residual.std(ddof=1) / (math.sqrt(num.size) * abs(mean_den))),
    }


def batch_statistics_summary(
    stats_fn, params, opt_state, batches: Iterable[Sequence[Any]], previous_params=None
) -> dict[str, dict[str, float]]:
    """Runs ``stats_fn`` (from ``make_batch_statistics``) over big batches and summarises.

    Args:
      stats_fn: the statistics of one big batch.
      params, opt_state: theta and the optimiser state at which everything is measured.
      batches: iterable of ``(big, target_score, target_step, heldout_target,
        heldout_generic)``.
      previous_params: a second checkpoint's parameters, for ``rank_corr_checkpoints``
        (omitted from the results when None).

    Returns:
      ``{statistic: {"mean", "stderr", "min", "max"}}`` over the batches for every value of
      ``stats_fn`` (and ``rank_corr_checkpoints``), plus ``relative_lookahead_gain``
      (``ratio_of_means`` of ``lookahead_gain`` over ``target_step_gain``, with ``mean`` and
      ``stderr``): the input of ``verdict``.
    """
    per_batch: dict[str, list[float]] = {}
    for batch in batches:
        values, scores = stats_fn(params, opt_state, *batch, previous_params)
        values = {k: float(v) for k, v in values.items()}
        if "previous" in scores:
            values["rank_corr_checkpoints"] = stats.spearman(
                np.asarray(scores["current"]), np.asarray(scores["previous"])
            )
        for k, v in values.items():
            per_batch.setdefault(k, []).append(v)
    if not per_batch:
        raise ValueError("batch_statistics_summary needs at least one big batch.")
    results = {k: _summary(v) for k, v in per_batch.items()}
    results["relative_lookahead_gain"] = ratio_of_means(
        per_batch["lookahead_gain"], per_batch["target_step_gain"]
    )
    return results


def verdict(results: dict[str, Any], *, needs_stable_scores: bool) -> tuple[bool, list[str]]:
    """Whether selection should pay off, and the reasons (one line per criterion).

    (a) ``cosine_gain`` and (b) ``relative_lookahead_gain`` must each have a mean above
    ``STANDARD_ERRORS`` standard errors; with ``needs_stable_scores`` (a method that learns
    its weights online), (c) ``rank_corr_checkpoints`` must also be computed and at least
    ``MIN_RANK_CORRELATION``.
    """
    reasons, ok = [], True
    for name, key in (
        ("(a) cosine gain", "cosine_gain"),
        ("(b) relative look-ahead gain", "relative_lookahead_gain"),
    ):
        s = results[key]
        positive = bool(s["mean"] > STANDARD_ERRORS * s["stderr"])  # False when stderr is nan
        ok &= positive
        reasons.append(
            f"{name}: {s['mean']:.4g} +- {s['stderr']:.3g} -> "
            f"{'clearly positive' if positive else 'not clearly positive'}"
        )
    if not needs_stable_scores:
        reasons.append("(c) score stability: not required (scores are recomputed every step)")
    elif "rank_corr_checkpoints" not in results:
        ok = False
        reasons.append(
            "(c) score stability: required (weights learned online) but not computed: keep a "
            "second checkpoint within the budget"
        )
    else:
        rho = results["rank_corr_checkpoints"]["mean"]
        stable = rho >= MIN_RANK_CORRELATION
        ok &= stable
        reasons.append(
            f"(c) score stability: rank correlation {rho:.3f} -> "
            f"{'stable' if stable else 'unstable'} (required: >= {MIN_RANK_CORRELATION})"
        )
    return bool(ok), reasons


def choose_checkpoints(
    steps: Sequence[int], train_steps: int, step: int | None = None
) -> tuple[int, int | None, bool]:
    """The checkpoint to diagnose, the one to compare its scores with, and the budget check.

    Args:
      steps: the available checkpoint steps (any order, non-empty).
      train_steps: the training budget, ``config.train.steps``.
      step: the requested step (``config.diagnose.step``), or None: the latest checkpoint
        at or before ``BUDGET_FRACTION * train_steps``.

    Returns:
      ``(step, comparison_step, within_budget)``: comparison_step is the checkpoint just
      before ``step``, else the one just after it if that is within the budget, else None.

    Raises:
      ValueError: ``step`` is given and no checkpoint has it, or none is within the budget.
    """
    steps = sorted(steps)
    budget = BUDGET_FRACTION * train_steps
    if step is None:
        early = [s for s in steps if s <= budget]
        if not early:
            raise ValueError(
                f"No checkpoint at or before step {budget:g} ({BUDGET_FRACTION:.0%} of "
                f"train.steps={train_steps}); available steps: {steps}. Save one that early "
                "(checkpoint.every, checkpoint.keep) or pass config.diagnose.step."
            )
        chosen = early[-1]
    elif step in steps:
        chosen = step
    else:
        raise ValueError(
            f"config.diagnose.step={step} has no checkpoint; available steps: {steps}."
        )
    i = steps.index(chosen)
    if i > 0:
        comparison = steps[i - 1]
    elif i + 1 < len(steps) and steps[i + 1] <= max(budget, chosen):
        comparison = steps[i + 1]
    else:
        comparison = None
    return chosen, comparison, chosen <= budget


def restore_params_and_opt_state(workdir: pathlib.Path, step: int, opt_state_like):
    """Parameters and optimiser state of checkpoint ``step`` of ``workdir``.

    ``opt_state_like``: ``tx.init(params)`` (or its ``jax.eval_shape``); the saved state's
    leaves are put back into its structure, which must match leaf for leaf.
    """
    root = workdir / "checkpoints"
    manager = ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(create=False))
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    state = restored["state"]
    saved_leaves = jax.tree.leaves(state["opt_state"])
    structure = jax.tree.structure(opt_state_like)
    expected = [tuple(x.shape) for x in jax.tree.leaves(opt_state_like)]
    if [tuple(np.shape(x)) for x in saved_leaves] != expected:
        raise ValueError(
            f"The optimiser state saved at step {step} in {str(root)!r} does not match the "
            "optimiser of this config (train.grad_clip and the optimiser must be the ones the "
            "run trained with); diagnose with the run's own --config."
        )
    return state["params"], jax.tree.unflatten(structure, saved_leaves)


def learns_weights_online(setup: run_setup.RunSetup) -> bool:
    """Whether the run's method keeps state (a weighting model, mixture weights, counts)
    that it learns online from past scores: its verdict then needs stable scores across
    checkpoints (``verdicts.learned_weights``); a method scoring afresh from the model at
    every step (the exact filter) does not (``verdicts.exact_scores``)."""
    return jax.eval_shape(setup.init_state).method_state is not None


def verdict_kind(setup: run_setup.RunSetup) -> str:
    """The key of ``diagnose.json``'s ``verdicts`` that applies to the run's method."""
    return "learned_weights" if learns_weights_online(setup) else "exact_scores"


def diagnose(config, workdir: str, *, num_batches: int = 8) -> dict[str, Any]:
    """Computes the statistics at an early checkpoint; writes ``workdir/diagnose.json``.

    The checkpoint is ``config.diagnose.step`` (default: ``choose_checkpoints``); a step
    beyond ``BUDGET_FRACTION`` of ``train.steps`` is diagnosed with a warning and
    ``within_budget: false``. The report holds ``checkpoint_step``,
    ``comparison_checkpoint_step``, ``within_budget``, ``budget_fraction``, ``num_batches``,
    ``big_batch``, ``b``, ``method``, ``needs_stable_scores`` (of ``config.method``),
    ``statistics`` (``batch_statistics_summary``), ``selection_expected_to_help`` and
    ``reasons`` (``verdict`` for ``config.method``), and ``verdicts``: both verdicts,
    ``exact_scores`` (stability not required) and ``learned_weights`` (required), so a base
    run's diagnosis answers for either kind of method.

    Raises:
      adaptive_data.validation.ConfigError: the config has values out of range.
    """
    validation.validate_config(config)
    workdir_path = pathlib.Path(workdir).expanduser().absolute()
    steps = ckpt.checkpoint_steps(workdir_path)
    if not steps:
        raise FileNotFoundError(
            f"No checkpoint in {str(workdir_path)!r}: train first "
            "(--mode=train) with the same --config and --workdir."
        )
    train_steps = int(config.train.steps)
    requested = (config.get("diagnose") or {}).get("step")
    step, comparison_step, within_budget = choose_checkpoints(steps, train_steps, requested)
    if not within_budget:
        logging.warning(
            "Diagnosing step %d, beyond %.0f%% of train.steps=%d: the verdict is meant to be "
            "available before that much of the budget is spent.",
            step,
            100 * BUDGET_FRACTION,
            train_steps,
        )
    corpus = sources.load_corpus(config.data)
    setup = run_setup.build(config, domains=corpus.domains, target_domain=corpus.target_domain)
    loss_fn, tx = lm.make_loss_fn(setup.model), setup.tx
    abstract_params = jax.eval_shape(setup.init_state).params
    needs_stable_scores = learns_weights_online(setup)
    b = int(config.train.batch_size)
    big_size = int(config.select.downsampling) * b
    target_size = int(config.train.target_batch_size)
    stats_fn = make_batch_statistics(loss_fn, b, tx)

    def stream(split, size, offset):
        return iter(
            pipeline.train_stream(
                corpus.splits[split],
                domains=corpus.domains,
                max_length=config.model.max_length,
                tokenizer=setup.model.tokenizer,
                global_batch_size=size,
                seed=config.seed * 1000 + offset,
            )
        )

    def batches():
        generic = stream("generic_train", big_size, 11)
        targets = stream("target_train", target_size, 12)
        heldout_target = stream("target_valid", target_size, 13)
        heldout_generic = stream("generic_valid", target_size, 14)
        for _ in range(num_batches):
            iterators = (generic, targets, targets, heldout_target, heldout_generic)
            yield tuple(pipeline.device_view(next(it)) for it in iterators)

    params, opt_state = restore_params_and_opt_state(
        workdir_path, step, jax.eval_shape(tx.init, abstract_params)
    )
    previous = None
    if comparison_step is not None:
        previous = ckpt.restore_params(str(workdir_path), step=comparison_step)
    results = batch_statistics_summary(stats_fn, params, opt_state, batches(), previous)
    # Both verdicts: a base run is diagnosed on behalf of the selection methods to come.
    verdicts = {
        kind: verdict(results, needs_stable_scores=needs)
        for kind, needs in (("exact_scores", False), ("learned_weights", True))
    }
    pays_off, reasons = verdicts["learned_weights" if needs_stable_scores else "exact_scores"]
    report = {
        "checkpoint_step": step,
        "comparison_checkpoint_step": comparison_step,
        "within_budget": within_budget,
        "budget_fraction": step / train_steps,
        "num_batches": num_batches,
        "big_batch": big_size,
        "b": b,
        "method": str(config.method),
        "needs_stable_scores": needs_stable_scores,
        "statistics": results,
        "selection_expected_to_help": pays_off,
        "reasons": reasons,
        "verdicts": {
            kind: {"expected_to_help": v[0], "reasons": v[1]} for kind, v in verdicts.items()
        },
    }
    if jax.process_index() == 0:
        (workdir_path / "diagnose.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"{k:28s} mean {s['mean']:+.4g}  stderr {s['stderr']:.3g}"
        for k, s in sorted(results.items())
    ]
    logging.info(
        "Diagnosis at step %d of %d (checkpoints %s):\n%s\nVerdict: selection %s.\n%s",
        step,
        train_steps,
        steps,
        "\n".join(lines),
        "is expected to help" if pays_off else "is not expected to help",
        "\n".join(reasons),
    )
    return report
