"""Draw b of the B examples of a big batch, with a fixed output size.

Every function returns `(indices int32[b], weights float32[b])`. The weights are
the per-example weights of the selected examples in the training loss
`sum_j weights_j l(x_{indices_j})`; they sum to 1 (uniform 1/b, except that
`positive_only` puts weight 0 on filler examples, and its proportional variant,
strategy "positive_weighted", weights the kept examples by their positive scores).
Sampling functions are pure in their key: the same key gives the same result.
See docs/algorithms.md, "Big batch, cheap scores, small gradient batch",
"align_filter" and "l2rw".
"""

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

STRATEGIES = ("top", "sample", "sample_with_replacement", "positive", "positive_weighted")


def top_b(scores_B: jax.Array, b: int) -> tuple[jax.Array, jax.Array]:
    """The b largest scores (ties: lower index first), in decreasing score order.

    Args:
      scores_B: float[B] scores.
      b: number of examples to keep, b <= B.

    Returns:
      (indices int32[b], weights float32[b] = 1/b).
    """
    _check_b(scores_B, b)
    _, indices_b = jax.lax.top_k(scores_B, b)
    return indices_b.astype(jnp.int32), _uniform(b)


def sample_without_replacement(
    key: jax.Array, logits_B: jax.Array, b: int
) -> tuple[jax.Array, jax.Array]:
    """b distinct draws, sequentially without replacement, p = softmax(logits_B).

    Gumbel top-k: the top-b of logits_B + Gumbel noise, in decreasing order, has
    the law of b sequential draws without replacement (indices_b[0] is the first
    draw, with probability softmax(logits_B)). Logits of -inf are never drawn
    (as long as at least b logits are finite).

    Returns:
      (indices int32[b], weights float32[b] = 1/b).
    """
    _check_b(logits_B, b)
    gumbel_B = jax.random.gumbel(key, logits_B.shape, jnp.float32)
    _, indices_b = jax.lax.top_k(logits_B.astype(jnp.float32) + gumbel_B, b)
    return indices_b.astype(jnp.int32), _uniform(b)


def sample_with_replacement(
    key: jax.Array, logits_B: jax.Array, b: int
) -> tuple[jax.Array, jax.Array]:
    """b i.i.d. draws with p = softmax(logits_B) (indices may repeat; b may exceed B).

    Returns:
      (indices int32[b], weights float32[b] = 1/b).
    """
    indices_b = jax.random.categorical(key, logits_B, shape=(b,))
    return indices_b.astype(jnp.int32), _uniform(b)


def positive_only(
    scores_B: jax.Array,
    b: int,
    key: jax.Array | None = None,
    *,
    proportional: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Keep the examples with a positive score, with a fixed output size b.

    Let P = #{i : scores_B[i] > 0}.
    - P >= b: the top-b scores, weights 1/b.
    - 0 < P < b: the P positives first (decreasing score), then b - P filler
      examples with weight 0; the positives share weight 1 (1/P each). Fillers are
      the highest non-positive scores (key=None) or drawn uniformly without
      replacement among the non-positive examples (with a key).
    - P = 0: nothing to keep, so fall back to plain training (the learning-to-
      reweight rule: uniform if all weights are zero): the top-b scores (key=None)
      or a uniform random b (with a key), weights 1/b.
    Weight 0 keeps the output shape static; a zero-weight example contributes
    nothing to a weighted loss or gradient.

    Args:
      scores_B: float[B] scores (e.g. alignments a_i).
      b: output size, b <= B.
      key: optional PRNG key for random filler.
      proportional: weights proportional to the positive scores, normalised to
        sum 1 (the learning-to-reweight rule, max(0, a_i) / sum_j max(0, a_j))
        instead of uniform over the kept positives.

    Returns:
      (indices int32[b], weights float32[b]) with weights >= 0 summing to 1.
    """
    _check_b(scores_B, b)
    scores_B = scores_B.astype(jnp.float32)
    positive_B = scores_B > 0
    if key is None:
        priority_B = scores_B
    else:
        # Positives keep their score (> 0); non-positives get a random
        # priority in (-1, 0], so they rank below every positive, in random order.
        priority_B = jnp.where(positive_B, scores_B, -jax.random.uniform(key, scores_B.shape))
    _, indices_b = jax.lax.top_k(priority_B, b)
    scores_b = scores_B[indices_b]
    kept_b = (scores_b > 0).astype(jnp.float32)
    if proportional:
        kept_b = kept_b * scores_b
    total = jnp.sum(kept_b)
    weights_b = jnp.where(total > 0, kept_b / jnp.where(total > 0, total, 1.0), 1.0 / b)
    return indices_b.astype(jnp.int32), weights_b


def select(
    key: jax.Array | None,
    scores_B: jax.Array,
    b: int,
    *,
    strategy: str,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Draws b of B by strategy (one of `STRATEGIES`).

    - "top": the b largest scores, weights 1/b (ignores temperature and key).
    - "sample", "sample_with_replacement": scores_B / temperature as logits
      (p = softmax), weights 1/b; need a key.
    - "positive": the positive scores, weights 1/P, zero-weight filler (see
      `positive_only`; the key, which may be None, only draws the filler).
    - "positive_weighted": the b largest scores, weights max(0, s_i) / sum over the
      kept b of max(0, s_j) (learning to reweight restricted to the kept b; uniform
      1/b if no kept score is positive). Deterministic: ignores temperature and key.

    Returns:
      (indices int32[b], weights float32[b]).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {STRATEGIES}")
    if strategy == "top":
        return top_b(scores_B, b)
    if strategy == "positive":
        return positive_only(scores_B, b, key)
    if strategy == "positive_weighted":
        # With key=None, positive_only keeps exactly the b largest scores (the
        # non-positive ones at weight 0) and, proportional, weights them by
        # max(0, s_i) / sum_j max(0, s_j): L2RW's normalisation over the kept b.
        return positive_only(scores_B, b, None, proportional=True)
    if key is None:
        raise ValueError(f"strategy {strategy!r} needs a PRNG key")
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits_B = scores_B.astype(jnp.float32) / temperature
    if strategy == "sample":
        return sample_without_replacement(key, logits_B, b)
    return sample_with_replacement(key, logits_B, b)


def gather(batch: PyTree, indices: jax.Array) -> PyTree:
    """Rows `indices` (int[b]) of every leaf of `batch` (leading dimension B)."""
    return jax.tree.map(lambda x: jnp.take(x, indices, axis=0), batch)


def _uniform(b: int) -> jax.Array:
    return jnp.full((b,), 1.0 / b, jnp.float32)


def _check_b(scores_B: jax.Array, b: int) -> None:
    if scores_B.ndim != 1:
        raise ValueError(f"scores must have shape [B], got {scores_B.shape}")
    if not 1 <= b <= scores_B.shape[0]:
        raise ValueError(f"need 1 <= b <= B, got b={b}, B={scores_B.shape[0]}")
