"""The preflight test: will selection help on this target, and will it pay for its compute?

docs/algorithms.md, "When does selection help", gives the derivation; in short. At an early
checkpoint theta of a run (by default the latest at or before ``BUDGET_FRACTION`` = 15% of
``train.steps``), for several big generic batches B (``select.downsampling * b`` examples),
each with a ``target_train`` batch T_score, a held-out ``target_valid`` batch V and a
held-out generic batch G:

- the exact alignment filter scores B under the gradient of T_score,
  ``a_i = <grad l_i, g_score>``; g_sel is the mean gradient of its top b, g_rand that of a
  uniform b of B (its first b: the stream is shuffled);
- **cosine gain** (the test's one statistic)
  ``[cos(g_sel, g_V) - cos(g_rand, g_V)] - [cos(g_sel, g_G) - cos(g_rand, g_G)]``:
  how much more a selected batch points along the held-out target gradient than a random
  batch does, beyond what it gains along the pool's held-out gradient (selection on any
  batch favours large, well-aligned gradients, which the second bracket removes: when the
  target is a sample of the pool's own distribution, V and G are exchangeable and the
  statistic has mean 0). G is drawn from the pool's held-out documents *outside the
  target's domain* when the documents carry domain labels, so that a target present in
  the pool does not cancel its own signal (``generic_heldout`` in the report says which);
- **speed-up** ``s = 1 + mean(cosine gain) / mean(cos(g_rand, g_V))`` (a ratio of means
  with a delta-method standard error): to first order, the progress along the held-out
  target gradient of one selected update over that of one random update, the generic part
  removed. A method that spends ``c`` times base's FLOPs per update (``step_cost``) pays
  for its compute when ``s > c``: its N updates are then worth more than the ``c * N``
  updates base could make with the same FLOPs;
- **score stability** (for methods that learn weights online): Spearman rank correlation
  of the scores of B under g_score at theta and at theta advanced by ``STABILITY_FRACTION``
  of ``train.steps`` plain training steps on the pool with the run's own optimiser (from
  the checkpoint's moments and step count): weights learned from earlier scores transfer
  only if the scores persist. It needs no second checkpoint.

The target batches are disjoint documents by construction: T_score comes from
``target_train`` and V from ``target_valid``; the stability scores B twice under the same
T_score gradient at each parameter.

Verdicts, per method family (``MethodSpec.diagnosis``): ``helps_at_equal_steps`` when the
cosine gain is clearly positive (mean above ``STANDARD_ERRORS`` standard errors) and, for
``learned_weights`` methods, the stability is at least ``MIN_RANK_CORRELATION``;
``pays_for_compute`` when it helps and ``s`` exceeds the FLOPs ratio to base of the
family's validated method (``cost_methods``: the family's first in the registry). Beside
each verdict the report carries the accuracy the pre-registered validation measured for
it (``experiments/diagnose_validation_v2.py``, ``adaptive_data/diagnose_accuracy.json``).

The statistics work with any per-example loss ``loss_fn(params, batch) -> float[n]`` and
batches given as pytrees of arrays (``make_batch_statistics``,
``batch_statistics_summary``), so they can be checked on problems with a known answer.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging

from adaptive_data import checkpoint as ckpt
from adaptive_data import methods, run_setup, stats, step_cost, validation
from adaptive_data.core import alignment, derivatives, selection
from adaptive_data.data import pipeline, sources
from adaptive_data.models import lm

# The verdict must be available within this fraction of the training budget.
BUDGET_FRACTION = 0.15
# Thresholds of the verdict.
STANDARD_ERRORS = 2.0
MIN_RANK_CORRELATION = 0.5
# Plain training steps between the two scorings of the stability, as a fraction of
# train.steps (at least one).
STABILITY_FRACTION = 0.05
# The validation's measured accuracy of each verdict (written by
# experiments/diagnose_validation_v2.py).
ACCURACY_FILE = pathlib.Path(__file__).with_name("diagnose_accuracy.json")


def cost_methods() -> dict[str, str]:
    """``{family: method}``: the method whose FLOPs the pays-for-compute verdict of each
    family (``MethodSpec.diagnosis``) compares the speed-up with, the family's first in
    the registry (the one the validation measured: align_filter, anograd)."""
    out: dict[str, str] = {}
    for name, spec in methods.METHODS.items():
        if spec.diagnosis:
            out.setdefault(spec.diagnosis, name)
    return out


def _cosine(u, v):
    return optax.tree.vdot(u, v) / (optax.tree.norm(u) * optax.tree.norm(v) + 1e-30)


def make_batch_statistics(loss_fn, b: int):
    """Returns the jitted statistics of one big batch.

    Args:
      loss_fn: ``(params, batch) -> float[n]`` per-example losses.
      b: number of examples selected out of each big batch.

    Returns:
      ``stats(params, big, target_score, heldout_target, heldout_generic,
      later_params=None) -> (values, scores)``. ``values``: scalars ``cosine_gain`` with its
      parts ``cosine_{target,generic}_{selected,random}``. ``scores``: float[B] scores of
      ``big`` under g_score at ``params`` (``"current"``) and, when ``later_params`` is
      given, at ``later_params`` (``"later"``).
    """

    def scores_under(params, big, target):
        g = derivatives.mean_loss_and_grad(loss_fn, params, target)[1]
        return alignment.per_example_alignment(loss_fn, params, big, g, method="jvp")

    def gradient(params, batch):
        return derivatives.mean_loss_and_grad(loss_fn, params, batch)[1]

    def stats_fn(params, big, target_score, heldout_target, heldout_generic, later_params=None):
        scores = scores_under(params, big, target_score)
        top, _ = selection.top_b(scores, b)
        g_sel = gradient(params, selection.gather(big, top))
        g_rand = gradient(params, selection.gather(big, jnp.arange(b)))
        g_v, g_g = gradient(params, heldout_target), gradient(params, heldout_generic)
        values = {
            "cosine_target_selected": _cosine(g_sel, g_v),
            "cosine_target_random": _cosine(g_rand, g_v),
            "cosine_generic_selected": _cosine(g_sel, g_g),
            "cosine_generic_random": _cosine(g_rand, g_g),
        }
        values["cosine_gain"] = (
            values["cosine_target_selected"]
            - values["cosine_target_random"]
            - values["cosine_generic_selected"]
            + values["cosine_generic_random"]
        )
        out_scores = {"current": scores}
        if later_params is not None:
            out_scores["later"] = scores_under(later_params, big, target_score)
        return values, out_scores

    return jax.jit(stats_fn)


def make_advance(loss_fn, tx: optax.GradientTransformation):
    """``advance(params, opt_state, batch) -> (params, opt_state)``: one plain training step
    (mean loss of ``batch``) with ``tx``, jitted; what base training does between two
    scorings of the stability."""

    @jax.jit
    def advance(params, opt_state, batch):
        g = derivatives.mean_loss_and_grad(loss_fn, params, batch)[1]
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return advance


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
    stats_fn, params, batches: Iterable[Sequence[Any]], later_params=None
) -> dict[str, dict[str, float]]:
    """Runs ``stats_fn`` (from ``make_batch_statistics``) over big batches and summarises.

    Args:
      stats_fn: the statistics of one big batch.
      params: theta, at which everything is measured.
      batches: iterable of ``(big, target_score, heldout_target, heldout_generic)``.
      later_params: theta advanced by plain training, for ``rank_corr_stability``
        (omitted from the results when None).

    Returns:
      ``{statistic: {"mean", "stderr", "min", "max"}}`` over the batches for every value of
      ``stats_fn`` (and ``rank_corr_stability``), plus ``speedup`` (``1 +
      ratio_of_means(cosine_gain, cosine_target_random)``, ``mean`` and ``stderr``): the
      input of ``verdicts``.
    """
    per_batch: dict[str, list[float]] = {}
    for batch in batches:
        values, scores = stats_fn(params, *batch, later_params)
        values = {k: float(v) for k, v in values.items()}
        if "later" in scores:
            values["rank_corr_stability"] = stats.spearman(
                np.asarray(scores["current"]), np.asarray(scores["later"])
            )
        for k, v in values.items():
            per_batch.setdefault(k, []).append(v)
    if not per_batch:
        raise ValueError("batch_statistics_summary needs at least one big batch.")
    results = {k: _summary(v) for k, v in per_batch.items()}
    relative = ratio_of_means(per_batch["cosine_gain"], per_batch["cosine_target_random"])
    results["speedup"] = {"mean": 1.0 + relative["mean"], "stderr": relative["stderr"]}
    return results


def helps_at_equal_steps(
    results: Mapping[str, Any], *, needs_stable_scores: bool
) -> tuple[bool, list[str]]:
    """Whether selection should beat base at equal steps, and why (one line per criterion):
    the cosine gain's mean above ``STANDARD_ERRORS`` standard errors and, with
    ``needs_stable_scores``, ``rank_corr_stability`` computed and at least
    ``MIN_RANK_CORRELATION``."""
    s = results["cosine_gain"]
    ok = bool(s["mean"] > STANDARD_ERRORS * s["stderr"])  # False when stderr is nan
    reasons = [
        f"cosine gain {s['mean']:.4g} +- {s['stderr']:.3g}: "
        f"{'clearly positive' if ok else 'not clearly positive'}"
    ]
    if not needs_stable_scores:
        reasons.append("score stability: not required (scores are recomputed every step)")
    elif "rank_corr_stability" not in results:
        ok = False
        reasons.append("score stability: required (weights learned online) but not measured")
    else:
        rho = results["rank_corr_stability"]["mean"]
        stable = rho >= MIN_RANK_CORRELATION
        ok &= stable
        reasons.append(
            f"score stability: rank correlation {rho:.3f} -> "
            f"{'stable' if stable else 'unstable'} (required: >= {MIN_RANK_CORRELATION})"
        )
    return bool(ok), reasons


def pays_for_compute(
    results: Mapping[str, Any], *, helps: bool, cost_ratio: float
) -> tuple[bool, str]:
    """Whether selection should beat base at equal FLOPs: it helps at equal steps and the
    speed-up ``s`` exceeds the method's FLOPs per update over base's (``cost_ratio``)."""
    s = results["speedup"]["mean"]
    ok = bool(helps and s > cost_ratio)
    return ok, (
        f"speed-up {s:.3g} per update against {cost_ratio:.3g}x base's FLOPs per update: "
        + ("pays" if ok else "does not pay" if helps else "does not pay (no gain to pay with)")
    )


def verdicts(
    results: Mapping[str, Any], cost_ratios: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """Both verdicts for each family of ``cost_methods()``: ``{family: {"methods",
    "cost_method", "cost_ratio", "helps_at_equal_steps", "pays_for_compute", "reasons",
    "accuracy"}}``; ``cost_ratios``: ``{method: FLOPs ratio to base}`` of the cost methods;
    ``accuracy``: the validation's measured accuracy of each verdict (None if absent)."""
    accuracy = validated_accuracy()
    out = {}
    for family, cost_method in cost_methods().items():
        helps, reasons = helps_at_equal_steps(
            results, needs_stable_scores=family == "learned_weights"
        )
        pays, pay_reason = pays_for_compute(
            results, helps=helps, cost_ratio=cost_ratios[cost_method]
        )
        out[family] = {
            "methods": [n for n, spec in methods.METHODS.items() if spec.diagnosis == family],
            "cost_method": cost_method,
            "cost_ratio": cost_ratios[cost_method],
            "helps_at_equal_steps": helps,
            "pays_for_compute": pays,
            "reasons": [*reasons, pay_reason],
            "accuracy": accuracy.get(family),
        }
    return out


def validated_accuracy() -> dict[str, Any]:
    """``{family: {"equal_steps": {...}, "compute": {...}}}``: the pre-registered
    validation's accuracy of each verdict next to "always yes" and the trivial rule
    (``ACCURACY_FILE``; empty when the package carries none)."""
    if not ACCURACY_FILE.exists():
        return {}
    return json.loads(ACCURACY_FILE.read_text())["families"]


def choose_checkpoint(steps: Sequence[int], train_steps: int, step: int | None = None):
    """The checkpoint to diagnose and whether it is within the budget.

    Args:
      steps: the available checkpoint steps (any order, non-empty).
      train_steps: the training budget, ``config.train.steps``.
      step: the requested step (``config.diagnose.step``), or None: the latest checkpoint
        at or before ``BUDGET_FRACTION * train_steps``.

    Returns:
      ``(step, within_budget)``.

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
        step = early[-1]
    elif step not in steps:
        raise ValueError(
            f"config.diagnose.step={step} has no checkpoint; available steps: {steps}."
        )
    return step, step <= budget


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


def generic_heldout(source, target_domain: str | None) -> tuple[Any, str]:
    """The pool's held-out documents outside ``target_domain`` and a sentence saying what
    they are: all of them when no document carries the target's domain label."""
    if target_domain is None:
        return source, "pool held-out documents (the target is drawn from the pool itself)"
    keep = [i for i in range(len(source)) if source[i]["domain"] != target_domain]
    if len(keep) == len(source):
        return source, (
            f"pool held-out documents; none is labelled {target_domain!r}, so target-like "
            "documents in the pool cannot be excluded"
        )
    if not keep:
        raise ValueError(
            f"Every held-out pool document is labelled with the target's domain "
            f"{target_domain!r}: the test needs pool documents from other domains."
        )
    subset = sources.Subset(source, keep, name=f"{source!r} without {target_domain!r}")
    return subset, (
        f"pool held-out documents outside the target's domain {target_domain!r} "
        f"({len(keep)} of {len(source)})"
    )


def cost_ratios(config) -> dict[str, float]:
    """``{method: FLOPs ratio to base}`` of the ``cost_methods()`` at ``config``'s model,
    batch sizes and steps (``step_cost.cost_ratio``: compiles each train step once)."""
    return step_cost.cost_ratios(config, list(cost_methods().values()))


def diagnose(
    config, workdir: str, *, num_batches: int = 8, costs: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Computes the statistics at an early checkpoint; writes ``workdir/diagnose.json``.

    The checkpoint is ``config.diagnose.step`` (default: ``choose_checkpoint``); a step
    beyond ``BUDGET_FRACTION`` of ``train.steps`` is diagnosed with a warning and
    ``within_budget: false``. ``costs``: ``{method: FLOPs ratio to base}`` of the
    ``cost_methods()`` (default: measured by ``cost_ratios``). The report holds
    ``checkpoint_step``, ``within_budget``, ``budget_fraction``, ``num_batches``,
    ``big_batch``, ``b``, ``stability_steps``, ``generic_heldout``, ``statistics``
    (``batch_statistics_summary``) and ``verdicts`` (``verdicts``, one per family).

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
    step, within_budget = choose_checkpoint(
        steps, train_steps, (config.get("diagnose") or {}).get("step")
    )
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
    b = int(config.train.batch_size)
    big_size = int(config.select.downsampling) * b
    target_size = int(config.train.target_batch_size)
    stability_steps = max(1, round(STABILITY_FRACTION * train_steps))
    heldout_generic, heldout_generic_text = generic_heldout(
        corpus.splits["generic_valid"], corpus.target_domain
    )

    def stream(source, size, offset):
        return iter(
            pipeline.train_stream(
                source,
                domains=corpus.domains,
                max_length=config.model.max_length,
                tokenizer=setup.model.tokenizer,
                global_batch_size=size,
                seed=config.seed * 1000 + offset,
            )
        )

    def batches():
        iterators = (
            stream(corpus.splits["generic_train"], big_size, 11),
            stream(corpus.splits["target_train"], target_size, 12),
            stream(corpus.splits["target_valid"], target_size, 13),
            stream(heldout_generic, target_size, 14),
        )
        for _ in range(num_batches):
            yield tuple(pipeline.device_view(next(it)) for it in iterators)

    abstract_params = jax.eval_shape(setup.init_state).params
    params, opt_state = restore_params_and_opt_state(
        workdir_path, step, jax.eval_shape(tx.init, abstract_params)
    )
    advance = make_advance(loss_fn, tx)
    later, later_opt_state = params, opt_state
    plain = stream(corpus.splits["generic_train"], b, 15)
    for _ in range(stability_steps):
        later, later_opt_state = advance(later, later_opt_state, pipeline.device_view(next(plain)))
    results = batch_statistics_summary(make_batch_statistics(loss_fn, b), params, batches(), later)
    report = {
        "checkpoint_step": step,
        "within_budget": within_budget,
        "budget_fraction": step / train_steps,
        "num_batches": num_batches,
        "big_batch": big_size,
        "b": b,
        "stability_steps": stability_steps,
        "generic_heldout": heldout_generic_text,
        "statistics": results,
        "verdicts": verdicts(results, costs if costs is not None else cost_ratios(config)),
    }
    if jax.process_index() == 0:
        (workdir_path / "diagnose.json").write_text(json.dumps(report, indent=2))
    logging.info("Diagnosis at step %d of %d:\n%s", step, train_steps, verdict_text(report))
    return report


def _accuracy_text(accuracy: Mapping[str, Any] | None) -> str:
    if not accuracy:
        return "(not validated)"
    return (
        f"(validated: right on {accuracy['accuracy']:.0%} of {accuracy['tasks']} task-seeds; "
        f"'always yes' {accuracy['always_yes']:.0%}, 'always no' "
        f"{1 - accuracy['always_yes']:.0%}, 'yes unless the target is drawn from the pool' "
        f"{accuracy['trivial_rule']:.0%})"
    )


def verdict_text(report: Mapping[str, Any]) -> str:
    """The verdicts of a ``diagnose.json`` report in words a user can act on."""
    lines = [
        f"{key:24s} mean {s['mean']:+.4g}  stderr {s['stderr']:.3g}"
        for key, s in sorted(report["statistics"].items())
    ]
    for family, v in report["verdicts"].items():
        accuracy = v.get("accuracy") or {}
        methods_text = ", ".join(v["methods"])
        lines += [
            "",
            f"{family} ({methods_text}):",
            f"  Will it help at equal steps? {'yes' if v['helps_at_equal_steps'] else 'no'} "
            + _accuracy_text(accuracy.get("equal_steps")),
            f"  Will it pay for its compute at this model size ({v['cost_method']} costs "
            f"{v['cost_ratio']:.2f}x base's FLOPs per update)? "
            f"{'yes' if v['pays_for_compute'] else 'no'} "
            + _accuracy_text(accuracy.get("compute")),
            f"  What to do: {_advice(v)}",
            *(f"    {reason}" for reason in v["reasons"]),
        ]
    return "\n".join(lines)


def beats_baselines(accuracy: Mapping[str, Any] | None) -> bool:
    """Whether a verdict's validated accuracy exceeds every rule that needs no test: "always
    yes", "always no" (right where always yes is wrong) and "yes unless the target is
    drawn from the pool"; False when not validated."""
    if not accuracy:
        return False
    always_yes = accuracy["always_yes"]
    return accuracy["accuracy"] > max(always_yes, 1.0 - always_yes, accuracy["trivial_rule"])


def _advice(verdict: Mapping[str, Any]) -> str:
    """What to do on a family's two verdicts, each acted on only where its validation beat
    every rule needing no test (``beats_baselines``); otherwise the validation's base rate
    is what the user gets, and the compute question is left to a measurement."""
    names = "/".join(verdict["methods"])
    accuracy = verdict.get("accuracy") or {}
    steps_accuracy, compute_accuracy = accuracy.get("equal_steps"), accuracy.get("compute")
    if steps_accuracy and not beats_baselines(steps_accuracy):
        steps = (
            f"{names} helped per update on {steps_accuracy['always_yes']:.0%} of the "
            "validation's tasks, and this verdict did no better than that base rate;"
        )
    elif verdict["helps_at_equal_steps"]:
        steps = f"{names} should beat base per update;"
    else:
        return (
            f"skip {names} on this target: train base on the pool and use the target sample "
            "to fine-tune or to mix in."
        )
    if not beats_baselines(compute_accuracy):
        paid = (
            f" ({compute_accuracy['always_yes']:.0%} of the validation's tasks paid)"
            if compute_accuracy
            else ""
        )
        return (
            f"{steps} whether it beats base given the same FLOPs this test cannot tell"
            f"{paid}: measure it (experiments/compute_multiplier.py) before paying "
            f"{verdict['cost_ratio']:.1f}x base's FLOPs per update."
        )
    if verdict["pays_for_compute"]:
        return f"{steps} it should also beat base given the same FLOPs: run it."
    return (
        f"{steps} base trained for {verdict['cost_ratio']:.1f}x the steps (the same FLOPs) "
        "should do better: select only when updates, not FLOPs, are what your budget counts."
    )
