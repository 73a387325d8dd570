"""DSIR hashed n-gram importance weights (core/dsir.py) against hand computation.

The references re-implement the documented hash in plain Python integers and count
n-grams with dicts and loops, independently of the jnp code.
"""

import hashlib
import itertools
import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_data.core import dsir
from adaptive_data.data import tokenizer

PAD = tokenizer.PAD_ID


def py_bucket(key: int, multiplier: int, num_buckets: int) -> int:
    """The documented hash: x = k C mod 2^32, x ^= x >> 15, bucket = x mod M."""
    x = (key * multiplier) % 2**32
    x ^= x >> 15
    return x % num_buckets


def py_counts(row, num_buckets: int, pad_id: int = PAD) -> Counter:
    """Bucket -> count of the unigrams and bigrams of one row, skipping padding."""
    counts = Counter()
    for token in row:
        if token != pad_id:
            counts[py_bucket(token, 0x9E3779B1, num_buckets)] += 1
    for prev, cur in zip(row[:-1], row[1:]):
        if prev != pad_id and cur != pad_id:
            counts[py_bucket(prev * 259 + cur, 0x85EBCA77, num_buckets)] += 1
    return counts


def py_log_probs(counts: Counter, num_buckets: int, smoothing: float) -> list[float]:
    total = sum(counts.values()) + num_buckets * smoothing
    return [math.log((counts[j] + smoothing) / total) for j in range(num_buckets)]


def dense(counts: Counter, num_buckets: int) -> np.ndarray:
    return np.array([counts[j] for j in range(num_buckets)], np.float32)


def test_hash_reference_pins():
    # A few literal values, so that a change of the hash itself is noticed.
    assert py_bucket(0, 0x9E3779B1, 7) == 0
    x = (1 * 0x9E3779B1) % 2**32
    assert py_bucket(1, 0x9E3779B1, 2**32) == x ^ (x >> 15)
    got = dsir.hashed_ngram_counts(jnp.array([[1]]), 2**16)
    assert float(got[0, (x ^ (x >> 15)) % 2**16]) == 1.0


def test_two_document_corpus_by_hand():
    m, s = 5, 0.5
    target_doc = [0, 1, 0, 1, PAD, PAD]
    generic_doc = [2, 2, 1, 2, 0, PAD]
    query = [0, 1, 2, PAD, PAD, PAD]
    docs = [target_doc, generic_doc, query]

    # By hand.
    counts = [py_counts(d, m) for d in docs]
    assert sum(counts[0].values()) == 4 + 3 and sum(counts[1].values()) == 5 + 4
    log_p_t = py_log_probs(counts[0], m, s)
    log_p_g = py_log_probs(counts[1], m, s)
    assert math.isclose(sum(math.exp(v) for v in log_p_t), 1.0)
    log_w = [sum(c[j] * (log_p_t[j] - log_p_g[j]) for j in c) for c in counts]
    kl = sum(math.exp(log_p_t[j]) * (log_p_t[j] - log_p_g[j]) for j in range(m))

    # Library.
    inputs = jnp.array(docs, jnp.int32)
    counts_BM = dsir.hashed_ngram_counts(inputs, m)
    np.testing.assert_array_equal(counts_BM, np.stack([dense(c, m) for c in counts]))
    np.testing.assert_allclose(
        dsir.feature_log_probs(counts_BM[0], smoothing=s), log_p_t, rtol=1e-6
    )
    np.testing.assert_allclose(
        dsir.feature_log_probs(counts_BM[1], smoothing=s), log_p_g, rtol=1e-6
    )
    got = dsir.log_importance_weights(counts_BM, counts_BM[0], counts_BM[1], smoothing=s)
    np.testing.assert_allclose(got, log_w, rtol=1e-5, atol=1e-6)
    assert got[0] > 0 > got[1]

    # Through the estimator: the target document counted up front, one update with the
    # generic one, then scoring.
    method = dsir.dsir(m, smoothing=s)
    phi = dsir.zero_counts(m)._replace(target_M=dsir.count_ngrams([{"inputs": inputs[0:1]}], m))
    state = method.init(phi)
    phi, state, metrics = method.update(
        phi, state, None, {"inputs": inputs[1:2]}, {"inputs": inputs[0:1]}, None
    )
    np.testing.assert_array_equal(phi.target_M, dense(counts[0], m))
    np.testing.assert_array_equal(phi.generic_M, dense(counts[1], m))
    np.testing.assert_allclose(
        dsir.dsir_log_weights(phi, inputs, smoothing=s), log_w, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(metrics["dsir/feature_kl"], kl, rtol=1e-5)
    assert float(metrics["dsir/target_ngrams"]) == 7
    assert float(metrics["dsir/generic_ngrams"]) == 9
    assert int(state.count) == 1


def test_feature_log_probs_uniform_without_counts():
    log_p = dsir.feature_log_probs(jnp.zeros(8), smoothing=1.0)
    np.testing.assert_allclose(log_p, np.full(8, -math.log(8)), rtol=1e-6)
    assert float(dsir.feature_kl(dsir.zero_counts(8), smoothing=1.0)) == 0.0


def test_padding_contributes_nothing():
    m = 11
    a, b, c = 5, 6, 7
    counts = dsir.hashed_ngram_counts(
        jnp.array(
            [
                [a, b, PAD, PAD, c],  # padding in the middle: no (b, c) bigram
                [a, b, PAD, PAD, PAD],
                [c, PAD, PAD, PAD, PAD],
                [PAD] * 5,
            ]
        ),
        m,
    )
    np.testing.assert_array_equal(counts[0], counts[1] + counts[2])
    np.testing.assert_array_equal(counts[3], np.zeros(m))
    assert float(counts[0].sum()) == 3 + 1
    np.testing.assert_array_equal(counts[0], dense(py_counts([a, b, PAD, PAD, c], m), m))
    # Trailing padding changes nothing against a shorter row.
    np.testing.assert_array_equal(counts[1], dsir.hashed_ngram_counts(jnp.array([[a, b]]), m)[0])
    # An all-pad row has log weight 0 whatever the distributions.
    target = dsir.DsirCounts(jnp.arange(m, dtype=jnp.float32), jnp.ones(m))
    assert float(dsir.dsir_log_weights(target, jnp.full((1, 5), PAD))[0]) == 0.0


def test_custom_pad_id_and_length_one():
    m = 13
    counts = dsir.hashed_ngram_counts(jnp.array([[3, 0, 4]]), m, pad_id=0)
    np.testing.assert_array_equal(counts[0], dense(py_counts([3, 0, 4], m, pad_id=0), m))
    assert float(counts.sum()) == 2  # two unigrams, no bigram across the pad
    single = dsir.hashed_ngram_counts(jnp.array([[3], [PAD]]), m)
    np.testing.assert_array_equal(single.sum(axis=1), [1, 0])


def test_update_accumulates_exactly_under_jit():
    m, s = 64, 1.0
    rng = np.random.default_rng(0)

    def batch(n, length):
        inputs = rng.integers(0, 259, size=(n, length)).astype(np.int32)
        inputs[rng.random((n, length)) < 0.3] = PAD
        return {"inputs": jnp.asarray(inputs)}

    generic = [batch(12, 9), batch(12, 9)]
    target = [batch(4, 9), batch(4, 9)]
    method = dsir.dsir(m, smoothing=s)
    update = jax.jit(method.update)
    # target_train is counted once, up front; the updates add generic counts only.
    phi = dsir.zero_counts(m)._replace(target_M=dsir.count_ngrams(target, m))
    state = method.init(phi)
    for g, t in zip(generic, target):
        phi, state, metrics = update(phi, state, None, g, t, jax.random.key(0))

    def reference(batches):
        total = Counter()
        for b in batches:
            for row in np.asarray(b["inputs"]).tolist():
                total.update(py_counts(row, m))
        return dense(total, m)

    want_t, want_g = reference(target), reference(generic)
    np.testing.assert_array_equal(phi.target_M, want_t)
    np.testing.assert_array_equal(phi.generic_M, want_g)
    for b in generic:  # total_ngram_counts == the per-example counts summed
        np.testing.assert_array_equal(
            dsir.total_ngram_counts(b["inputs"], m),
            dsir.hashed_ngram_counts(b["inputs"], m).sum(axis=0),
        )
    assert int(state.count) == 2
    assert float(metrics["dsir/target_ngrams"]) == want_t.sum()
    assert float(metrics["dsir/generic_ngrams"]) == want_g.sum()
    p_t = (want_t + s) / (want_t.sum() + m * s)
    p_g = (want_g + s) / (want_g.sum() + m * s)
    np.testing.assert_allclose(
        metrics["dsir/feature_kl"], np.sum(p_t * np.log(p_t / p_g)), rtol=1e-4
    )
    # Gather-based scoring equals the count-based formula.
    inputs = generic[0]["inputs"]
    np.testing.assert_allclose(
        jax.jit(dsir.dsir_log_weights)(phi, inputs),
        dsir.log_importance_weights(
            dsir.hashed_ngram_counts(inputs, m), phi.target_M, phi.generic_M, smoothing=s
        ),
        rtol=1e-5,
        atol=1e-5,
    )


def test_target_like_example_scores_higher():
    m, length = 1024, 48

    def encode(texts):
        return jnp.stack(
            [jnp.asarray(tokenizer.BYTES.lm_example(t, length)["inputs"]) for t in texts]
        )

    target = encode(["the cat sat on the mat", "a dog and the cat ran", "the sun is on the hill"])
    generic = encode(
        [
            "def f(x): return x + 1",
            "for i in range(10): pass",
            "import numpy as np",
            "x = [i * 2 for i in y]",
        ]
    )
    method = dsir.dsir(m)
    phi = dsir.zero_counts(m)._replace(target_M=dsir.count_ngrams([{"inputs": target}], m))
    phi, _, metrics = method.update(
        phi, method.init(phi), None, {"inputs": generic}, {"inputs": target}, None
    )
    assert float(metrics["dsir/feature_kl"]) > 0.0
    queries = encode(["the cat and the dog sat", "def g(y): return y * 2"])
    log_w = dsir.dsir_log_weights(phi, queries)
    assert log_w[0] > 0 > log_w[1]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        dsir.dsir(8, smoothing=0.0)
    with pytest.raises(ValueError):
        dsir.hashed_ngram_counts(jnp.zeros((1, 2), jnp.int32), 0)
    with pytest.raises(ValueError):
        dsir.dsir(8).init(dsir.zero_counts(4))


# ------------------------------------------------- word features (the authors' form)


def _sha_bucket(ngram: str, m: int) -> int:
    return int(hashlib.sha256(ngram.encode()).hexdigest(), 16) % m


def test_word_ngrams_of_a_sentence_by_hand():
    text = "Hello, World! hello-world"
    # WordPunct of the lower-cased text, listed by hand; bigrams join two words by a space.
    hand = ["hello", ",", "world", "!", "hello", "-", "world"]
    assert dsir.words(text) == hand
    ngrams = hand + ["hello ,", ", world", "world !", "! hello", "hello -", "- world"]
    m = 97
    expected = Counter(_sha_bucket(g, m) for g in ngrams)
    counts = dsir.count_word_ngrams([text], m)
    assert {j: counts[j] for j in np.flatnonzero(counts)} == expected


def test_word_log_weights_of_a_two_document_corpus_by_hand():
    m = 50
    target, pool = ["apple pie"], ["apple pie", "steel beam beam"]
    # Bucket counts by hand (hashlib): target n-grams and pool n-grams.
    target_c = Counter(_sha_bucket(g, m) for g in ["apple", "pie", "apple pie"])
    pool_c = Counter(
        _sha_bucket(g, m)
        for g in ["apple", "pie", "apple pie", "steel", "beam", "beam", "steel beam", "beam beam"]
    )

    def log_w(grams):
        return sum(
            math.log(target_c[j] / 3 + 1e-8) - math.log(pool_c[j] / 8 + 1e-8)
            for j in (_sha_bucket(g, m) for g in grams)
        )

    log_weight = dsir.word_log_weights_fn(target, pool, m)
    assert log_weight("apple pie") == pytest.approx(log_w(["apple", "pie", "apple pie"]))
    assert log_weight("steel beam") == pytest.approx(log_w(["steel", "beam", "steel beam"]))
    assert log_weight("") == 0.0


def test_word_counts_equal_the_authors_package_on_the_embedded_corpus():
    hashed_ngram_dsir = pytest.importorskip("data_selection.hashed_ngram_dsir")
    from adaptive_data.data import embedded_corpus

    texts = [d["text"] for d in itertools.islice(embedded_corpus.iter_documents("manpages"), 200)]
    reference = np.zeros(dsir.WORD_BUCKETS, int)
    for text in texts:
        hashed_ngram_dsir.get_ngram_counts(text, counts=reference)
    np.testing.assert_array_equal(dsir.count_word_ngrams(texts, dsir.WORD_BUCKETS), reference)
