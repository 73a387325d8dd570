"""Tests for adaptive_data.core.alignment against a naive loop of jax.grad per example."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_data.core import alignment
from adaptive_data.core import tree as tree_lib

B = 12
METHODS = ("vmap", "jvp", "weights")


@pytest.fixture(autouse=True)
def _strict_float32():
    with jax.numpy_rank_promotion("raise"), jax.default_matmul_precision("float32"):
        yield


# ----------------------------------------------------------------------------
# Two models with a per-example loss, as (loss_fn, params, batch, target_batch).
# ----------------------------------------------------------------------------


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x_BD):
        h_BH = nn.tanh(nn.Dense(8, name="hidden")(x_BD))
        return nn.Dense(1, name="out")(h_BH)[:, 0]


def _mlp_problem():
    model = _MLP()
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 5)))["params"]

    def loss_fn(params, batch):
        pred_B = model.apply({"params": params}, batch["x"])
        return (pred_B - batch["y"]) ** 2

    rng = np.random.default_rng(0)

    def make_batch(n):
        return {
            "x": rng.normal(size=(n, 5)).astype(np.float32),
            "y": rng.normal(size=(n,)).astype(np.float32),
        }

    return loss_fn, params, make_batch(B), make_batch(6)


_VOCAB, _LEN, _PAD = 11, 8, 10


class _TinyLM(nn.Module):
    """Embedding + one causal self-attention layer + dense to the vocabulary."""

    @nn.compact
    def __call__(self, inputs_BL):
        dim = 16
        pos_LD = self.param("pos", nn.initializers.normal(0.1), (_LEN, dim))
        x_BLD = nn.Embed(_VOCAB, dim, name="embed")(inputs_BL) + pos_LD[None]
        causal_B1LL = nn.make_causal_mask(inputs_BL)
        x_BLD = x_BLD + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=dim, name="attn")(
            x_BLD, mask=causal_B1LL
        )
        x_BLD = nn.LayerNorm(name="norm")(x_BLD)
        return nn.Dense(_VOCAB, name="out")(x_BLD)


def _lm_problem():
    model = _TinyLM()
    params = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, _LEN), jnp.int32))["params"]

    def loss_fn(params, batch):
        """Mean next-token NLL over the non-padding targets of each example: [B]."""
        logits_BLV = model.apply({"params": params}, batch["inputs"])
        logp_BLV = jax.nn.log_softmax(logits_BLV)
        nll_BL = -jnp.take_along_axis(logp_BLV, batch["targets"][..., None], axis=-1)[..., 0]
        mask_BL = batch["mask"]
        return jnp.sum(nll_BL * mask_BL, axis=1) / jnp.maximum(jnp.sum(mask_BL, axis=1), 1.0)

    rng = np.random.default_rng(1)

    def make_batch(n):
        seq_BL1 = rng.integers(0, _PAD, size=(n, _LEN + 1))
        length_B = rng.integers(2, _LEN + 1, size=(n,))  # number of real targets
        real_BL = np.arange(_LEN)[None] < length_B[:, None]
        return {
            "inputs": np.where(real_BL, seq_BL1[:, :-1], _PAD).astype(np.int32),
            "targets": np.where(real_BL, seq_BL1[:, 1:], _PAD).astype(np.int32),
            "mask": real_BL.astype(np.float32),
            "domain": np.arange(n, dtype=np.int32) % 3,
        }

    batch = make_batch(B)
    assert np.any(batch["mask"] == 0), "the batch must contain padding"
    return loss_fn, params, batch, make_batch(6)


PROBLEMS = {"mlp": _mlp_problem, "lm": _lm_problem}


@functools.cache
def _problem(name):
    loss_fn, params, batch, target_batch = PROBLEMS[name]()
    direction = jax.jit(alignment.mean_gradient, static_argnums=0)(loss_fn, params, target_batch)
    return loss_fn, params, batch, direction


# ----------------------------------------------------------------------------
# Naive reference: a Python loop of jax.grad per example, dots in float64 numpy.
# ----------------------------------------------------------------------------


@functools.cache
def _naive_grads(name):
    """List over examples of {path: float64 gradient}."""
    loss_fn, params, batch, _ = _problem(name)
    grad_one = jax.jit(jax.grad(lambda p, ex: loss_fn(p, ex)[0]))
    paths = tree_lib.leaf_paths(params)
    grads = []
    for i in range(B):
        example = jax.tree.map(lambda x, i=i: x[i : i + 1], batch)
        leaves = jax.tree.leaves(grad_one(params, example))
        grads.append({p: np.asarray(g, np.float64).ravel() for p, g in zip(paths, leaves)})
    return grads


def _naive_scores(name, pattern=None, cosine=False):
    _, params, _, direction = _problem(name)
    paths = tree_lib.leaf_paths(params)
    keep = [p for p in paths if pattern is None or re.search(pattern, p)]
    d = {p: np.asarray(x, np.float64).ravel() for p, x in zip(paths, jax.tree.leaves(direction))}
    d_vec = np.concatenate([d[p] for p in keep])
    scores = []
    for g in _naive_grads(name):
        g_vec = np.concatenate([g[p] for p in keep])
        a = g_vec @ d_vec
        if cosine:
            a /= np.linalg.norm(g_vec) * np.linalg.norm(d_vec)
        scores.append(a)
    return np.array(scores)


def _assert_close(got, ref):
    got = np.asarray(got)
    assert got.shape == (B,) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.max(np.abs(ref)))


_jitted_alignment = jax.jit(
    alignment.per_example_alignment,
    static_argnums=0,
    static_argnames=("method", "chunk_size", "param_filter", "normalize"),
)


# ----------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("method", METHODS)
def test_methods_match_naive_loop(name, method):
    loss_fn, params, batch, direction = _problem(name)
    got = _jitted_alignment(loss_fn, params, batch, direction, method=method)
    _assert_close(got, _naive_scores(name))


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("method", METHODS)
def test_chunks_not_dividing_batch(name, method):
    loss_fn, params, batch, direction = _problem(name)
    got = _jitted_alignment(loss_fn, params, batch, direction, method=method, chunk_size=5)
    _assert_close(got, _naive_scores(name))


def test_chunk_sizes_edge_cases():
    loss_fn, params, batch, direction = _problem("mlp")
    ref = _naive_scores("mlp")
    # Without jit: chunks dividing B exactly (no remainder call).
    got = alignment.per_example_alignment(
        loss_fn, params, batch, direction, method="vmap", chunk_size=4
    )
    _assert_close(got, ref)
    for chunk_size in (1, 100):
        got = _jitted_alignment(
            loss_fn, params, batch, direction, method="vmap", chunk_size=chunk_size
        )
        _assert_close(got, ref)


@pytest.mark.parametrize(("name", "chunk_size"), (("mlp", None), ("lm", 5)))
def test_cosines_match_naive_loop(name, chunk_size):
    loss_fn, params, batch, direction = _problem(name)
    got = _jitted_alignment(
        loss_fn, params, batch, direction, method="vmap", chunk_size=chunk_size, normalize=True
    )
    ref = _naive_scores(name, cosine=True)
    _assert_close(got, ref)
    assert np.all(np.abs(np.asarray(got)) <= 1 + 1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_param_filter_matches_restricted_naive_loop(method):
    pattern = "attn/(query|value)/.*|out/kernel"
    loss_fn, params, batch, direction = _problem("lm")
    got = _jitted_alignment(loss_fn, params, batch, direction, method=method, param_filter=pattern)
    _assert_close(got, _naive_scores("lm", pattern))


def test_param_filter_cosines_and_zeroed_direction():
    pattern = "^out/"
    loss_fn, params, batch, direction = _problem("lm")
    got = _jitted_alignment(
        loss_fn, params, batch, direction, method="vmap", param_filter=pattern, normalize=True
    )
    _assert_close(got, _naive_scores("lm", pattern, cosine=True))
    # Dots with a filter equal dots along the direction zeroed off the filter.
    mask = tree_lib.path_mask(params, pattern)
    zeroed = jax.tree.map(lambda d, m: d if m else jnp.zeros_like(d), direction, mask)
    _assert_close(
        _jitted_alignment(loss_fn, params, batch, zeroed, method="jvp"),
        _naive_scores("lm", pattern),
    )


def test_mean_gradient_matches_naive_loop():
    loss_fn, params, batch, _ = _problem("lm")
    mean_gradient = jax.jit(alignment.mean_gradient, static_argnums=0)
    got = jax.tree.leaves(mean_gradient(loss_fn, params, batch))
    grads = _naive_grads("lm")
    for path, g in zip(tree_lib.leaf_paths(params), got):
        ref = np.mean([gi[path] for gi in grads], axis=0)
        np.testing.assert_allclose(np.ravel(g), ref, rtol=1e-5, atol=1e-6)


def test_zero_direction_gives_zero_cosines():
    loss_fn, params, batch, direction = _problem("mlp")
    zero = jax.tree.map(jnp.zeros_like, direction)
    got = _jitted_alignment(loss_fn, params, batch, zero, method="vmap", normalize=True)
    np.testing.assert_array_equal(np.asarray(got), np.zeros(B))


def test_errors():
    loss_fn, params, batch, direction = _problem("mlp")
    with pytest.raises(ValueError, match="valid methods.*vmap"):
        alignment.per_example_alignment(loss_fn, params, batch, direction, method="bad")
    for method in ("jvp", "weights"):
        with pytest.raises(ValueError, match='method="vmap"'):
            alignment.per_example_alignment(
                loss_fn, params, batch, direction, method=method, normalize=True
            )
    with pytest.raises(ValueError, match=r"'decoder/nothing'.*hidden/kernel"):
        alignment.per_example_alignment(
            loss_fn, params, batch, direction, param_filter="decoder/nothing"
        )
    with pytest.raises(ValueError, match="chunk_size"):
        alignment.per_example_alignment(loss_fn, params, batch, direction, chunk_size=0)
    with pytest.raises(ValueError, match="structure"):
        alignment.per_example_alignment(loss_fn, params, batch, {"x": jnp.zeros(3)})
