"""DDS (core/outer/dds.py) on the ridge problem of bilevel_ridge.py, float64: its phi
direction against central finite differences of the explicit one-step lookahead loss,
and its first-order limit eta -> 0."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_data.core import outer

from bilevel_ridge import K, check_float32_interface, loss_fn, sgd_direction, weight_fn

pytestmark = pytest.mark.usefixtures("x64")


def _dds_explicit_loss(ridge, phi, eta):
    w = ridge.weights(phi)
    theta_next = ridge.theta - eta * ridge.grads(ridge.theta).T @ (w / w.sum())
    return ridge.target_loss(theta_next)


def _dds_direction(ridge, **dds_kwargs):
    def make(tx):
        return outer.dds(loss_fn, weight_fn, tx, **dds_kwargs)

    return sgd_direction(make, ridge, ridge.phi, ridge.theta)


def test_dds_gradient_matches_finite_differences(ridge):
    eta = 0.1
    h = 1e-5
    fd = np.array(
        [
            (
                _dds_explicit_loss(ridge, ridge.phi + h * e, eta)
                - _dds_explicit_loss(ridge, ridge.phi - h * e, eta)
            )
            / (2 * h)
            for e in np.eye(K)
        ]
    )
    direction, metrics = _dds_direction(ridge, eta=eta)
    np.testing.assert_allclose(direction, fd, rtol=1e-4)
    np.testing.assert_allclose(
        metrics["outer/objective"], _dds_explicit_loss(ridge, ridge.phi, eta), rtol=1e-12
    )


def test_dds_first_order_limit(ridge):
    grads_nd = jnp.asarray(ridge.grads(ridge.theta))
    g_s = jnp.asarray(ridge.target_grad(ridge.theta))
    domain = jnp.asarray(ridge.domain)

    def minus_alignment(phi):
        w = jnp.exp(phi[domain])
        return -(grads_nd.T @ (w / jnp.sum(w))) @ g_s

    limit = np.asarray(jax.grad(minus_alignment)(jnp.asarray(ridge.phi)))
    for kwargs in ({"eta": 0.0}, {"eta": 0.5, "first_order": True}):
        direction, metrics = _dds_direction(ridge, **kwargs)
        assert all(np.isfinite(float(v)) for v in metrics.values())
        np.testing.assert_allclose(direction, limit, rtol=1e-10)
        np.testing.assert_allclose(
            metrics["outer/objective"], ridge.target_loss(ridge.theta), rtol=1e-12
        )
    previous_error = np.inf
    for eta in (1e-2, 1e-3, 1e-4):
        direction, _ = _dds_direction(ridge, eta=eta)
        error = np.linalg.norm(direction / eta - limit)
        assert error < previous_error
        previous_error = error
    assert previous_error < 1e-3 * np.linalg.norm(limit)


@pytest.mark.parametrize("eta", [0.1, 0.0])
def test_dds_interface_in_float32(ridge, eta):
    check_float32_interface(lambda: outer.dds(loss_fn, weight_fn, optax.adam(1e-2), eta=eta), ridge)
