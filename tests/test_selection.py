"""Tests for adaptive_data.core.selection: exact laws checked with chi-square tests."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from adaptive_data.core import selection

from conftest import ridge_loss

N_DRAWS = 20_000
P_VALUE_MIN = 1e-3  # fixed seeds: a deterministic check, rejects only clear mismatches
LOGITS = np.array([0.5, -1.0, 1.5, 0.0], np.float32)


@pytest.fixture(autouse=True)
def _strict():
    with jax.numpy_rank_promotion("raise"):
        yield


def _softmax(x):
    e = np.exp(np.asarray(x, np.float64) - np.max(x))
    return e / e.sum()


def _draw_many(fn, seed, *args):
    keys = jax.random.split(jax.random.key(seed), N_DRAWS)
    indices, weights = jax.jit(jax.vmap(lambda k: fn(k, *args)))(keys)
    return np.asarray(indices), np.asarray(weights)


def _chi_square_ok(counts, probs):
    counts = np.asarray(counts, np.float64)
    expected = np.asarray(probs, np.float64) * counts.sum()
    assert np.all(expected > 5), "too few draws for a chi-square test"
    _, p_value = stats.chisquare(counts, expected)
    assert p_value > P_VALUE_MIN, (counts, expected, p_value)


def test_with_replacement_frequencies():
    b = 3
    fn = lambda k, logits: selection.sample_with_replacement(k, logits, b)  # noqa: E731
    indices, weights = _draw_many(fn, 0, jnp.asarray(LOGITS))
    assert indices.shape == (N_DRAWS, b) and indices.dtype == np.int32
    np.testing.assert_allclose(weights, 1.0 / b)
    for j in range(b):  # every draw follows softmax(logits), independently
        _chi_square_ok(np.bincount(indices[:, j], minlength=4), _softmax(LOGITS))
    # Independence of two draws: the joint law is the product.
    pairs = indices[:, 0] * 4 + indices[:, 1]
    _chi_square_ok(np.bincount(pairs, minlength=16), np.outer(*[_softmax(LOGITS)] * 2).ravel())


def test_without_replacement_first_draw_and_distinct():
    logits = np.array([0.3, -0.5, 1.0, 0.0, -1.2, 0.7], np.float32)
    b = 4
    fn = lambda k, lg: selection.sample_without_replacement(k, lg, b)  # noqa: E731
    indices, weights = _draw_many(fn, 1, jnp.asarray(logits))
    assert indices.shape == (N_DRAWS, b) and indices.dtype == np.int32
    np.testing.assert_allclose(weights, 1.0 / b)
    assert all(len(set(row)) == b for row in indices.tolist())
    _chi_square_ok(np.bincount(indices[:, 0], minlength=6), _softmax(logits))


def _exact_sequential_pairs(p):
    """Law of the unordered pair drawn by 2 sequential draws without replacement."""
    law = {}
    for i, j in itertools.combinations(range(len(p)), 2):
        law[(i, j)] = p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
    return law


def test_without_replacement_b2_of_4_matches_enumeration():
    p = _softmax(LOGITS)
    law = _exact_sequential_pairs(p)
    assert np.isclose(sum(law.values()), 1.0)
    fn = lambda k, lg: selection.sample_without_replacement(k, lg, 2)  # noqa: E731
    indices, _ = _draw_many(fn, 2, jnp.asarray(LOGITS))
    pairs = list(law)
    observed = [np.sum((indices.min(1) == i) & (indices.max(1) == j)) for i, j in pairs]
    _chi_square_ok(observed, [law[pair] for pair in pairs])
    # Inclusion probabilities, each within 4 binomial standard deviations.
    inclusion = np.array([sum(v for k, v in law.items() if i in k) for i in range(4)])
    freq = np.array([np.mean(np.any(indices == i, axis=1)) for i in range(4)])
    sd = np.sqrt(inclusion * (1 - inclusion) / N_DRAWS)
    assert np.all(np.abs(freq - inclusion) < 4 * sd), (freq, inclusion)


def test_without_replacement_never_draws_minus_inf():
    logits = jnp.array([0.0, -jnp.inf, 1.0, -jnp.inf, 2.0])
    indices, _ = _draw_many(lambda k, lg: selection.sample_without_replacement(k, lg, 3), 3, logits)
    assert set(np.unique(indices)) == {0, 2, 4}


def test_top_b_equals_argsort():
    scores = np.random.default_rng(0).normal(size=17).astype(np.float32)
    for b in (1, 5, 17):
        indices, weights = selection.top_b(jnp.asarray(scores), b)
        np.testing.assert_array_equal(np.asarray(indices), np.argsort(-scores, kind="stable")[:b])
        np.testing.assert_allclose(np.asarray(weights), np.full(b, 1.0 / b))
        assert indices.dtype == jnp.int32 and weights.dtype == jnp.float32


@pytest.mark.parametrize("strategy", selection.STRATEGIES)
def test_same_key_same_result_and_jit(strategy):
    scores = jnp.asarray(np.random.default_rng(1).normal(size=32), jnp.float32)
    fn = jax.jit(lambda k, s: selection.select(k, s, 8, strategy=strategy, temperature=0.5))
    key = jax.random.key(7)
    first, second = fn(key, scores), fn(key, scores)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert first[0].shape == (8,) and first[1].shape == (8,)
    if strategy in ("sample", "sample_with_replacement"):
        others = [np.asarray(fn(jax.random.key(s), scores)[0]) for s in range(5)]
        assert any(not np.array_equal(o, first[0]) for o in others)


def test_select_temperature_and_dispatch():
    scores = jnp.array([1.0, 2.0, 0.5])
    key = jax.random.key(0)
    # Temperature t: logits = scores / t, so the same Gumbel noise gives the same
    # result as sampling scores / t directly.
    got = selection.select(key, scores, 2, strategy="sample", temperature=0.25)
    ref = selection.sample_without_replacement(key, scores / 0.25, 2)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(ref[0]))
    top = selection.select(None, scores, 2, strategy="top")
    np.testing.assert_array_equal(np.asarray(top[0]), [1, 0])
    with pytest.raises(ValueError, match="valid strategies.*sample_with_replacement"):
        selection.select(key, scores, 2, strategy="bogus")
    with pytest.raises(ValueError, match="b <= B"):
        selection.top_b(scores, 4)
    with pytest.raises(ValueError, match="temperature"):
        selection.select(key, scores, 2, strategy="sample", temperature=0.0)
    with pytest.raises(ValueError, match="key"):
        selection.select(None, scores, 2, strategy="sample")


def test_positive_only_some_positive():
    scores = jnp.array([-1.0, 3.0, -0.5, 0.0, 2.0, -2.0, 1.0])
    for key in (None, jax.random.key(0), jax.random.key(1)):
        indices, weights = selection.positive_only(scores, 5, key)
        indices, weights = np.asarray(indices), np.asarray(weights)
        np.testing.assert_array_equal(indices[:3], [1, 4, 6])  # positives, by score
        np.testing.assert_allclose(weights, [1 / 3] * 3 + [0.0, 0.0])
        assert len(set(indices.tolist())) == 5
        assert all(float(scores[i]) <= 0 for i in indices[3:])
        if key is None:  # deterministic filler: the highest non-positive scores
            np.testing.assert_array_equal(indices[3:], [3, 2])
    proportional = selection.positive_only(scores, 5, proportional=True)[1]
    np.testing.assert_allclose(np.asarray(proportional), [0.5, 1 / 3, 1 / 6, 0.0, 0.0], rtol=1e-6)


def test_positive_only_many_or_none_positive():
    scores = jnp.array([0.5, 3.0, 1.0, 2.0, -1.0])
    indices, weights = selection.positive_only(scores, 3)
    np.testing.assert_array_equal(np.asarray(indices), [1, 3, 2])
    np.testing.assert_allclose(np.asarray(weights), np.full(3, 1 / 3))
    negative = jnp.array([-0.5, -3.0, -1.0, 0.0])
    indices, weights = selection.positive_only(negative, 2)
    np.testing.assert_array_equal(np.asarray(indices), [3, 0])
    np.testing.assert_allclose(np.asarray(weights), [0.5, 0.5])
    # With a key and no positive: a uniform random b of B, with weights 1/b.
    draws = [
        np.asarray(selection.positive_only(negative, 2, jax.random.key(s))[0]) for s in range(20)
    ]
    assert len({tuple(sorted(d)) for d in draws}) > 1


def test_positive_weighted_keeps_top_b_with_proportional_weights():
    scores = jnp.array([5.0, 3.0, 2.0, -1.0, -4.0])
    indices, weights = selection.select(None, scores, 3, strategy="positive_weighted")
    np.testing.assert_array_equal(np.asarray(indices), [0, 1, 2])
    np.testing.assert_allclose(np.asarray(weights), [0.5, 0.3, 0.2], rtol=1e-6)
    # The training loss sum_j weights_j l(x_{indices_j}) has gradient
    # 0.5 grad l_0 + 0.3 grad l_1 + 0.2 grad l_2; ridge gradients written by hand.
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.normal(size=(5, 4)).astype(np.float32),
        "y": rng.normal(size=5).astype(np.float32),
        "lam": np.full(5, 0.1, np.float32),
    }
    w = rng.normal(size=4).astype(np.float32)

    def training_loss(theta):
        return jnp.sum(weights * ridge_loss(theta, selection.gather(batch, indices)))

    got = jax.grad(training_loss)({"w": jnp.asarray(w)})["w"]
    by_hand = [(batch["x"][i] @ w - batch["y"][i]) * batch["x"][i] + 0.1 * w for i in range(3)]
    expected = 0.5 * by_hand[0] + 0.3 * by_hand[1] + 0.2 * by_hand[2]
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
    # Scores out of order, a non-positive score among the kept b (weight 0), and a key
    # (ignored: the strategy is deterministic).
    shuffled = jnp.array([2.0, -4.0, 5.0, -1.0, 3.0])
    for key in (None, jax.random.key(3)):
        indices, weights = selection.select(key, shuffled, 4, strategy="positive_weighted")
        np.testing.assert_array_equal(np.asarray(indices), [2, 4, 0, 3])
        np.testing.assert_allclose(np.asarray(weights), [0.5, 0.3, 0.2, 0.0], rtol=1e-6)


def test_positive_weighted_uniform_when_no_kept_score_is_positive():
    scores = jnp.array([-0.5, -3.0, -1.0, 0.0])
    for key in (None, jax.random.key(0), jax.random.key(1)):
        indices, weights = selection.select(key, scores, 2, strategy="positive_weighted")
        np.testing.assert_array_equal(np.asarray(indices), [3, 0])  # the 2 largest scores
        np.testing.assert_allclose(np.asarray(weights), [0.5, 0.5])
        assert weights.dtype == jnp.float32 and indices.dtype == jnp.int32


def test_gather():
    batch = {"inputs": jnp.arange(12).reshape(4, 3), "domain": jnp.array([5, 6, 7, 8])}
    out = selection.gather(batch, jnp.array([2, 0, 2], jnp.int32))
    np.testing.assert_array_equal(np.asarray(out["inputs"]), [[6, 7, 8], [0, 1, 2], [6, 7, 8]])
    np.testing.assert_array_equal(np.asarray(out["domain"]), [7, 5, 7])
