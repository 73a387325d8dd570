"""Outer methods (ANOGRAD, SOBA, DDS, L2RW) on a convex bilevel problem, float64.

Weighted ridge regression with per-domain log-weights phi_K: w_i = exp(phi_{d_i}),
l_i(theta) = 0.5 (x_i^T theta - y_i)^2 + (lam / 2) ||theta||^2,
F(theta, phi) = sum_i w_i l_i / sum_i w_i, L_s = mean over the target set of
0.5 (x^T theta - y)^2. References use the explicit per-example gradient matrix G
(n x d), Hessians and closed forms, never the library's code paths.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_data.core import outer

from conftest import ridge_loss as loss_fn

LAM = 0.3
N, D, K, M = 12, 3, 3, 8


pytestmark = pytest.mark.usefixtures("x64")


def weight_fn(phi, batch):
    return jnp.exp(phi[batch["domain"]])


class Ridge:
    """The problem, its data and explicit references in numpy float64."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(N, D))
        self.y = rng.normal(size=N)
        self.domain = np.arange(N) % K
        self.xs = rng.normal(size=(M, D))
        self.ys = rng.normal(size=M)
        self.phi = rng.normal(scale=0.5, size=K)
        self.theta = rng.normal(size=D)
        # numpy float64 batches: converted under the tests' x64 context when used.
        self.generic = {
            "x": self.x,
            "y": self.y,
            "lam": np.full(N, LAM),
            "domain": self.domain,
        }
        self.target = {
            "x": self.xs,
            "y": self.ys,
            "lam": np.zeros(M),
            "domain": np.zeros(M, np.int32),
        }

    def weights(self, phi):
        return np.exp(phi[self.domain])

    def grads(self, theta):
        """G, the n x d matrix of per-example gradients."""
        return (self.x @ theta - self.y)[:, None] * self.x + LAM * theta[None, :]

    def target_grad(self, theta):
        return self.xs.T @ (self.xs @ theta - self.ys) / M

    def target_loss(self, theta):
        return 0.5 * np.mean((self.xs @ theta - self.ys) ** 2)

    def inner_hessian(self, phi):
        w = self.weights(phi)
        return self.x.T @ (w[:, None] * self.x) / w.sum() + LAM * np.eye(D)

    def theta_star(self, phi):
        w = self.weights(phi)
        rhs = self.x.T @ (w * self.y) / w.sum()
        return np.linalg.solve(self.inner_hessian(phi), rhs)

    def normalized_weight_jacobian(self, phi):
        """d wbar_i / d phi_k (n x K), wbar = w / sum w."""
        w = self.weights(phi)
        wbar = w / w.sum()
        one_hot = np.eye(K)[self.domain]
        return wbar[:, None] * (one_hot - (wbar @ one_hot)[None, :])

    def ift_hypergradient(self, phi):
        theta = self.theta_star(phi)
        cross = self.normalized_weight_jacobian(phi).T @ self.grads(theta)  # K x d
        return -cross @ np.linalg.solve(self.inner_hessian(phi), self.target_grad(theta))


@pytest.fixture(scope="module")
def ridge():
    return Ridge()


def _run(method, phi, theta, ridge, steps=1):
    update = jax.jit(method.update)
    phi = jnp.asarray(phi)
    theta = {"w": jnp.asarray(theta)}
    state = method.init(phi, theta)
    key = jax.random.key(0)
    for _ in range(steps):
        phi, state, metrics = update(phi, state, theta, ridge.generic, ridge.target, key)
    return phi, state, metrics


def _sgd_direction(make_method, ridge, phi, theta):
    """The gradient a method feeds phi_tx: with optax.sgd(1), it is phi - new_phi."""
    new_phi, _, metrics = _run(make_method(optax.sgd(1.0)), phi, theta, ridge)
    return np.asarray(phi) - np.asarray(new_phi), metrics


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
    new_phi, state, metrics = _run(method, phi, theta, ridge, steps=400)

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
    _, state, _ = _run(method, phi, theta, ridge, steps=300)
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
    # Through the interface with v_tx = sgd(1): v <- v - d_v, phi <- phi - d_phi.
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
    np.testing.assert_allclose(new_phi, phi - ref_phi, rtol=1e-10, atol=1e-12)


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

    direction, metrics = _sgd_direction(make, ridge, ridge.phi, ridge.theta)
    np.testing.assert_allclose(direction, expected, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(
        metrics["outer/objective"], explicit_objective(jnp.asarray(ridge.phi)), rtol=1e-10
    )
    np.testing.assert_allclose(metrics["outer/grad_norm"], np.linalg.norm(expected), rtol=1e-6)
    if normalization == "hessian":  # H_s is positive definite here: no fallback
        assert float(metrics["anograd/curvature"]) > 0
        assert float(metrics["anograd/curvature_fallback"]) == 0.0
    # Scale invariance: adding a constant to phi (w -> c w) leaves the direction unchanged.
    shifted, _ = _sgd_direction(make, ridge, ridge.phi + 2.0, ridge.theta)
    np.testing.assert_allclose(shifted, expected, rtol=1e-6, atol=1e-12)


def test_anograd_descent_improves_alignment(ridge):
    method = outer.anograd(loss_fn, weight_fn, optax.adam(0.05))
    _, _, first = _run(method, ridge.phi, ridge.theta, ridge, steps=1)
    _, _, last = _run(method, ridge.phi, ridge.theta, ridge, steps=40)
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


def _mlp_problem(seed=5):
    rng = np.random.default_rng(seed)

    def mlp_loss(theta, batch):
        hidden_BH = jnp.tanh(batch["x"] @ theta["w1"] + theta["b1"][None, :])
        return (hidden_BH @ theta["w2"] - batch["y"]) ** 2

    def mlp_weights(phi, batch):
        return jax.nn.softplus(jnp.tanh(batch["x"] @ phi["a"]) @ phi["c"])

    generic = {"x": rng.normal(size=(10, 3)), "y": rng.normal(size=10)}
    target = {"x": rng.normal(size=(6, 3)), "y": rng.normal(size=6)}
    theta = {"w1": rng.normal(size=(3, 4)), "b1": rng.normal(size=4), "w2": rng.normal(size=4)}
    phi = {"a": rng.normal(size=(3, 2)), "c": rng.normal(size=2)}
    theta, phi, generic, target = jax.tree.map(jnp.asarray, (theta, phi, generic, target))
    return mlp_loss, mlp_weights, generic, target, theta, phi


@pytest.mark.parametrize("normalization", ["norm", "hessian"])
def test_anograd_param_filter_matches_masked_explicit_objective(normalization):
    """Only the leaves b1 and w2 count: the reference zeroes the other leaf (w1) of the
    vmapped per-example gradients and of g_s, and takes H_s as a dense matrix."""
    mlp_loss, mlp_weights, generic, target, theta, phi = _mlp_problem()
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
    mlp_loss, mlp_weights, generic, target, theta, phi = _mlp_problem()
    with pytest.raises(ValueError, match="decoder/.*"):
        outer.anograd_gradient(
            mlp_loss, mlp_weights, phi, theta, generic, target, param_filter="decoder/.*"
        )
    method = outer.anograd(mlp_loss, mlp_weights, optax.sgd(1.0), param_filter="decoder/.*")
    with pytest.raises(ValueError, match="decoder/.*"):
        method.update(phi, method.init(phi), theta, generic, target, None)
    with pytest.raises(ValueError, match="param_filter"):
        outer.anograd(mlp_loss, mlp_weights, optax.sgd(1.0), param_filter="(unclosed")


def _dds_explicit_loss(ridge, phi, eta):
    w = ridge.weights(phi)
    theta_next = ridge.theta - eta * ridge.grads(ridge.theta).T @ (w / w.sum())
    return ridge.target_loss(theta_next)


def _dds_direction(ridge, **dds_kwargs):
    def make(tx):
        return outer.dds(loss_fn, weight_fn, tx, **dds_kwargs)

    return _sgd_direction(make, ridge, ridge.phi, ridge.theta)


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


@pytest.mark.parametrize("name", ["anograd", "anograd_hessian", "soba", "dds", "dds_limit"])
def test_interface_float32_finite_and_counts(ridge, name):
    makers = {
        "anograd": lambda: outer.anograd(loss_fn, weight_fn, optax.adam(1e-2)),
        "anograd_hessian": lambda: outer.anograd(
            loss_fn, weight_fn, optax.adam(1e-2), normalization="hessian"
        ),
        "soba": lambda: outer.soba(loss_fn, weight_fn, optax.adam(1e-2), optax.sgd(0.1)),
        "dds": lambda: outer.dds(loss_fn, weight_fn, optax.adam(1e-2), eta=0.1),
        "dds_limit": lambda: outer.dds(loss_fn, weight_fn, optax.adam(1e-2), eta=0.0),
    }
    with jax.enable_x64(False):
        method = makers[name]()
        to32 = lambda t: jax.tree.map(  # noqa: E731
            lambda a: jnp.asarray(a, jnp.int32 if a.dtype.kind == "i" else jnp.float32), t
        )
        phi = jnp.zeros(K, jnp.float32)
        theta = {"w": jnp.asarray(ridge.theta, jnp.float32)}
        generic, target = to32(ridge.generic), to32(ridge.target)
        state = method.init(phi, theta)
        update = jax.jit(method.update)
        for _ in range(3):
            phi, state, metrics = update(phi, state, theta, generic, target, jax.random.key(0))
        assert phi.dtype == jnp.float32 and phi.shape == (K,)
        assert int(state.count) == 3
        assert all(np.isfinite(float(v)) for v in metrics.values())
        assert all(k.count("/") >= 1 and jnp.ndim(v) == 0 for k, v in metrics.items())
        assert {"outer/objective", "outer/grad_norm", "outer/weight_entropy"} <= metrics.keys()
        assert jax.tree.structure(state) == jax.tree.structure(method.init(phi, theta))


def test_anograd_on_pytree_mlp_matches_vmapped_per_example_gradients():
    """Nonlinear model, several parameter leaves and a neural weight_fn: the
    matrix-free direction equals autodiff of the objective built from
    vmap(grad) per-example gradients."""
    rng = np.random.default_rng(5)

    def mlp_loss(theta, batch):
        hidden_BH = jnp.tanh(batch["x"] @ theta["w1"] + theta["b1"][None, :])
        return (hidden_BH @ theta["w2"] - batch["y"]) ** 2

    def mlp_weights(phi, batch):
        return jax.nn.softplus(jnp.tanh(batch["x"] @ phi["a"]) @ phi["c"])

    generic = {"x": rng.normal(size=(10, 3)), "y": rng.normal(size=10)}
    target = {"x": rng.normal(size=(6, 3)), "y": rng.normal(size=6)}
    theta = {"w1": rng.normal(size=(3, 4)), "b1": rng.normal(size=4), "w2": rng.normal(size=4)}
    phi = {"a": rng.normal(size=(3, 2)), "c": rng.normal(size=2)}
    theta, phi = jax.tree.map(jnp.asarray, (theta, phi))

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
