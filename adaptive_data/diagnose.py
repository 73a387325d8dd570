"""The when-does-selection-work test (ALGORITHMS.md 8), run on a checkpoint.

For several big generic batches B (k * b examples) and pairs of target batches
(``S_train``), at the latest checkpoint theta of a workdir:

(i)   alignment ``<g_sel, g_s>`` and cosine of the mean gradient g_sel of the b
      best-scoring examples of B (exact alignment filter, scores ``<grad l_i, g_s>``)
      against a uniform b of B (g_rand);
(ii)  one-step look-ahead gain ``L_v(theta - eta g_rand) - L_v(theta - eta g_sel)`` on a
      held-out ``target_valid`` batch (positive: the selected batch helps the target
      more than a random one), eta = ``train.learning_rate``;
(iii) Spearman rank correlation of the per-example scores of B computed with two
      different target batches, and with the same target batch at the previous
      checkpoint (when the workdir keeps two).

Selection is expected to pay off when (i) and (ii) are clearly positive (their mean
is more than two standard errors above zero) and (iii) is stable (mean rank
correlation >= 0.5).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from adaptive_data import checkpoint as ckpt
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
    """Returns the jitted statistics (i), (ii) and the scores for one big batch."""

    def stats(params, big, target_a, target_b, heldout):
        g_a = alignment.mean_gradient(loss_fn, params, target_a)
        g_b = alignment.mean_gradient(loss_fn, params, target_b)
        scores_a = alignment.per_example_alignment(loss_fn, params, big, g_a, method="jvp")
        scores_b = alignment.per_example_alignment(loss_fn, params, big, g_b, method="jvp")
        top, _ = selection.top_b(scores_a, b)
        g_sel = alignment.mean_gradient(loss_fn, params, selection.gather(big, top))
        g_rand = alignment.mean_gradient(loss_fn, params, selection.gather(big, jnp.arange(b)))

        def heldout_loss(g):
            stepped = jax.tree.map(lambda p, d: p - eta * d, params, g)
            return jnp.mean(loss_fn(stepped, heldout))

        def cosine(g):
            return optax.tree.vdot(g, g_a) / (optax.tree.norm(g) * optax.tree.norm(g_a) + 1e-30)

        values = {
            "alignment_selected": optax.tree.vdot(g_sel, g_a),
            "alignment_random": optax.tree.vdot(g_rand, g_a),
            "cosine_selected": cosine(g_sel),
            "cosine_random": cosine(g_rand),
            "lookahead_gain": heldout_loss(g_rand) - heldout_loss(g_sel),
        }
        return values, scores_a, scores_b

    return jax.jit(stats)


def _summary(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    stderr = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return {"mean": float(arr.mean()), "stderr": stderr, "min": float(arr.min()),
            "max": float(arr.max())}


def verdict(results: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether selection should pay off, and the reasons."""
    reasons, ok = [], True
    for name, key in (("(i) alignment gain", "alignment_gain"),
                      ("(ii) look-ahead gain", "lookahead_gain")):
        s = results[key]
        positive = s["mean"] > STANDARD_ERRORS * s["stderr"]
        ok &= positive
        reasons.append(f"{name}: mean {s['mean']:.4g} +- {s['stderr']:.3g} -> "
                       f"{'clearly positive' if positive else 'not clearly positive'}")
    for key in ("rank_corr_target_batches", "rank_corr_checkpoints"):
        if key not in results:
            continue
        stable = results[key]["mean"] >= MIN_RANK_CORRELATION
        ok &= stable
        reasons.append(f"(iii) {key}: {results[key]['mean']:.3f} -> "
                       f"{'stable' if stable else 'unstable'} (threshold {MIN_RANK_CORRELATION})")
    return bool(ok), reasons


def diagnose(config, workdir: str, *, num_batches: int = 8) -> dict[str, Any]:
    """Computes the statistics at the latest checkpoint; writes ``workdir/diagnose.json``."""
    workdir_path = pathlib.Path(workdir).expanduser()
    steps = ckpt.checkpoint_steps(workdir_path)
    if not steps:
        raise FileNotFoundError(f"No checkpoint in {str(workdir_path)!r}: train first "
                                "(--mode=train) with the same --config and --workdir.")
    corpus = sources.load_corpus(config.data)
    model = transformer.from_config(config.model)
    loss_fn = transformer.make_loss_fn(model)
    b = int(config.train.batch_size)
    big_size = int(config.select.downsampling) * b
    stats_fn = make_batch_statistics(loss_fn, b, float(config.train.learning_rate))

    def stream(split, size, offset):
        return iter(pipeline.train_stream(
            corpus.splits[split], domains=corpus.domains, max_length=config.model.max_length,
            global_batch_size=size, seed=config.seed * 1000 + offset))

    generic = stream("generic_train", big_size, 11)
    targets = stream("target_train", int(config.train.target_batch_size), 12)
    heldout = stream("target_valid", int(config.train.target_batch_size), 13)
    params = ckpt.restore_params(str(workdir_path), step=steps[-1])
    previous = (ckpt.restore_params(str(workdir_path), step=steps[-2]) if len(steps) > 1
                else None)

    per_batch: dict[str, list[float]] = {}
    for _ in range(num_batches):
        big = pipeline.device_view(next(generic))
        target_a, target_b = (pipeline.device_view(next(targets)) for _ in range(2))
        values, scores_a, scores_b = stats_fn(params, big, target_a, target_b,
                                              pipeline.device_view(next(heldout)))
        values = {k: float(v) for k, v in values.items()}
        values["alignment_gain"] = values["alignment_selected"] - values["alignment_random"]
        values["cosine_gain"] = values["cosine_selected"] - values["cosine_random"]
        values["rank_corr_target_batches"] = rank_correlation(np.asarray(scores_a),
                                                              np.asarray(scores_b))
        if previous is not None:
            _, old_scores, _ = stats_fn(previous, big, target_a, target_b,
                                        pipeline.device_view(next(heldout)))
            values["rank_corr_checkpoints"] = rank_correlation(np.asarray(scores_a),
                                                               np.asarray(old_scores))
        for k, v in values.items():
            per_batch.setdefault(k, []).append(v)

    results: dict[str, Any] = {k: _summary(v) for k, v in per_batch.items()}
    pays_off, reasons = verdict(results)
    report = {"checkpoint_step": steps[-1],
              "previous_checkpoint_step": steps[-2] if previous is not None else None,
              "num_batches": num_batches, "big_batch": big_size, "b": b,
              "eta": float(config.train.learning_rate), "statistics": results,
              "selection_expected_to_help": pays_off, "reasons": reasons}
    if jax.process_index() == 0:
        (workdir_path / "diagnose.json").write_text(json.dumps(report, indent=2))
    lines = [f"{k:28s} mean {s['mean']:+.4g}  stderr {s['stderr']:.3g}"
             for k, s in sorted(results.items())]
    logging.info("Diagnosis at step %d:\n%s\nVerdict: selection %s.\n%s", steps[-1],
                 "\n".join(lines), "is expected to help" if pays_off else "is not expected to help",
                 "\n".join(reasons))
    return report
