"""SOBA (core/outer/soba.py) on the convex ridge problem of bilevel_ridge.py, float64:
its v converges to -H^{-1} g_s and its phi direction is the IFT hypergradient; the
directions of every Hessian option against a naive dense reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_data.core import outer

from bilevel_ridge import D, K, N, check_float32_interface, loss_fn, run_method, weight_fn

pytestmark = pytest.mark.usefixtures("x64")


def test_ift_reference_matches_finite_differences(ridge):
    def outer_loss(phi):
        return ridge.target_loss(ridge.theta_star(phi))

    h = 1e-5
    fd = [
        (outer_loss(ridge.phi + h * e) - outer_loss(ridge.phi - h * e)) / (2 * h) for e in np.eye(K)
    ]
    np.testing.assert_allclose(ridge.ift_hypergradient(ridge.phi), fd, rtol=1e-6, atol=1e-10)


def test_soba_v_converges_and_phi_direction_is_ift_hypergradient(ridge):
    phi = ridge.phi
    theta = ridge.theta_star(phi)
    hessian = ridge.inner_hessian(phi)
    rho = 1.0 / np.linalg.eigvalsh(hessian).max()
    # The w-weighted Hessian (ridge.inner_hessian), whose fixed point is the IFT one.
    weighted = {"hessian_weights": "weighted"}
    method = outer.soba(loss_fn, weight_fn, optax.sgd(0.0), optax.sgd(rho), **weighted)
    new_phi, state, metrics = run_method(method, phi, theta, ridge, steps=400)

    np.testing.assert_array_equal(new_phi, phi)  # phi learning rate 0
    assert int(state.count) == 400
    v_star = -np.linalg.solve(hessian, ridge.target_grad(theta))
    np.testing.assert_allclose(state.v["w"], v_star, rtol=1e-8)
    assert float(metrics["soba/v_direction_norm"]) < 1e-8

    # The phi direction at the converged v, through the interface (sgd(1) on phi).
    probe = outer.soba(loss_fn, weight_fn, optax.sgd(1.0), optax.sgd(rho), **weighted)
    probe_state = probe.init(jnp.asarray(phi), {"w": jnp.asarray(theta)})._replace(v=state.v)
    phi_after, _, _ = jax.jit(probe.update)(
        jnp.asarray(phi),
        probe_state,
        {"w": jnp.asarray(theta)},
        ridge.generic,
        ridge.target,
        jax.random.key(1),
    )
    ift = ridge.ift_hypergradient(phi)
    np.testing.assert_allclose(phi - np.asarray(phi_after), ift, rtol=1e-4, atol=1e-10)

    # The pure function agrees, and v_tx = sgd(rho) is v - rho (H v + grad L_s).
    v0 = {"w": jnp.asarray(np.arange(1.0, D + 1))}
    d_v, d_phi, _ = outer.soba_directions(
        loss_fn,
        weight_fn,
        jnp.asarray(phi),
        state.v,
        {"w": jnp.asarray(theta)},
        ridge.generic,
        ridge.target,
        **weighted,
    )
    np.testing.assert_allclose(d_phi, ift, rtol=1e-4)
    d_v, _, _ = outer.soba_directions(
        loss_fn,
        weight_fn,
        jnp.asarray(phi),
        v0,
        {"w": jnp.asarray(theta)},
        ridge.generic,
        ridge.target,
        **weighted,
    )
    expected = hessian @ np.asarray(v0["w"]) + ridge.target_grad(theta)
    np.testing.assert_allclose(d_v["w"], expected, rtol=1e-10)


@pytest.mark.parametrize("hessian_free,hessian_reg", [(True, 0.0), (False, 0.5)])
def test_soba_hessian_free_and_regularised_fixed_points(ridge, hessian_free, hessian_reg):
    phi = ridge.phi
    theta = ridge.theta_star(phi)
    hessian = ridge.inner_hessian(phi)
    curvature = np.eye(D) if hessian_free else (1 - hessian_reg) * hessian + hessian_reg * np.eye(D)
    rho = 1.0 / np.linalg.eigvalsh(curvature).max()
    method = outer.soba(
        loss_fn,
        weight_fn,
        optax.sgd(0.0),
        optax.sgd(rho),
        hessian_free=hessian_free,
        hessian_reg=hessian_reg,
        hessian_weights="weighted",
        hessian_free_curvature="identity",
    )
    _, state, _ = run_method(method, phi, theta, ridge, steps=300)
    v_star = -np.linalg.solve(curvature, ridge.target_grad(theta))
    np.testing.assert_allclose(state.v["w"], v_star, rtol=1e-8)


def _soba_naive_reference(ridge, phi, theta, v, *, hessian, reg=0.0):
    """(d_v, d_phi) from explicit per-example gradients (vmap of grad), a dense Hessian
    (jax.hessian) and the Jacobian of the normalised weights, in float64.

    hessian: "uniform" (H of the mean generic loss), "weighted" (H of sum wbar_i l_i),
    "zero" or "identity" (the hessian-free replacements of H).
    """
    generic = jax.tree.map(jnp.asarray, ridge.generic)
    target = jax.tree.map(jnp.asarray, ridge.target)

    def one_loss(w, example):
        return loss_fn({"w": w}, jax.tree.map(lambda a: a[None], example))[0]

    grads_nd = jax.vmap(jax.grad(one_loss), in_axes=(None, 0))(theta, generic)
    g_s = jax.grad(lambda w: jnp.mean(loss_fn({"w": w}, target)))(theta)

    def wbar(p):
        w = jnp.exp(p[generic["domain"]])
        return w / jnp.sum(w)

    if hessian in ("uniform", "weighted"):
        weights = jnp.full(N, 1.0 / N) if hessian == "uniform" else wbar(phi)
        h = jax.hessian(lambda w: weights @ loss_fn({"w": w}, generic))(theta)
        curvature = (1 - reg) * h + reg * jnp.eye(D)
    else:
        curvature = jnp.zeros((D, D)) if hessian == "zero" else jnp.eye(D)
    d_v = curvature @ v + g_s
    d_phi = jax.jacobian(wbar)(phi).T @ (grads_nd @ v)  # sum_i dwbar_i/dphi <g_i, v>
    return np.asarray(d_v), np.asarray(d_phi)


@pytest.mark.parametrize(
    "hessian_weights,hessian_reg",
    [
        ("uniform", 0.0),
        ("weighted", 0.0),
        ("uniform", 0.3),
        ("weighted", 0.3),
    ],
)
def test_soba_directions_match_naive_reference(ridge, hessian_weights, hessian_reg):
    phi, theta = jnp.asarray(ridge.phi), jnp.asarray(ridge.theta)
    v = jnp.asarray(np.random.default_rng(7).normal(size=D))
    d_v, d_phi, metrics = outer.soba_directions(
        loss_fn,
        weight_fn,
        phi,
        {"w": v},
        {"w": theta},
        ridge.generic,
        ridge.target,
        hessian_weights=hessian_weights,
        hessian_reg=hessian_reg,
    )
    ref_v, ref_phi = _soba_naive_reference(
        ridge, phi, theta, v, hessian=hessian_weights, reg=hessian_reg
    )
    np.testing.assert_allclose(d_v["w"], ref_v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d_phi, ref_phi, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(metrics["soba/v_direction_norm"], np.linalg.norm(ref_v), rtol=1e-10)
    # The two Hessians differ on this problem, so each option is really told apart.
    other = "weighted" if hessian_weights == "uniform" else "uniform"
    other_v, _ = _soba_naive_reference(ridge, phi, theta, v, hessian=other, reg=hessian_reg)
    assert np.linalg.norm(other_v - ref_v) > 1e-3 * np.linalg.norm(ref_v)
    # Through the interface with v_tx = sgd(1): v moves first, v' = v - d_v, then
    # phi <- phi - d_phi taken at v' (the authors' order).
    method = outer.soba(
        loss_fn,
        weight_fn,
        optax.sgd(1.0),
        optax.sgd(1.0),
        hessian_weights=hessian_weights,
        hessian_reg=hessian_reg,
    )
    state = method.init(phi, {"w": theta})._replace(v={"w": v})
    new_phi, new_state, _ = jax.jit(method.update)(
        phi, state, {"w": theta}, ridge.generic, ridge.target, None
    )
    np.testing.assert_allclose(new_state.v["w"], v - ref_v, rtol=1e-10, atol=1e-12)
    _, ref_phi_at_new_v = _soba_naive_reference(
        ridge, phi, theta, v - ref_v, hessian=hessian_weights, reg=hessian_reg
    )
    assert np.linalg.norm(ref_phi_at_new_v - ref_phi) > 1e-3 * np.linalg.norm(ref_phi)
    np.testing.assert_allclose(new_phi, phi - ref_phi_at_new_v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("curvature", ["zero", "identity"])
def test_soba_hessian_free_directions_match_naive_reference(ridge, curvature):
    phi, theta = jnp.asarray(ridge.phi), jnp.asarray(ridge.theta)
    v = jnp.asarray(np.random.default_rng(8).normal(size=D))
    d_v, d_phi, _ = outer.soba_directions(
        loss_fn,
        weight_fn,
        phi,
        {"w": v},
        {"w": theta},
        ridge.generic,
        ridge.target,
        hessian_free=True,
        hessian_free_curvature=curvature,
    )
    ref_v, ref_phi = _soba_naive_reference(ridge, phi, theta, v, hessian=curvature)
    np.testing.assert_allclose(d_v["w"], ref_v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d_phi, ref_phi, rtol=1e-10, atol=1e-12)
    if curvature == "zero":  # the authors' direction: the target gradient alone
        np.testing.assert_allclose(d_v["w"], ridge.target_grad(ridge.theta), rtol=1e-10)


def test_soba_rejects_bad_options(ridge):
    tx = optax.sgd(0.1)
    for kwargs, name in (
        ({"hessian_weights": "mean"}, "hessian_weights"),
        ({"hessian_free_curvature": "one"}, "hessian_free_curvature"),
        ({"hessian_reg": 1.5}, "hessian_reg"),
    ):
        with pytest.raises(ValueError, match=name):
            outer.soba(loss_fn, weight_fn, tx, tx, **kwargs)
        with pytest.raises(ValueError, match=name):
            outer.soba_directions(
                loss_fn,
                weight_fn,
                jnp.zeros(K),
                {"w": jnp.zeros(D)},
                {"w": jnp.zeros(D)},
                ridge.generic,
                ridge.target,
                **kwargs,
            )


def test_soba_init_needs_theta(ridge):
    method = outer.soba(loss_fn, weight_fn, optax.sgd(0.1), optax.sgd(0.1))
    with pytest.raises(ValueError, match="theta"):
        method.init(jnp.zeros(K))


def test_soba_interface_in_float32(ridge):
    check_float32_interface(
        lambda: outer.soba(loss_fn, weight_fn, optax.adam(1e-2), optax.sgd(0.1)), ridge
    )
