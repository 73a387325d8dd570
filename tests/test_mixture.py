"""Domain mixture weights (core/mixture.py): simplex, floor, alignments, resampling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_data.core import mixture, outer

pytestmark = pytest.mark.usefixtures("x64")


def loss_fn(theta, batch):
    residual_B = batch["x"] @ theta["w"] - batch["y"]
    return 0.5 * residual_B**2


def _toy(seed=0, per_domain=8, d=3):
    """Domain 0 shares the target's regression vector, domain 1 has its opposite,
    domain 2 an unrelated one; theta = 0, so grad L_0 aligns with g_s."""
    rng = np.random.default_rng(seed)
    beta = np.array([1.0, -2.0, 0.5])
    betas = [beta, -beta, np.array([2.0, 1.0, 0.0])]
    xs, ys, ds = [], [], []
    for k, b in enumerate(betas):
        x = rng.normal(size=(per_domain, d))
        xs.append(x)
        ys.append(x @ b + 0.1 * rng.normal(size=per_domain))
        ds.append(np.full(per_domain, k))
    generic = {"x": np.concatenate(xs), "y": np.concatenate(ys), "domain": np.concatenate(ds)}
    xt = rng.normal(size=(10, d))
    target = {"x": xt, "y": xt @ beta, "domain": np.zeros(10, np.int64)}
    return generic, target, {"w": np.zeros(d)}


def test_domain_alignment_matches_explicit_per_domain_gradients():
    rng = np.random.default_rng(3)
    n, d, num_domains = 9, 4, 4
    x, y = rng.normal(size=(n, d)), rng.normal(size=n)
    domain = np.array([0, 2, 1, 0, 2, 2, 1, 0, 0])  # domain 3 absent
    theta = rng.normal(size=d)
    g_s = rng.normal(size=d)
    got, count = mixture.domain_alignment(
        loss_fn,
        {"w": jnp.asarray(theta)},
        {"x": x, "y": y},
        jnp.asarray(domain),
        num_domains,
        {"w": jnp.asarray(g_s)},
    )
    grads = (x @ theta - y)[:, None] * x
    for k in range(num_domains):
        rows = domain == k
        expected = grads[rows].mean(axis=0) @ g_s if rows.any() else 0.0
        np.testing.assert_allclose(got[k], expected, rtol=1e-10, atol=1e-14)
        assert count[k] == rows.sum()


def test_exponentiated_gradient_stays_on_simplex_with_floor():
    rng = np.random.default_rng(0)
    num_domains, smoothing = 5, 0.05
    update = jax.jit(
        lambda a, g, p: mixture.exponentiated_gradient_update(
            a, g, p, step_size=3.0, smoothing=smoothing
        )
    )
    alpha = jnp.full(num_domains, 1.0 / num_domains)
    for _ in range(300):
        alignment = jnp.asarray(rng.normal(scale=5.0, size=num_domains))
        present = jnp.asarray(rng.uniform(size=num_domains) < 0.8)
        alpha = update(alpha, alignment, present)
        np.testing.assert_allclose(jnp.sum(alpha), 1.0, rtol=1e-12)
        assert float(jnp.min(alpha)) >= smoothing / num_domains * (1 - 1e-12)
    # A huge alignment on domain 2 puts everything on it, except the floor.
    alpha = update(alpha, jnp.array([0.0, 0.0, 1e4, 0.0, 0.0]), jnp.ones(num_domains, bool))
    expected = np.full(num_domains, smoothing / num_domains)
    expected[2] += 1 - smoothing
    np.testing.assert_allclose(alpha, expected, rtol=1e-10)


def test_exponentiated_gradient_matches_formula_and_ignores_absent_domains():
    alpha = jnp.array([0.2, 0.3, 0.5])
    alignment = jnp.array([1.0, -0.5, 100.0])
    present = jnp.array([True, True, False])
    got = mixture.exponentiated_gradient_update(
        alpha, alignment, present, step_size=0.7, smoothing=0.1
    )
    raw = np.array([0.2, 0.3, 0.5]) * np.exp(0.7 * np.array([1.0, -0.5, 0.0]))
    np.testing.assert_allclose(got, 0.9 * raw / raw.sum() + 0.1 / 3, rtol=1e-12)


def test_resampling_logits_give_mixture_ratios():
    alpha = jnp.array([0.6, 0.3, 0.1])
    pool_share = jnp.array([0.25, 0.5, 0.25])
    domain = jnp.array([0, 1, 1, 2])  # exactly the pool shares
    logits = mixture.mixture_resampling_logits(alpha, pool_share, domain)
    np.testing.assert_allclose(jnp.exp(logits), np.array([2.4, 0.6, 0.6, 0.4]), rtol=1e-12)
    prob = jax.nn.softmax(logits)
    per_domain = jax.ops.segment_sum(prob, domain, 3)
    np.testing.assert_allclose(per_domain, alpha, rtol=1e-12)


def test_mixture_weight_fn_gives_mixture_gradient():
    generic, _, _ = _toy()
    generic = {**generic, "domain": np.where(np.arange(24) < 3, 0, generic["domain"])}
    logits = jnp.array([0.3, -0.2, 0.9])
    weight_fn = mixture.mixture_weight_fn(3, smoothing=0.1)
    w = weight_fn(logits, generic)
    alpha = mixture.mixture_alpha(logits, smoothing=0.1)
    np.testing.assert_allclose(alpha, 0.9 * jax.nn.softmax(logits) + 0.1 / 3, rtol=1e-12)
    theta = {"w": jnp.array([0.5, 0.1, -0.3])}
    losses = loss_fn(theta, generic)
    domain = generic["domain"]
    per_domain_mean = np.array([np.mean(losses[domain == k]) for k in range(3)])
    np.testing.assert_allclose(jnp.vdot(w, losses), alpha @ per_domain_mean, rtol=1e-12)


@pytest.mark.parametrize("kind", ["eg", "anograd", "dds", "dds_limit"])
def test_mixture_moves_toward_aligned_domain(kind):
    generic, target, theta = _toy()
    num_domains = 3
    smoothing = 0.01
    methods = {
        "eg": lambda: mixture.mixture(
            loss_fn, num_domains, update="eg", step_size=0.05, smoothing=smoothing
        ),
        "anograd": lambda: mixture.mixture(
            loss_fn,
            num_domains,
            update="hypergradient",
            phi_tx=optax.adam(0.1),
            smoothing=smoothing,
        ),
        "dds": lambda: mixture.mixture(
            loss_fn,
            num_domains,
            update="hypergradient",
            objective="dds",
            eta=0.05,
            phi_tx=optax.adam(0.1),
            smoothing=smoothing,
        ),
        "dds_limit": lambda: mixture.mixture(
            loss_fn,
            num_domains,
            update="hypergradient",
            objective="dds",
            eta=0.0,
            phi_tx=optax.adam(0.1),
            smoothing=smoothing,
        ),
    }
    method = methods[kind]()
    phi = jnp.zeros(num_domains)
    state = method.init(phi, theta)
    np.testing.assert_allclose(state.alpha_K, np.full(3, 1 / 3), rtol=1e-12)
    update = jax.jit(method.update)
    key = jax.random.key(0)
    for _ in range(30):
        phi, state, metrics = update(phi, state, theta, generic, target, key)
        np.testing.assert_allclose(jnp.sum(state.alpha_K), 1.0, rtol=1e-12)
        assert float(jnp.min(state.alpha_K)) >= smoothing / num_domains * (1 - 1e-9)
    alpha = np.asarray(state.alpha_K)
    assert alpha[0] > 0.8, alpha
    assert alpha[1] < alpha[2] or alpha[1] < 0.05, alpha
    assert int(state.count) == 30
    softmax = np.exp(phi - np.max(phi)) / np.sum(np.exp(phi - np.max(phi)))
    np.testing.assert_allclose(alpha, (1 - smoothing) * softmax + smoothing / 3, rtol=1e-6)
    for k in range(num_domains):
        np.testing.assert_allclose(metrics[f"mixture/alpha/{k}"], alpha[k])
    assert all(np.isfinite(float(v)) for v in metrics.values())


def _hypergradient_step(method, logits, theta, generic, target):
    """The gradient fed to phi_tx = sgd(1): logits - new logits."""
    new_logits, _, metrics = jax.jit(method.update)(
        logits, method.init(logits, theta), theta, generic, target, jax.random.key(0)
    )
    return np.asarray(logits - new_logits), metrics


def _explicit_mixture_weights(logits, domain, smoothing, num_domains=3):
    """w_i = alpha_{d_i} / n_{d_i}, written out."""
    alpha = (1 - smoothing) * jax.nn.softmax(logits) + smoothing / num_domains
    counts = jnp.array([jnp.sum(domain == k) for k in range(num_domains)], logits.dtype)
    return alpha[domain] / counts[domain]


def test_mixture_hypergradient_honours_anograd_normalization():
    generic, target, _ = _toy()
    theta = {"w": jnp.array([0.4, 0.3, -0.2])}
    logits = jnp.array([0.2, -0.4, 0.1])
    smoothing, eps = 0.05, 1e-8

    def make(normalization):
        return mixture.mixture(
            loss_fn,
            3,
            update="hypergradient",
            phi_tx=optax.sgd(1.0),
            smoothing=smoothing,
            eps=eps,
            normalization=normalization,
        )

    got, metrics = _hypergradient_step(make("hessian"), logits, theta, generic, target)
    norm_direction, _ = _hypergradient_step(make("norm"), logits, theta, generic, target)
    assert np.linalg.norm(got - norm_direction) > 1e-3 * np.linalg.norm(got)
    assert float(metrics["anograd/curvature_fallback"]) == 0.0
    # Explicit reference: per-example gradients of 0.5 (x^T w - y)^2 and H_s = X_s^T X_s / M.
    x, y, xs = generic["x"], generic["y"], target["x"]
    grads = (x @ theta["w"] - y)[:, None] * x
    g_s = xs.T @ (xs @ theta["w"] - target["y"]) / xs.shape[0]
    hessian_s = xs.T @ xs / xs.shape[0]

    def explicit_objective(lg):
        g_w = grads.T @ _explicit_mixture_weights(lg, generic["domain"], smoothing)
        return -(g_w @ g_s) / jnp.sqrt(g_w @ hessian_s @ g_w + eps)

    np.testing.assert_allclose(got, jax.grad(explicit_objective)(logits), rtol=1e-8, atol=1e-12)


def test_mixture_hypergradient_honours_dds_eta():
    generic, target, _ = _toy()
    theta = np.array([0.4, 0.3, -0.2])
    logits = np.array([0.2, -0.4, 0.1])
    smoothing, eta = 0.05, 0.3

    def make(step):
        return mixture.mixture(
            loss_fn,
            3,
            update="hypergradient",
            objective="dds",
            eta=step,
            phi_tx=optax.sgd(1.0),
            smoothing=smoothing,
        )

    got, _ = _hypergradient_step(
        make(eta), jnp.asarray(logits), {"w": jnp.asarray(theta)}, generic, target
    )
    limit, _ = _hypergradient_step(
        make(0.0), jnp.asarray(logits), {"w": jnp.asarray(theta)}, generic, target
    )
    assert np.linalg.norm(got / eta - limit) > 1e-3 * np.linalg.norm(limit)
    # Central finite differences of L_s(theta - eta sum_i wbar_i grad l_i), numpy float64.
    x, y, xs, ys = generic["x"], generic["y"], target["x"], target["y"]

    def lookahead_loss(lg):
        w = np.asarray(_explicit_mixture_weights(jnp.asarray(lg), generic["domain"], smoothing))
        step = ((x @ theta - y)[:, None] * x).T @ (w / w.sum())
        return 0.5 * np.mean((xs @ (theta - eta * step) - ys) ** 2)

    h = 1e-6
    fd = np.array(
        [
            (lookahead_loss(logits + h * e) - lookahead_loss(logits - h * e)) / (2 * h)
            for e in np.eye(3)
        ]
    )
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-10)


def test_mixture_hypergradient_with_soba_matches_dense_reference():
    """One SOBA step on the logits (v_tx = phi_tx = sgd(1), the authors' uniform-Hessian
    d_v and order): v' = v - (H v + g_s) with H = X^T X / n, then logits <- logits -
    J^T (G v'), J the Jacobian of the normalised mixture weights wbar_i written out, G the
    explicit per-example gradients; alpha is then (1 - s) softmax(logits) + s / K."""
    generic, target, _ = _toy()
    smoothing = 0.05
    rng = np.random.default_rng(4)
    theta, v = rng.normal(size=3), rng.normal(size=3)
    logits = np.array([0.2, -0.4, 0.1])

    def make_method(weight_fn):
        return outer.soba(loss_fn, weight_fn, optax.sgd(1.0), optax.sgd(1.0))

    method = mixture.mixture_hypergradient(3, make_method, smoothing=smoothing)
    state = method.init(jnp.asarray(logits), {"w": jnp.asarray(theta)})
    state = state._replace(inner_state=state.inner_state._replace(v={"w": jnp.asarray(v)}))
    new_logits, new_state, metrics = jax.jit(method.update)(
        jnp.asarray(logits), state, {"w": jnp.asarray(theta)}, generic, target, jax.random.key(0)
    )

    x, y, xs, ys = generic["x"], generic["y"], target["x"], target["y"]
    grads = (x @ theta - y)[:, None] * x
    g_s = xs.T @ (xs @ theta - ys) / xs.shape[0]
    expected_v = v - (x.T @ x / x.shape[0] @ v + g_s)

    def normalised_weights(lg):
        w = _explicit_mixture_weights(lg, jnp.asarray(generic["domain"]), smoothing)
        return w / jnp.sum(w)

    jacobian = np.asarray(jax.jacobian(normalised_weights)(jnp.asarray(logits)))
    expected_logits = logits - jacobian.T @ (grads @ expected_v)
    np.testing.assert_allclose(new_state.inner_state.v["w"], expected_v, rtol=1e-10)
    np.testing.assert_allclose(new_logits, expected_logits, rtol=1e-10, atol=1e-14)
    softmax = np.exp(expected_logits) / np.sum(np.exp(expected_logits))
    expected_alpha = (1 - smoothing) * softmax + smoothing / 3
    np.testing.assert_allclose(new_state.alpha_K, expected_alpha, rtol=1e-10)
    np.testing.assert_allclose(metrics["mixture/alpha/1"], expected_alpha[1], rtol=1e-10)
    assert int(new_state.count) == 1


def test_mixture_rejects_bad_options():
    with pytest.raises(ValueError):
        mixture.mixture(loss_fn, 3, update="nope")
    with pytest.raises(ValueError):
        mixture.mixture(loss_fn, 3, update="hypergradient", objective="nope")
    with pytest.raises(ValueError):
        mixture.mixture(loss_fn, 3, smoothing=1.5)
    with pytest.raises(ValueError, match="normalization"):
        mixture.mixture(loss_fn, 3, update="hypergradient", normalization="nope")
