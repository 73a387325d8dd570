"""Methods run through the registry against naive references of one step: SOBA moves v
first and takes phi's step at v_{t+1} (with the v optimiser of config.soba), the domain
mixture's ANOGRAD and DDS hypergradients, DSIR's target counts taken once from the whole
target_train split, and domain_mixture's realised shares (capped by the draw). Fast."""

import collections

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from test_dsir import dense, py_counts

from adaptive_data import run_setup
from adaptive_data.models import transformer, weighting

from conftest import synthetic_lm_batch, tiny_config

DOMAINS = ("generic_a", "generic_b", "target")
B, LENGTH = 8, 12


def _setup(method, **overrides):
    values = {
        "model.width": 16,
        "model.mlp_dim": 32,
        "model.max_length": LENGTH,
        "model.dropout_rate": 0.0,
        "train.batch_size": 2,
        "train.target_batch_size": 3,
        "select.downsampling": B // 2,
        "weighting.embed_dim": 4,
        "weighting.conv_features": (4,),
        "outer.optimizer": "sgd",
    }
    config = tiny_config(f"method={method},runlocal", **{**values, **overrides})
    return run_setup.build(config, domains=DOMAINS, target_domain="target"), config


def _batches(seed=0):
    rng = np.random.default_rng(seed)
    generic = synthetic_lm_batch(rng, B, LENGTH, num_domains=3)
    generic["domain"] = np.array([0, 0, 0, 1, 1, 2, 0, 1], np.int32)  # every domain present
    target = synthetic_lm_batch(rng, 3, LENGTH, num_domains=3, domain=2)
    return jax.tree.map(jnp.asarray, generic), jax.tree.map(jnp.asarray, target)


def _per_example_grads(loss_fn, params, batch):
    """float64 [n, P] gradients of each example's loss, one example at a time (naive)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    grad_one = jax.jit(jax.grad(lambda f, one: loss_fn(unravel(f), one)[0]))
    rows = [
        grad_one(flat, jax.tree.map(lambda x, i=i: x[i : i + 1], batch))
        for i in range(batch["inputs"].shape[0])
    ]
    return np.asarray(jnp.stack(rows), np.float64), flat, unravel


# ------------------------------------------------------------------ SOBA


@pytest.mark.parametrize("v_optimizer", ["sgd", "adam"])
def test_soba_moves_v_first_and_steps_phi_at_the_new_v(v_optimizer):
    rho, phi_lr = 0.5, 0.3
    setup, config = _setup(
        "soba",
        **{
            "soba.v_optimizer": v_optimizer,
            "soba.v_learning_rate": rho,
            "outer.learning_rate": phi_lr,
        },
    )
    state = setup.initial_state()
    generic, target = _batches()
    outer = setup.method.outer
    phi0, outer_state = state.method_state
    phi1, outer_state1, _ = outer.update(phi0, outer_state, state.params, generic, target)

    # Naive reference of one step from v_0 = 0: d_v = H v_0 + g_s = g_s; v_1 from the
    # v optimiser's first step; d_phi = d/dphi sum_i wbar_i(phi) <grad l_i, v_1>.
    loss_fn = transformer.make_loss_fn(setup.model)
    g_target, flat, _ = _per_example_grads(loss_fn, state.params, target)
    g_s = g_target.mean(axis=0)
    if v_optimizer == "sgd":
        v1 = -rho * g_s
    else:  # Adam's first step, bias-corrected: -lr g / (|g| + eps), eps = 1e-9
        v1 = -rho * g_s / (np.abs(g_s) + 1e-9)
    # (Adam's sign-like step is ill-conditioned where |g_s| is near float32 noise.)
    clear = np.abs(g_s) > 1e-6
    np.testing.assert_allclose(
        jax.flatten_util.ravel_pytree(outer_state1.v)[0][clear], v1[clear], rtol=2e-4, atol=1e-7
    )
    grads, _, _ = _per_example_grads(loss_fn, state.params, generic)
    c = grads @ v1  # <grad l_i, v_1>, float64

    wmodel = weighting.from_config(config.weighting, setup.model.tokenizer)

    def objective(phi):
        w = weighting.weighting_forward(wmodel, phi, generic["inputs"], mode="positive")
        return jnp.sum(w / jnp.sum(w) * c.astype(np.float32))

    d_phi = jax.grad(objective)(phi0)
    want = jax.tree.map(lambda p, d: p - phi_lr * d, phi0, d_phi)
    # The step at v_0 = 0 would leave phi unchanged: the new v is what moved it.
    assert (
        max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), phi1, phi0)))
        > 0
    )
    jax.tree.map(
        lambda got, w: np.testing.assert_allclose(got, w, rtol=2e-3, atol=1e-6), phi1, want
    )


# ------------------------------------------------------------------ domain mixture


@pytest.mark.parametrize("objective", ["anograd", "dds"])
def test_domain_mixture_hypergradient_step_matches_a_naive_reference(objective):
    step_size, smoothing, eta = 0.7, 0.05, 0.1
    setup, _ = _setup(
        "domain_mixture",
        **{
            "mixture.update_rule": "hypergradient",
            "mixture.objective": objective,
            "mixture.step_size": step_size,
            "mixture.smoothing": smoothing,
            "dds.eta": eta,
        },
    )
    state = setup.initial_state()
    generic, target = _batches(1)
    phi0 = jnp.array([0.3, -0.2, 0.1], jnp.float32)
    outer = setup.method.outer
    phi1, state1, _ = outer.update(
        phi0, outer.init(phi0, state.params), state.params, generic, target
    )

    loss_fn = transformer.make_loss_fn(setup.model)
    grads, flat, unravel = _per_example_grads(loss_fn, state.params, generic)
    g_s = _per_example_grads(loss_fn, state.params, target)[0].mean(axis=0)
    domain = np.asarray(generic["domain"])
    count = np.bincount(domain, minlength=3).astype(np.float64)

    def alpha(phi):
        return (1 - smoothing) * jax.nn.softmax(phi) + smoothing / 3

    def weights(phi):  # w_i = alpha_{d_i} / n_{d_i}
        return alpha(phi)[domain] / count[domain]

    if objective == "anograd":

        def outer_objective(phi):
            g_w = weights(phi) @ grads
            return -(g_w @ g_s) / (jnp.linalg.norm(g_w) + 1e-8)
    else:

        def outer_objective(phi):
            w = weights(phi)
            theta = flat - eta * ((w / jnp.sum(w)) @ grads).astype(flat.dtype)
            return jnp.mean(loss_fn(unravel(theta), target))

    want = phi0 - step_size * jax.grad(outer_objective)(phi0)
    np.testing.assert_allclose(phi1, want, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(state1.alpha_K, alpha(want), rtol=2e-3, atol=1e-6)


def test_domain_mixture_logs_realised_shares_capped_by_the_draw():
    setup, _ = _setup("domain_mixture")
    method = setup.method
    state = setup.initial_state()
    generic, target = _batches(2)
    # alpha puts almost everything on domain 2, of which B holds one example: a draw of b = 2
    # without replacement can give it at most 1 / b = 0.5 of the selected batch.
    alpha = jnp.array([0.01, 0.01, 0.98], jnp.float32)
    outer_state = state.method_state.outer._replace(alpha_K=alpha)
    state = state.replace(method_state=state.method_state._replace(outer=outer_state))
    step = jax.jit(
        lambda s, b: (
            method.outer
            and __import__("adaptive_data").methods.train_step(
                s, b, method=method, active=True, outer_update=False
            )
        )
    )
    _, metrics = step(state, {"generic": generic, "target": target})
    share = np.asarray(metrics["mixture/realised_share"])
    cap = np.asarray(metrics["mixture/share_cap"])
    np.testing.assert_allclose(cap, np.minimum(np.bincount(generic["domain"], minlength=3) / 2, 1))
    assert share.sum() == pytest.approx(1.0)
    assert np.all(share <= cap + 1e-7)
    assert share[2] == pytest.approx(0.5)  # capped: alpha_2 = 0.98, realised at most 0.5


# ------------------------------------------------------------------ DSIR


def test_dsir_counts_all_of_target_train_once_and_only_generic_online():
    m = 64
    setup, _ = _setup("dsir", **{"dsir.num_buckets": m})
    method = setup.method
    state = setup.initial_state()
    rng = np.random.default_rng(3)
    split = [synthetic_lm_batch(rng, 5, LENGTH, num_domains=3) for _ in range(3)]
    calls = []

    def target_train():
        calls.append(1)
        return iter(split)

    assert method.load_state is not None, "dsir must count target_train before training"
    loaded = method.load_state(state.method_state, target_train)
    want = sum(
        (py_counts(row, m) for b in split for row in np.asarray(b["inputs"]).tolist()),
        start=collections.Counter(),
    )
    np.testing.assert_array_equal(loaded.phi.target_M, dense(want, m))
    assert len(calls) == 1
    # An outer update adds the generic big batch's counts and leaves the target's alone.
    generic, target = _batches(4)
    phi, _, _ = method.outer.update(loaded.phi, loaded.outer, state.params, generic, target)
    np.testing.assert_array_equal(phi.target_M, loaded.phi.target_M)
    want_generic = sum(
        (py_counts(row, m) for row in np.asarray(generic["inputs"]).tolist()),
        start=collections.Counter(),
    )
    np.testing.assert_array_equal(phi.generic_M, dense(want_generic, m))
