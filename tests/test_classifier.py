"""The classifier-selection baseline (core/outer/classifier.py): balanced logistic loss.

References are numpy float64 (finite differences, explicit per-set means); the
training test uses a separable 2-D toy problem.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptive_data.core import outer as classifier_lib
from adaptive_data.core.outer import base
from adaptive_data.models import weighting


def linear_logits(phi, batch):
    return batch["x"] @ phi["w"] + phi["b"]


def np_loss(w, b, x_t, x_g):
    """The balanced loss, in numpy: 1/2 mean softplus(-z_t) + 1/2 mean softplus(z_g)."""
    z_t, z_g = x_t @ w + b, x_g @ w + b
    return 0.5 * np.mean(np.logaddexp(0.0, -z_t)) + 0.5 * np.mean(np.logaddexp(0.0, z_g))


def toy(seed=0, n_t=5, n_g=7, d=3):
    rng = np.random.default_rng(seed)
    x_t = rng.normal(loc=0.5, size=(n_t, d))
    x_g = rng.normal(loc=-0.5, size=(n_g, d))
    w, b = rng.normal(size=d), rng.normal()
    return x_t, x_g, w, b


def test_gradient_matches_finite_differences(x64):
    x_t, x_g, w, b = toy()
    phi = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    grad, metrics = classifier_lib.classifier_gradient(
        linear_logits, phi, {"x": jnp.asarray(x_g)}, {"x": jnp.asarray(x_t)}
    )
    assert grad["w"].dtype == jnp.float64
    np.testing.assert_allclose(metrics["outer/objective"], np_loss(w, b, x_t, x_g), rtol=1e-12)

    eps = 1e-6
    fd_w = np.array(
        [
            (np_loss(w + eps * e, b, x_t, x_g) - np_loss(w - eps * e, b, x_t, x_g)) / (2 * eps)
            for e in np.eye(len(w))
        ]
    )
    fd_b = (np_loss(w, b + eps, x_t, x_g) - np_loss(w, b - eps, x_t, x_g)) / (2 * eps)
    np.testing.assert_allclose(grad["w"], fd_w, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(grad["b"], fd_b, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(
        metrics["outer/grad_norm"], np.sqrt(np.sum(fd_w**2) + fd_b**2), rtol=1e-7
    )

    z_t, z_g = x_t @ w + b, x_g @ w + b
    np.testing.assert_allclose(
        metrics["classifier/accuracy"], 0.5 * (np.mean(z_t > 0) + np.mean(z_g <= 0))
    )
    np.testing.assert_allclose(metrics["classifier/target_logit"], z_t.mean(), rtol=1e-12)
    np.testing.assert_allclose(metrics["classifier/generic_logit"], z_g.mean(), rtol=1e-12)


def test_sets_weigh_equally_whatever_their_sizes(x64):
    x_t, x_g, w, b = toy(seed=1)
    phi = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    target = {"x": jnp.asarray(x_t)}
    grad_1, m_1 = classifier_lib.classifier_gradient(
        linear_logits, phi, {"x": jnp.asarray(x_g)}, target
    )
    x_g2 = np.concatenate([x_g, x_g])  # every generic example twice
    grad_2, m_2 = classifier_lib.classifier_gradient(
        linear_logits, phi, {"x": jnp.asarray(x_g2)}, target
    )
    np.testing.assert_allclose(m_2["outer/objective"], m_1["outer/objective"], rtol=1e-12)
    for key in ("w", "b"):
        np.testing.assert_allclose(grad_2[key], grad_1[key], rtol=1e-12, atol=1e-15)

    # A pooled mean over all examples would have changed.
    def pooled(x_gen):
        z_t, z_g = x_t @ w + b, x_gen @ w + b
        return np.mean(np.concatenate([np.logaddexp(0.0, -z_t), np.logaddexp(0.0, z_g)]))

    assert abs(pooled(x_g2) - pooled(x_g)) > 1e-3


def separable_toy(rng, n, target):
    """Points of a box in the positive (target) or negative (generic) quadrant."""
    lo, hi = (0.5, 2.0) if target else (-2.0, -0.5)
    return {"x": jnp.asarray(rng.uniform(lo, hi, size=(n, 2)), jnp.float32)}


def test_adam_training_separates_a_toy():
    rng = np.random.default_rng(0)
    method = classifier_lib.classifier(linear_logits, optax.adam(0.05))
    phi = {"w": jnp.array([-1.0, 0.5]), "b": jnp.array(0.3)}  # starts wrong
    state = method.init(phi, None)
    update = jax.jit(method.update)
    for step in range(300):
        generic = separable_toy(rng, 32, target=False)
        target = separable_toy(rng, 8, target=True)
        phi, state, metrics = update(phi, state, None, generic, target, None)
        if step == 0:
            first_loss = float(metrics["outer/objective"])
    assert int(state.count) == 300
    assert float(metrics["classifier/accuracy"]) == 1.0
    assert float(metrics["outer/objective"]) < 0.1 * first_loss
    # Held-out points: all classified correctly.
    _, held_out = classifier_lib.classifier_gradient(
        linear_logits,
        phi,
        separable_toy(rng, 500, target=False),
        separable_toy(rng, 500, target=True),
    )
    assert float(held_out["classifier/accuracy"]) == 1.0
    assert held_out["classifier/target_logit"] > 0 > held_out["classifier/generic_logit"]


def test_jit_matches_eager():
    rng = np.random.default_rng(1)
    method = classifier_lib.classifier(linear_logits, optax.adam(0.1))
    phi = {"w": jnp.array([0.2, -0.1]), "b": jnp.array(0.0)}
    state = method.init(phi)
    args = (
        phi,
        state,
        None,
        separable_toy(rng, 6, False),
        separable_toy(rng, 3, True),
        jax.random.key(0),
    )
    eager = method.update(*args)
    jitted = jax.jit(method.update)(*args)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert isinstance(eager[1], base.PhiState)


def test_weighting_cnn_logits():
    """The intended use: the weighting CNN (mode "logits") as the classifier."""
    model = weighting.WeightingModel(
        vocab_size=259, pad_id=258, embed_dim=8, conv_features=(8,), kernel_size=3
    )
    rng = np.random.default_rng(2)
    inputs_g = jnp.asarray(rng.integers(0, 256, size=(6, 10)), jnp.int32)
    inputs_t = jnp.asarray(rng.integers(0, 256, size=(2, 10)), jnp.int32)
    inputs_t = inputs_t.at[:, 7:].set(model.pad_id)
    params = weighting.init_weighting_params(jax.random.key(0), model, inputs_g)

    def logit_fn(p, batch):
        return weighting.weighting_forward(model, p, batch["inputs"], mode="logits")

    method = classifier_lib.classifier(logit_fn, optax.adam(1e-3))
    state = method.init(params)
    new_params, state, metrics = jax.jit(method.update)(
        params, state, None, {"inputs": inputs_g}, {"inputs": inputs_t}, None
    )
    assert int(state.count) == 1
    assert all(bool(jnp.isfinite(v)) for v in metrics.values())
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
