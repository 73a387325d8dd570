"""The convex bilevel problem the outer-method tests share (tests/test_outer_*.py).

Weighted ridge regression with per-domain log-weights phi_K: w_i = exp(phi_{d_i}),
l_i(theta) = 0.5 (x_i^T theta - y_i)^2 + (lam / 2) ||theta||^2,
F(theta, phi) = sum_i w_i l_i / sum_i w_i, L_s = mean over the target set of
0.5 (x^T theta - y)^2. References use the explicit per-example gradient matrix G
(n x d), Hessians and closed forms, never the library's code paths. Plus a small
nonlinear problem (an MLP with a neural weighting model) and the checks every outer
method's ``init``/``update`` interface must pass in float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import ridge_loss

LAM = 0.3
N, D, K, M = 12, 3, 3, 8

loss_fn = ridge_loss  # l_i(theta) above (batch["lam"] = LAM generic, 0 target): float[B]


def weight_fn(phi, batch):
    """w_i = exp(phi_{d_i}): float[B]."""
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


def run_method(method, phi, theta, ridge, steps=1):
    """``steps`` jitted updates of ``method`` from ``init(phi, theta)``: (phi, state, metrics)."""
    update = jax.jit(method.update)
    phi = jnp.asarray(phi)
    theta = {"w": jnp.asarray(theta)}
    state = method.init(phi, theta)
    key = jax.random.key(0)
    for _ in range(steps):
        phi, state, metrics = update(phi, state, theta, ridge.generic, ridge.target, key)
    return phi, state, metrics


def sgd_direction(make_method, ridge, phi, theta):
    """The gradient a method feeds phi_tx: with optax.sgd(1), it is phi - new_phi."""
    new_phi, _, metrics = run_method(make_method(optax.sgd(1.0)), phi, theta, ridge)
    return np.asarray(phi) - np.asarray(new_phi), metrics


def mlp_problem(seed=5):
    """(loss, weight_fn, generic, target, theta, phi) of a tanh MLP with a neural
    weighting model: several parameter leaves, nothing linear."""
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


def check_float32_interface(make_method, ridge):
    """Builds ``make_method()`` and runs three jitted float32 updates from phi = 0: phi
    keeps its dtype and shape, the count is 3, every metric is a finite scalar named
    ``<group>/<name>``, the common ones are there, and the state keeps its structure."""
    with jax.enable_x64(False):
        method = make_method()
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
