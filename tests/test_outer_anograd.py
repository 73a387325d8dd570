"""ANOGRAD (core/outer/anograd.py), float64: its phi direction against autodiff of the
explicit alignment objective built from per-example gradients (ridge problem of
bilevel_ridge.py, and a nonlinear MLP), both normalisations, the negative-curvature
fallback and the parameter filter."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_data.core import outer

from bilevel_ridge import (
    K,
    M,
    N,
    check_float32_interface,
    loss_fn,
    mlp_problem,
    run_method,
    sgd_direction,
    weight_fn,
)

pytestmark = pytest.mark.usefixtures("x64")


@pytest.mark.parametrize("normalization", ["norm", "hessian"])
def test_anograd_direction_matches_explicit_gradient(ridge, normalization):
    eps = 1e-8
    grads_nd = jnp.asarray(ridge.grads(ridge.theta))
    g_s = jnp.asarray(ridge.target_grad(ridge.theta))
    hessian_s = jnp.asarray(ridge.xs.T @ ridge.xs / M)
    domain = jnp.asarray(ridge.domain)

    def explicit_objective(phi):
        g_w = grads_nd.T @ jnp.exp(phi[domain])
        if normalization == "norm":
            denom = jnp.sqrt(g_w @ g_w) + eps
        else:
            denom = jnp.sqrt(g_w @ hessian_s @ g_w + eps)
        return -(g_w @ g_s) / denom

    expected = np.asarray(jax.grad(explicit_objective)(jnp.asarray(ridge.phi)))

    def make(tx):
        return outer.anograd(loss_fn, weight_fn, tx, normalization=normalization, eps=eps)

    direction, metrics = sgd_direction(make, ridge, ridge.phi, ridge.theta)
    np.testing.assert_allclose(direction, expected, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(
        metrics["outer/objective"], explicit_objective(jnp.asarray(ridge.phi)), rtol=1e-10
    )
    np.testing.assert_allclose(metrics["outer/grad_norm"], np.linalg.norm(expected), rtol=1e-6)
    if normalization == "hessian":  # H_s is positive definite here: no fallback
        assert float(metrics["anograd/curvature"]) > 0
        assert float(metrics["anograd/curvature_fallback"]) == 0.0
    # Scale invariance: adding a constant to phi (w -> c w) leaves the direction unchanged.
    shifted, _ = sgd_direction(make, ridge, ridge.phi + 2.0, ridge.theta)
    np.testing.assert_allclose(shifted, expected, rtol=1e-6, atol=1e-12)


def test_anograd_descent_improves_alignment(ridge):
    method = outer.anograd(loss_fn, weight_fn, optax.adam(0.05))
    _, _, first = run_method(method, ridge.phi, ridge.theta, ridge, steps=1)
    _, _, last = run_method(method, ridge.phi, ridge.theta, ridge, steps=40)
    assert float(last["outer/objective"]) < float(first["outer/objective"])
    assert float(last["outer/cosine"]) > float(first["outer/cosine"])


def _signed_loss(theta, batch):
    """0.5 sign_i (x_i^T w - y_i)^2: sign -1 makes a loss concave in w."""
    return 0.5 * batch["sign"] * (batch["x"] @ theta["w"] - batch["y"]) ** 2


def test_anograd_hessian_falls_back_to_norm_on_negative_curvature(ridge):
    """A concave target loss (H_s = -X_s^T X_s / M, negative definite): the curvature
    along g_w is negative, and the update is the "norm" one, checked against central
    finite differences of the explicit norm objective."""
    eps = 1e-8
    generic = {"x": ridge.x, "y": ridge.y, "sign": np.ones(N), "domain": ridge.domain}
    target = {"x": ridge.xs, "y": ridge.ys, "sign": -np.ones(M)}
    theta = ridge.theta

    def norm_objective(phi):
        g_w = ((ridge.x @ theta - ridge.y)[:, None] * ridge.x).T @ ridge.weights(phi)
        g_s = -ridge.xs.T @ (ridge.xs @ theta - ridge.ys) / M
        return -(g_w @ g_s) / (np.linalg.norm(g_w) + eps)

    h = 1e-6
    fd = np.array(
        [
            (norm_objective(ridge.phi + h * e) - norm_objective(ridge.phi - h * e)) / (2 * h)
            for e in np.eye(K)
        ]
    )
    method = outer.anograd(
        _signed_loss, weight_fn, optax.sgd(1.0), normalization="hessian", eps=eps
    )
    phi = jnp.asarray(ridge.phi)
    new_phi, _, metrics = jax.jit(method.update)(
        phi, method.init(phi), {"w": jnp.asarray(theta)}, generic, target, None
    )
    assert float(metrics["anograd/curvature"]) < 0
    assert float(metrics["anograd/curvature_fallback"]) == 1.0
    np.testing.assert_allclose(phi - new_phi, fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(metrics["outer/objective"], norm_objective(ridge.phi), rtol=1e-12)


@pytest.mark.parametrize("normalization", ["norm", "hessian"])
def test_anograd_param_filter_matches_masked_explicit_objective(normalization):
    """Only the leaves b1 and w2 count: the reference zeroes the other leaf (w1) of the
    vmapped per-example gradients and of g_s, and takes H_s as a dense matrix."""
    mlp_loss, mlp_weights, generic, target, theta, phi = mlp_problem()
    eps = 1e-8
    keep = {"w1": 0.0, "b1": 1.0, "w2": 1.0}

    def one_loss(p, example):
        return mlp_loss(p, jax.tree.map(lambda a: a[None], example))[0]

    def target_loss(p):
        return jnp.mean(mlp_loss(p, target))

    per_example = jax.vmap(jax.grad(one_loss), in_axes=(None, 0))(theta, generic)
    flat_theta, unravel = jax.flatten_util.ravel_pytree(theta)
    mask = jax.flatten_util.ravel_pytree({k: keep[k] * jnp.ones_like(x) for k, x in theta.items()})[
        0
    ]
    grads_nd = jax.vmap(lambda g: jax.flatten_util.ravel_pytree(g)[0] * mask)(per_example)
    g_s = jax.flatten_util.ravel_pytree(jax.grad(target_loss)(theta))[0] * mask
    hessian_s = jax.hessian(lambda f: target_loss(unravel(f)))(flat_theta)

    def explicit_objective(p):
        g_w = grads_nd.T @ mlp_weights(p, generic)
        if normalization == "norm":
            return -(g_w @ g_s) / (jnp.sqrt(g_w @ g_w) + eps)
        return -(g_w @ g_s) / jnp.sqrt(g_w @ hessian_s @ g_w + eps)

    expected = jax.grad(explicit_objective)(phi)
    for fn in (
        lambda p: outer.anograd_gradient(
            mlp_loss,
            mlp_weights,
            p,
            theta,
            generic,
            target,
            normalization=normalization,
            param_filter="b1|w2",
        ),
        lambda p: _phi_step(
            outer.anograd(
                mlp_loss,
                mlp_weights,
                optax.sgd(1.0),
                normalization=normalization,
                param_filter="b1|w2",
            ),
            p,
            theta,
            generic,
            target,
        ),
    ):
        got, metrics = jax.jit(fn)(phi)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12), got, expected
        )
        np.testing.assert_allclose(metrics["outer/objective"], explicit_objective(phi), rtol=1e-10)
        if normalization == "hessian":  # the reference has no fallback: check it is unused
            assert float(metrics["anograd/curvature_fallback"]) == 0.0
    # The filter changes the answer (the test would not see a filter that did nothing).
    unfiltered, _ = outer.anograd_gradient(
        mlp_loss, mlp_weights, phi, theta, generic, target, normalization=normalization
    )
    assert optax.tree.norm(optax.tree.sub(unfiltered, expected)) > 1e-3 * optax.tree.norm(expected)


def _phi_step(method, phi, theta, generic, target):
    """(phi - new_phi, metrics) of one update with phi_tx = sgd(1): the fed gradient."""
    new_phi, _, metrics = method.update(phi, method.init(phi), theta, generic, target, None)
    return optax.tree.sub(phi, new_phi), metrics


def test_anograd_param_filter_matching_nothing_raises():
    mlp_loss, mlp_weights, generic, target, theta, phi = mlp_problem()
    with pytest.raises(ValueError, match="decoder/.*"):
        outer.anograd_gradient(
            mlp_loss, mlp_weights, phi, theta, generic, target, param_filter="decoder/.*"
        )
    method = outer.anograd(mlp_loss, mlp_weights, optax.sgd(1.0), param_filter="decoder/.*")
    with pytest.raises(ValueError, match="decoder/.*"):
        method.update(phi, method.init(phi), theta, generic, target, None)
    with pytest.raises(ValueError, match="param_filter"):
        outer.anograd(mlp_loss, mlp_weights, optax.sgd(1.0), param_filter="(unclosed")


def test_anograd_on_pytree_mlp_matches_vmapped_per_example_gradients():
    """Nonlinear model, several parameter leaves and a neural weight_fn: the
    matrix-free direction equals autodiff of the objective built from
    vmap(grad) per-example gradients."""
    mlp_loss, mlp_weights, generic, target, theta, phi = mlp_problem()

    def one_loss(p, example):
        return mlp_loss(p, jax.tree.map(lambda a: a[None], example))[0]

    per_example = jax.vmap(jax.grad(one_loss), in_axes=(None, 0))(theta, generic)
    g_s = jax.grad(lambda p: jnp.mean(mlp_loss(p, target)))(theta)

    def explicit_objective(p):
        w_B = mlp_weights(p, generic)
        g_w = jax.tree.map(lambda g_B: jnp.tensordot(w_B, g_B, axes=1), per_example)
        return -optax.tree.vdot(g_w, g_s) / (optax.tree.norm(g_w) + 1e-8)

    expected = jax.grad(explicit_objective)(phi)
    got, _ = jax.jit(
        lambda p: outer.anograd_gradient(mlp_loss, mlp_weights, p, theta, generic, target)
    )(phi)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12), got, expected
    )


@pytest.mark.parametrize("normalization", ["norm", "hessian"])
def test_anograd_interface_in_float32(ridge, normalization):
    check_float32_interface(
        lambda: outer.anograd(loss_fn, weight_fn, optax.adam(1e-2), normalization=normalization),
        ridge,
    )
