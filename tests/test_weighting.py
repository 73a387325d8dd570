"""Tests for adaptive_data.models.weighting."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_data.models import weighting

PAD = 258
B, L = 6, 16


@pytest.fixture(autouse=True)
def _strict():
    with jax.numpy_rank_promotion("raise"):
        yield


def _inputs():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, size=(B, L)).astype(np.int32)
    lengths = np.array([16, 1, 5, 9, 12, 3])
    return np.where(np.arange(L)[None] < lengths[:, None], tokens, PAD).astype(np.int32)


@functools.cache
def _setup(activation="relu"):
    model = weighting.WeightingModel(
        vocab_size=259,
        pad_id=PAD,
        embed_dim=8,
        conv_features=(16, 12),
        kernel_size=3,
        activation=activation,
    )
    params = weighting.init_weighting_params(jax.random.key(0), model, jnp.asarray(_inputs()))
    return model, params, jax.jit(model.apply)


@pytest.mark.parametrize("activation", ("relu", "gelu"))
def test_shapes_and_params(activation):
    model, params, apply = _setup(activation)
    logits = apply({"params": params}, _inputs())
    assert logits.shape == (B,) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    assert set(params) == {"embed", "conv_0", "conv_1", "logit", "scale"}
    assert params["embed"]["embedding"].shape == (259, 8)
    assert params["conv_1"]["kernel"].shape == (3, 16, 12)
    np.testing.assert_allclose(jax.nn.softplus(params["scale"]), 1.0, rtol=1e-6)
    # Examples are scored independently: a batch of one gives the same logit.
    single = apply({"params": params}, _inputs()[2:3])
    np.testing.assert_allclose(np.asarray(single), np.asarray(logits[2:3]), rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_logits():
    _, params, apply = _setup()
    inputs = _inputs()
    logits = np.asarray(apply({"params": params}, inputs))
    # Explicit mask: any token at a masked position is ignored.
    mask = inputs != PAD
    scrambled = np.where(mask, inputs, np.random.default_rng(1).integers(0, 256, (B, L)))
    np.testing.assert_allclose(
        np.asarray(apply({"params": params}, scrambled, mask)), logits, rtol=1e-5, atol=1e-6
    )
    # More padding after the end: the default mask (inputs != pad_id) ignores it.
    wider = np.concatenate([inputs, np.full((B, 7), PAD, np.int32)], axis=1)
    np.testing.assert_allclose(
        np.asarray(apply({"params": params}, wider)), logits, rtol=1e-5, atol=1e-6
    )
    # All-padding examples give a finite logit.
    empty = np.full((2, L), PAD, np.int32)
    assert np.all(np.isfinite(np.asarray(apply({"params": params}, empty))))


def test_modes():
    logits = jnp.array([0.3, -1.0, 2.0, 0.0, 0.5])
    prob = weighting.example_weights(logits, "probability")
    np.testing.assert_allclose(float(jnp.sum(prob)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(prob), np.exp(logits) / np.sum(np.exp(logits)), rtol=1e-6)
    scale = jnp.array(0.7)
    positive = weighting.example_weights(logits, "positive", scale)
    assert np.all(np.asarray(positive) > 0)
    np.testing.assert_allclose(float(jnp.mean(positive)), np.log1p(np.exp(0.7)), rtol=1e-6)
    np.testing.assert_allclose(
        float(jnp.mean(weighting.example_weights(logits, "positive"))), 1.0, rtol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(weighting.example_weights(logits, "logits")), logits)
    with pytest.raises(ValueError, match="valid modes"):
        weighting.example_weights(logits, "softmax")


def test_weighting_forward_gradient_reaches_scale():
    model, params, _ = _setup()
    inputs = jnp.asarray(_inputs())

    def objective(p):
        w_B = weighting.weighting_forward(model, p, inputs, mode="positive")
        return jnp.sum(w_B * jnp.arange(B, dtype=jnp.float32))

    grads = jax.jit(jax.grad(objective))(params)
    assert float(jnp.abs(grads["scale"])) > 0
    assert float(jnp.max(jnp.abs(grads["conv_0"]["kernel"]))) > 0
