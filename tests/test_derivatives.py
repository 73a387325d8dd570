"""Tests of core/derivatives.py against dense Hessians and explicit matrices (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from adaptive_data.core import derivatives

from conftest import ridge_loss as _ridge_loss

pytestmark = pytest.mark.usefixtures("x64")


def _ridge_data(seed=0, n=10, d=4, lam=0.3):
    rng = np.random.default_rng(seed)
    batch = {"x": rng.normal(size=(n, d)), "y": rng.normal(size=n), "lam": np.full(n, lam)}
    return jax.tree.map(jnp.asarray, batch), rng


def _mlp_loss(params, batch):
    hidden_BH = jnp.tanh(batch["x"] @ params["w1"] + params["b1"][None, :])
    out_B = hidden_BH @ params["w2"] + params["b2"]
    return (out_B - batch["y"]) ** 2


def test_hvp_matches_dense_hessian_of_tiny_mlp():
    rng = np.random.default_rng(1)
    params = {
        "w1": rng.normal(size=(3, 4)),
        "b1": rng.normal(size=4),
        "w2": rng.normal(size=4),
        "b2": np.array(0.5),
    }
    params = jax.tree.map(jnp.asarray, params)
    batch = {"x": jnp.asarray(rng.normal(size=(6, 3))), "y": jnp.asarray(rng.normal(size=6))}
    flat, unravel = ravel_pytree(params)
    v_flat = jnp.asarray(rng.normal(size=flat.shape))

    def f(p):
        return jnp.mean(_mlp_loss(p, batch))

    dense = jax.hessian(lambda x: f(unravel(x)))(flat)
    got = jax.jit(derivatives.hvp, static_argnums=0)(f, params, unravel(v_flat))
    np.testing.assert_allclose(ravel_pytree(got)[0], dense @ v_flat, rtol=1e-10, atol=1e-12)


def test_hvp_matches_explicit_weighted_ridge_hessian():
    batch, rng = _ridge_data()
    n, d = batch["x"].shape
    w_B = jnp.asarray(rng.uniform(0.2, 2.0, size=n))
    theta = {"w": jnp.asarray(rng.normal(size=d))}
    v = {"w": jnp.asarray(rng.normal(size=d))}

    def inner(p):
        return jnp.vdot(w_B, _ridge_loss(p, batch)) / jnp.sum(w_B)

    x = np.asarray(batch["x"])
    w = np.asarray(w_B)
    hessian = x.T @ (w[:, None] * x) / w.sum() + 0.3 * np.eye(d)
    np.testing.assert_allclose(
        derivatives.hvp(inner, theta, v)["w"], hessian @ np.asarray(v["w"]), rtol=1e-10
    )
    (grad, aux), (h_v, aux_dot) = derivatives.grad_and_hvp(
        lambda p: (inner(p), _ridge_loss(p, batch)), theta, v, has_aux=True
    )
    per_example_grads = (x @ np.asarray(theta["w"]) - np.asarray(batch["y"]))[:, None] * x
    per_example_grads += 0.3 * np.asarray(theta["w"])[None, :]
    np.testing.assert_allclose(grad["w"], per_example_grads.T @ w / w.sum(), rtol=1e-10)
    np.testing.assert_allclose(h_v["w"], hessian @ np.asarray(v["w"]), rtol=1e-10)
    np.testing.assert_allclose(aux_dot, per_example_grads @ np.asarray(v["w"]), rtol=1e-10)
    np.testing.assert_allclose(aux, _ridge_loss(theta, batch), rtol=1e-12)


def test_jvp_vjp_and_linearize_match_per_example_gradient_matrix():
    batch, rng = _ridge_data(seed=2)
    n, d = batch["x"].shape
    theta = {"w": jnp.asarray(rng.normal(size=d))}
    x = np.asarray(batch["x"])
    grads_Bd = (x @ np.asarray(theta["w"]) - np.asarray(batch["y"]))[:, None] * x
    grads_Bd += 0.3 * np.asarray(theta["w"])[None, :]
    u = {"w": jnp.asarray(rng.normal(size=d))}
    w_B = jnp.asarray(rng.uniform(size=n))

    _, a_B = derivatives.loss_jvp(_ridge_loss, theta, batch, u)
    np.testing.assert_allclose(a_B, grads_Bd @ np.asarray(u["w"]), rtol=1e-10)
    _, g_w = derivatives.weighted_grad(_ridge_loss, theta, batch, w_B)
    np.testing.assert_allclose(g_w["w"], grads_Bd.T @ np.asarray(w_B), rtol=1e-10)
    losses_B, jvp_fn, vjp_fn = derivatives.linearize_losses(_ridge_loss, theta, batch)
    np.testing.assert_allclose(losses_B, _ridge_loss(theta, batch), rtol=1e-12)
    np.testing.assert_allclose(jvp_fn(u), grads_Bd @ np.asarray(u["w"]), rtol=1e-10)
    np.testing.assert_allclose(vjp_fn(w_B)["w"], grads_Bd.T @ np.asarray(w_B), rtol=1e-10)


def test_weights_pullback_and_entropy():
    phi = jnp.array([0.1, -0.4, 0.7])
    batch = {"domain": jnp.array([0, 1, 2, 2, 1])}

    def weight_fn(p, b):
        return jnp.exp(p[b["domain"]])

    cot_B = jnp.array([1.0, -2.0, 0.5, 0.3, 1.5])
    for normalize in (False, True):
        w_B, pullback = derivatives.weights_and_pullback(weight_fn, phi, batch, normalize=normalize)
        w = np.exp(np.asarray(phi)[np.asarray(batch["domain"])])
        one_hot = np.eye(3)[np.asarray(batch["domain"])]
        jac = w[:, None] * one_hot  # dw_i/dphi_k
        if normalize:
            s = w.sum()
            jac = jac / s - np.outer(w, w @ one_hot) / s**2
            w = w / s
        np.testing.assert_allclose(w_B, w, rtol=1e-12)
        np.testing.assert_allclose(pullback(cot_B), jac.T @ np.asarray(cot_B), rtol=1e-10)
    np.testing.assert_allclose(derivatives.weight_entropy(jnp.ones(8)), np.log(8.0), rtol=1e-12)
    np.testing.assert_allclose(derivatives.weight_entropy(jnp.array([1.0, 0.0])), 0.0, atol=0)
