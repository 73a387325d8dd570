"""L2RW (core/outer/l2rw.py), float64: its example weights against the explicit formula
max(eta <g_i, g_s>, 0) / sum, on the ridge problem of bilevel_ridge.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_data.core import outer

from bilevel_ridge import loss_fn

pytestmark = pytest.mark.usefixtures("x64")


def test_l2rw_weights_match_explicit_formula(ridge):
    eta = 0.2
    theta_np = ridge.theta_star(ridge.phi)  # some alignments are negative there
    theta = {"w": jnp.asarray(theta_np)}
    got = jax.jit(outer.l2rw(loss_fn, eta=eta))(theta, ridge.generic, ridge.target)
    u = np.maximum(eta * ridge.grads(theta_np) @ ridge.target_grad(theta_np), 0.0)
    assert u.sum() > 0 and (u == 0).any()
    np.testing.assert_allclose(got, u / u.sum(), rtol=1e-10)
    direct = outer.l2rw_weights(loss_fn, theta, ridge.generic, ridge.target, eta=eta)
    np.testing.assert_allclose(direct, got, rtol=1e-12)


def test_l2rw_uniform_when_no_example_helps():
    # 1-d: every generic gradient points against the target gradient at theta = 0.
    generic = {"x": jnp.ones((5, 1)), "y": jnp.ones(5), "lam": jnp.zeros(5)}
    target = {"x": jnp.ones((3, 1)), "y": -jnp.ones(3), "lam": jnp.zeros(3)}
    got = outer.l2rw_weights(loss_fn, {"w": jnp.zeros(1)}, generic, target, eta=0.1)
    np.testing.assert_allclose(got, np.full(5, 0.2), rtol=1e-12)
