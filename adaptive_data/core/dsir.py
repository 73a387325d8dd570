"""DSIR: importance resampling on hashed n-gram features (Xie et al. 2023;
docs/algorithms.md, "dsir"), in two forms of features:

- byte n-grams (``config.dsir.features=bytes``, the default; a byte-level variant of
  DSIR, not the authors' form): the model's byte tokens of the truncated input, on
  device; this module's first part, below.
- word n-grams (``features=words``, the authors' form, as their ``data-selection``
  package computes it): lower-cased WordPunct words of the whole document text, hashed
  unigrams and bigrams, on the host; the section "Word features" at the end.

Byte features. Each example x becomes a count vector h(x) over M hash buckets of its unigrams and
bigrams (`hashed_ngram_counts`). Smoothed categorical distributions over the buckets,
p_t from the target data S_train and p_g from the generic pool, define a
bag-of-n-grams model, whose log likelihood ratio is the log importance weight

    log w(x) = log p_t(x) / p_g(x) = sum_j h_j(x) (log p_t[j] - log p_g[j])

(`log_importance_weights`). A driver keeps the top b of each big batch B by log w, or
samples b with these logits.

Here p_t is counted exactly, once, before training: `count_ngrams` sums the counts of
every target_train example (the DSIR paper counts S_train once, beforehand). p_g is
estimated online, on device: the running generic counts (`DsirCounts.generic_M`) grow
each step by the counts of the generic big batch (the `dsir` estimator below, in the
`OuterMethod` interface), so they converge to the full-pool estimate of the paper,
which counts the raw pool once. The generic counts must come from an unbiased sample
of the pool (all of B, or a uniform sub-sample), never from the selected examples.

Everything is pure jnp, with no Python loop over examples or tokens: the hashes are
elementwise uint32 arithmetic and the counts one scatter-add per batch (`count_ngrams`
loops over batches on the host, once).
"""

import functools
import hashlib
import re
from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_data.core.outer import base
from adaptive_data.data import tokenizer

# Multiplicative hashing constants (odd, so multiplication is a bijection mod 2^32);
# distinct for unigrams and bigrams so that their keys, which overlap, hash apart.
UNIGRAM_MULTIPLIER = 0x9E3779B1
BIGRAM_MULTIPLIER = 0x85EBCA77
# Bigram key = prev * BIGRAM_BASE + cur: unique for token ids in [0, BIGRAM_BASE).
BIGRAM_BASE = tokenizer.VOCAB_SIZE  # 259
_SHIFT = 15


def _hash_buckets(keys: jax.Array, multiplier: int, num_buckets: int) -> jax.Array:
    """int32 buckets of non-negative integer keys: see `hashed_ngram_counts`."""
    x = keys.astype(jnp.uint32) * jnp.uint32(multiplier)  # wraps mod 2^32
    x = x ^ (x >> jnp.uint32(_SHIFT))
    return (x % jnp.uint32(num_buckets)).astype(jnp.int32)


def ngram_buckets(
    inputs_BL: jax.Array, num_buckets: int, *, pad_id: int = tokenizer.PAD_ID
) -> tuple[jax.Array, jax.Array]:
    """The hashed n-grams of each example, as buckets and validity masks.

    Args:
      inputs_BL: int[B, L] token ids.
      num_buckets: M, the number of hash buckets.
      pad_id: the padding token.

    Returns:
      `(buckets_BN, valid_BN)`, N = 2L - 1: int32 buckets of the L unigrams then the
      L - 1 bigrams of each row, and float32 1 where that n-gram counts (0 where it
      touches padding). Hashes: see `hashed_ngram_counts`.
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    tokens_BL = inputs_BL.astype(jnp.int32)
    valid_BL = tokens_BL != pad_id
    uni_BL = _hash_buckets(tokens_BL, UNIGRAM_MULTIPLIER, num_buckets)
    bigram_keys_BL1 = tokens_BL[:, :-1] * BIGRAM_BASE + tokens_BL[:, 1:]
    bi_BL1 = _hash_buckets(bigram_keys_BL1, BIGRAM_MULTIPLIER, num_buckets)
    bi_valid_BL1 = valid_BL[:, :-1] & valid_BL[:, 1:]
    buckets_BN = jnp.concatenate([uni_BL, bi_BL1], axis=1)
    valid_BN = jnp.concatenate([valid_BL, bi_valid_BL1], axis=1).astype(jnp.float32)
    return buckets_BN, valid_BN


def hashed_ngram_counts(
    inputs_BL: jax.Array, num_buckets: int, *, pad_id: int = tokenizer.PAD_ID
) -> jax.Array:
    """Counts of the hashed unigrams and bigrams of each example.

    Every non-pad token (BOS and EOS included) is a unigram with key k = token; every
    pair of consecutive positions (l, l + 1) that are both non-pad is a bigram with key
    k = prev * 259 + cur (so a bigram never straddles padding, even padding in the
    middle of a row). A key goes to bucket

        x = (k * C) mod 2^32,   x = x XOR (x >> 15),   bucket = x mod M

    in uint32 arithmetic, with C = 0x9E3779B1 for unigrams and C = 0x85EBCA77 for
    bigrams (the shift folds the well-mixed high bits into the low ones that the
    modulo keeps). Token ids must lie in [0, 259).

    Args:
      inputs_BL: int[B, L] token ids.
      num_buckets: M, the number of hash buckets.
      pad_id: the padding token, which contributes nothing.

    Returns:
      float32[B, M] counts; row i sums to (#non-pad tokens + #valid bigrams) of row i.
      Built by one scatter-add, so the work is O(B L) whatever M (plus the output).
    """
    buckets_BN, valid_BN = ngram_buckets(inputs_BL, num_buckets, pad_id=pad_id)
    batch_size = buckets_BN.shape[0]
    rows_BN = jnp.broadcast_to(jnp.arange(batch_size, dtype=jnp.int32)[:, None], buckets_BN.shape)
    counts_BM = jnp.zeros((batch_size, num_buckets), jnp.float32)
    return counts_BM.at[rows_BN, buckets_BN].add(valid_BN)


def total_ngram_counts(
    inputs_BL: jax.Array, num_buckets: int, *, pad_id: int = tokenizer.PAD_ID
) -> jax.Array:
    """float32[M] counts summed over the batch: `hashed_ngram_counts(...).sum(0)`,
    scattered straight into M buckets (no [B, M] intermediate)."""
    buckets_BN, valid_BN = ngram_buckets(inputs_BL, num_buckets, pad_id=pad_id)
    counts_M = jnp.zeros((num_buckets,), jnp.float32)
    return counts_M.at[buckets_BN].add(valid_BN)


def feature_log_probs(counts_M: jax.Array, *, smoothing: float) -> jax.Array:
    """Log of the smoothed categorical distribution of bucket counts.

    Args:
      counts_M: float[M] non-negative counts c_j.
      smoothing: additive (Laplace) smoothing s > 0.

    Returns:
      float32[M] log p_j = log (c_j + s) - log (sum_k c_k + M s); with no counts at all
      this is the uniform log(1 / M).
    """
    counts_M = counts_M.astype(jnp.float32)
    total = jnp.sum(counts_M) + counts_M.shape[0] * smoothing
    return jnp.log(counts_M + smoothing) - jnp.log(total)


def log_importance_weights(
    counts_BM: jax.Array,
    target_counts_M: jax.Array,
    generic_counts_M: jax.Array,
    *,
    smoothing: float,
) -> jax.Array:
    """DSIR log importance weights of a batch (module docstring).

    Args:
      counts_BM: float[B, M] hashed n-gram counts h(x_i) (`hashed_ngram_counts`).
      target_counts_M: float[M] bucket counts of the target data.
      generic_counts_M: float[M] bucket counts of the generic data.
      smoothing: additive smoothing s > 0 of both distributions.

    Returns:
      float32[B] log w_i = sum_j h_j(x_i) (log p_t[j] - log p_g[j]), the log of the
      bag-of-n-grams likelihood ratio p_t(x_i) / p_g(x_i) (0 for an all-pad row).
    """
    log_ratio_M = feature_log_probs(target_counts_M, smoothing=smoothing) - feature_log_probs(
        generic_counts_M, smoothing=smoothing
    )
    # HIGHEST: no reduced-precision (e.g. TF32) matmul on accelerators.
    return jnp.matmul(
        counts_BM.astype(jnp.float32), log_ratio_M, precision=jax.lax.Precision.HIGHEST
    )


class DsirCounts(NamedTuple):
    """The running bucket counts of DSIR: the `phi` of the `dsir` estimator.

    Attributes:
      target_M: float32[M] counts of the target n-grams (all of target_train).
      generic_M: float32[M] counts of the generic n-grams seen so far.

    float32 counts are exact up to 2^24 per bucket; beyond, each addition rounds with
    a relative error below 1e-7, which is negligible in the log-probabilities.
    """

    target_M: jax.Array
    generic_M: jax.Array


class DsirState(NamedTuple):
    """State of the `dsir` estimator besides its counts.

    Attributes:
      count: int32[] number of updates done.
    """

    count: jax.Array


def count_ngrams(
    batches: Iterable, num_buckets: int, *, pad_id: int = tokenizer.PAD_ID
) -> jax.Array:
    """float32[M] hashed n-gram counts summed over every example of ``batches`` (dicts
    with int[B, L] ``inputs``; all-pad rows count nothing): the exact target counts,
    one pass over the split."""
    count_fn = jax.jit(total_ngram_counts, static_argnums=1, static_argnames="pad_id")
    counts_M = jnp.zeros((num_buckets,), jnp.float32)
    for batch in batches:
        counts_M = counts_M + count_fn(jnp.asarray(batch["inputs"]), num_buckets, pad_id=pad_id)
    return counts_M


def zero_counts(num_buckets: int) -> DsirCounts:
    """The initial `DsirCounts` of M = num_buckets buckets: all zeros."""
    return DsirCounts(
        jnp.zeros((num_buckets,), jnp.float32), jnp.zeros((num_buckets,), jnp.float32)
    )


def dsir_log_weights(
    counts: DsirCounts,
    inputs_BL: jax.Array,
    *,
    smoothing: float = 1.0,
    pad_id: int = tokenizer.PAD_ID,
) -> jax.Array:
    """float32[B] log importance weights of `inputs_BL` under the running `counts`.

    Equal (up to float rounding) to `log_importance_weights(hashed_ngram_counts(
    inputs_BL, M), counts.target_M, counts.generic_M, smoothing=smoothing)` with M the
    size of the counts, computed as a gather of the per-bucket log ratio at each
    n-gram's bucket: O(B L) work and memory, no [B, M] count matrix. The scores of a
    big batch.
    """
    num_buckets = counts.target_M.shape[0]
    log_ratio_M = feature_log_probs(counts.target_M, smoothing=smoothing) - feature_log_probs(
        counts.generic_M, smoothing=smoothing
    )
    buckets_BN, valid_BN = ngram_buckets(inputs_BL, num_buckets, pad_id=pad_id)
    return jnp.sum(valid_BN * log_ratio_M[buckets_BN], axis=1)


def feature_kl(counts: DsirCounts, *, smoothing: float) -> jax.Array:
    """KL(p_t || p_g) in nats of the smoothed bucket distributions: float32[]."""
    log_p_t = feature_log_probs(counts.target_M, smoothing=smoothing)
    log_p_g = feature_log_probs(counts.generic_M, smoothing=smoothing)
    return jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_g))


def dsir(
    num_buckets: int,
    *,
    smoothing: float = 1.0,
    pad_id: int = tokenizer.PAD_ID,
) -> base.OuterMethod:
    """The online DSIR estimator, as an `OuterMethod` whose phi is a `DsirCounts`.

    Start from `phi = zero_counts(num_buckets)._replace(target_M=count_ngrams(
    target_train_batches, num_buckets))`: the target counts are fixed. Each
    `update(phi, state, theta, generic_batch, target_batch, key)` adds the n-gram counts
    of `generic_batch["inputs"]` to `phi.generic_M` (`theta`, `target_batch` and `key`
    are unused; there is no gradient and no optimiser). Pass the whole big batch B (or
    a uniform sub-sample of it) as the generic batch, not the selected examples, so that
    p_g estimates the pool. Score a big batch with `dsir_log_weights(phi, inputs_BL,
    smoothing=smoothing)`, i.e. `log_importance_weights` of its counts.

    Args:
      num_buckets: M, the number of hash buckets (the size of phi's arrays).
      smoothing: additive smoothing s > 0 of both distributions (for `dsir/feature_kl`;
        score with the same value).
      pad_id: the padding token, which contributes nothing.

    Returns:
      An `OuterMethod` with state `DsirState(count)`. Metrics: `dsir/target_ngrams`,
      `dsir/generic_ngrams` (the totals of the counts) and `dsir/feature_kl`
      (KL(p_t || p_g) of the updated smoothed estimates: how distinct the target is).
    """
    if smoothing <= 0:
        raise ValueError(f"smoothing must be > 0, got {smoothing}")
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")

    def init(phi: DsirCounts, theta=None) -> DsirState:
        del theta
        for name, counts_M in zip(DsirCounts._fields, phi):
            if counts_M.shape != (num_buckets,):
                raise ValueError(
                    f"phi.{name} has shape {counts_M.shape}, expected ({num_buckets},)"
                )
        return DsirState(jnp.zeros([], jnp.int32))

    def update(phi, outer_state, theta, generic_batch, target_batch, key=None):
        del theta, target_batch, key
        target_M = phi.target_M
        generic_M = phi.generic_M + total_ngram_counts(
            generic_batch["inputs"], num_buckets, pad_id=pad_id
        )
        phi = DsirCounts(target_M, generic_M)
        metrics = {
            "dsir/target_ngrams": jnp.sum(target_M),
            "dsir/generic_ngrams": jnp.sum(generic_M),
            "dsir/feature_kl": feature_kl(phi, smoothing=smoothing),
        }
        return phi, DsirState(outer_state.count + 1), metrics

    return base.OuterMethod(init, update)


# ------------------------------------------------------------------------ word features
#
# The authors' form (the ``data-selection`` package, ``HashedNgramDSIR``): a document's
# text is lower-cased and split into WordPunct words (maximal runs of word characters,
# and of characters that are neither word characters nor space); its unigrams and its
# bigrams (two consecutive words joined by one space) are hashed into M buckets by
# sha256 of their UTF-8 bytes mod M. p_t and p_g are the normalised bucket counts of the
# target and of the raw pool (no additive smoothing), and
#
#     log w(x) = sum_j h_j(x) (log(p_t[j] + 1e-8) - log(p_g[j] + 1e-8)).
#
# Host-side Python: a document's weight depends on its whole text, which the truncated
# ``inputs`` of a batch do not hold.

# The authors' bucket count (their default) and the floor added to both probabilities.
WORD_BUCKETS = 10_000
PROBABILITY_FLOOR = 1e-8
# The authors stop counting the pool past this many n-grams per bucket (their "auto").
POOL_NGRAMS_PER_BUCKET = 100_000
_WORD_PUNCT = re.compile(r"\w+|[^\w\s]+")


def words(text: str) -> list[str]:
    """The lower-cased WordPunct words of ``text`` (nltk's ``WordPunctTokenizer``:
    runs of ``\\w`` characters, and runs of characters that are neither ``\\w`` nor
    space)."""
    return _WORD_PUNCT.findall(text.lower())


@functools.lru_cache(maxsize=2**20)
def word_bucket(ngram: str, num_buckets: int) -> int:
    """The bucket of one n-gram: int(sha256(utf-8 bytes), 16) mod M."""
    return int(hashlib.sha256(ngram.encode("utf-8")).hexdigest(), 16) % num_buckets


def word_ngram_buckets(text: str, num_buckets: int) -> np.ndarray:
    """int64[N] buckets of the unigrams then the bigrams of ``text``'s words (N = 2n - 1
    for n >= 1 words, 0 for none)."""
    tokens = words(text)
    ngrams = tokens + [f"{a} {b}" for a, b in zip(tokens[:-1], tokens[1:])]
    return np.fromiter((word_bucket(g, num_buckets) for g in ngrams), np.int64, len(ngrams))


def count_word_ngrams(
    texts: Iterable[str], num_buckets: int, *, max_ngrams: int | None = None
) -> np.ndarray:
    """float64[M] bucket counts of the word n-grams of ``texts``, in order, stopping
    after the document that takes the total past ``max_ngrams`` (None: all)."""
    counts_M = np.zeros(num_buckets, np.float64)
    for text in texts:
        np.add.at(counts_M, word_ngram_buckets(text, num_buckets), 1.0)
        if max_ngrams is not None and counts_M.sum() > max_ngrams:
            break
    return counts_M


def word_log_ratio(target_counts_M: np.ndarray, pool_counts_M: np.ndarray) -> np.ndarray:
    """float64[M] log(p_t + 1e-8) - log(p_g + 1e-8), p the normalised counts."""
    p_t = target_counts_M / max(target_counts_M.sum(), 1.0)
    p_g = pool_counts_M / max(pool_counts_M.sum(), 1.0)
    return np.log(p_t + PROBABILITY_FLOOR) - np.log(p_g + PROBABILITY_FLOOR)


def word_log_weight(text: str, log_ratio_M: np.ndarray) -> float:
    """log w(x) = sum over the word n-grams of ``text`` of the log ratio of their bucket
    (0 for a text without words)."""
    return float(np.sum(log_ratio_M[word_ngram_buckets(text, log_ratio_M.shape[0])]))


def word_log_weights_fn(
    target_texts: Iterable[str], pool_texts: Iterable[str], num_buckets: int = WORD_BUCKETS
):
    """``log_weight(text) -> float`` of the authors' word-feature DSIR: p_t counts every
    target text, once; p_g counts the pool's texts in order up to
    ``POOL_NGRAMS_PER_BUCKET * num_buckets`` n-grams (the authors' default budget)."""
    log_ratio_M = word_log_ratio(
        count_word_ngrams(target_texts, num_buckets),
        count_word_ngrams(pool_texts, num_buckets, max_ngrams=POOL_NGRAMS_PER_BUCKET * num_buckets),
    )
    return functools.partial(word_log_weight, log_ratio_M=log_ratio_M)
