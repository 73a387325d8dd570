"""ANOGRAD: aligned, normalised gradient outer update of phi (ALGORITHMS.md 4).

With w_B = w(x_B; phi) on a generic batch of b examples, J = d l_B / d theta,
g_w(phi) = J^T w = sum_i w_i grad l_i(theta) and g_s = grad L_s(theta) on a
target batch, ANOGRAD descends phi on

    "norm":     J(phi) = - <g_w, g_s> / (||g_w|| + eps)
    "hessian":  J(phi) = - <g_w, g_s> / sqrt(max(g_w^T H_s g_w, 0) + eps)

(H_s the Hessian of the mean target loss). Both are homogeneous of degree 0 in w
(up to eps), so the raw weights are used, with no normalisation on the batch.

Per-example gradients are never materialised. The gradient with respect to the
weights is explicit:

    A = <g_w, g_s> = w . a,            a = J g_s       (alignments, one jvp)
    N = ||g_w||,   dN/dw = c / N,      c = J g_w       (one more jvp)
    Q = g_w^T H_s g_w,  dQ/dw = 2 c_H, c_H = J (H_s g_w) (one HVP, one jvp)

    "norm":    dJ/dw = -a / (N + eps) + A c / (N (N + eps)^2)
    "hessian": dJ/dw = -a / D + A c_H / D^3,   D = sqrt(max(Q, 0) + eps)

and the chain rule into phi is one VJP through `weight_fn`. Cost per step: one
backward pass on the target batch (plus one HVP for "hessian"), one linearisation
of the generic loss vector, two linear passes and one transpose.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core import derivatives
from adaptive_data.core.outer import base

PyTree = Any

NORMALIZATIONS = ("norm", "hessian")


def anograd_gradient(
    loss_fn: derivatives.LossFn,
    weight_fn: derivatives.WeightFn,
    phi: PyTree,
    theta: PyTree,
    generic_batch: PyTree,
    target_batch: PyTree,
    *,
    normalization: str = "norm",
    eps: float = 1e-8,
) -> tuple[PyTree, base.Metrics]:
    """Gradient of the ANOGRAD objective J(phi) with respect to phi.

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses l_i(theta).
      weight_fn: (phi, batch) -> float[b] positive weights w_i(phi).
      phi: weighting model parameters.
      theta: model parameters (held fixed).
      generic_batch: b generic examples (a uniform sub-sample of B).
      target_batch: a batch of S_train.
      normalization: "norm" (||g_w|| + eps) or "hessian" (sqrt(g_w^T H_s g_w + eps)).
      eps: stabiliser of the denominator.

    Returns:
      `(dJ/dphi, metrics)`: a pytree shaped like phi, and `outer/objective` (J),
      `outer/alignment` (<g_wbar, g_s> with wbar = w / sum w), `outer/cosine`,
      `outer/target_loss`, `outer/generic_loss` (w-weighted mean), `outer/grad_norm`
      (||dJ/dphi||), `outer/weight_entropy`, `outer/weight_max`, `anograd/g_w_norm`
      (||g_wbar||), `anograd/g_s_norm` and, for "hessian", `anograd/curvature`
      (g_w^T H_s g_w). The reported alignment and norm use the normalised weights, so
      they do not depend on the overall weight scale, to which J is invariant.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")

    def target_loss_fn(p: PyTree) -> jax.Array:
        return jnp.mean(loss_fn(p, target_batch))

    target_loss, g_s = jax.value_and_grad(target_loss_fn)(theta)
    w_B, pullback = derivatives.weights_and_pullback(weight_fn, phi, generic_batch)
    losses_B, jvp_fn, vjp_fn = derivatives.linearize_losses(loss_fn, theta, generic_batch)
    w_B = w_B.astype(losses_B.dtype)

    g_w = vjp_fn(w_B)
    alignment = optax.tree.vdot(g_w, g_s)  # <g_w, g_s> = sum_i w_i a_i
    g_w_norm = optax.tree.norm(g_w)
    g_s_norm = optax.tree.norm(g_s)
    metrics = {}

    # dJ/dw_i = <grad l_i, u> for one vector u, so a single J u pass gives the whole
    # gradient (no separate passes for the alignments a_i and the normaliser's c_i).
    if normalization == "norm":
        # J = -<g_w, g_s> / (|g_w| + eps):
        # dJ/dw_i = -a_i / denom + <g_w, g_s> <grad l_i, g_w> / (|g_w| denom^2).
        denom = g_w_norm + eps
        safe_norm = jnp.where(g_w_norm > 0, g_w_norm, 1.0)
        normaliser_direction = g_w
        normaliser_coef = alignment / (safe_norm * denom**2)
    else:
        # J = -<g_w, g_s> / sqrt(Q + eps), Q = g_w^T H_s g_w:
        # dJ/dw_i = -a_i / denom + <g_w, g_s> <grad l_i, H_s g_w> / denom^3.
        h_g_w = derivatives.hvp(target_loss_fn, theta, g_w)
        curvature = optax.tree.vdot(g_w, h_g_w)
        denom = jnp.sqrt(jnp.maximum(curvature, 0.0) + eps)
        normaliser_direction = h_g_w
        normaliser_coef = jnp.where(curvature > 0, alignment / denom**3, 0.0)
        metrics["anograd/curvature"] = curvature
    u = jax.tree.map(lambda s_, n_: -s_ / denom + normaliser_coef * n_, g_s,
                     normaliser_direction)
    dobj_dw_B = jvp_fn(u)

    objective = -alignment / denom
    grad_phi = pullback(dobj_dw_B)
    safe_cos_denom = jnp.where(g_w_norm * g_s_norm > 0, g_w_norm * g_s_norm, 1.0)
    w_total = jnp.sum(w_B)
    metrics.update({
        "outer/objective": objective,
        "outer/alignment": alignment / w_total,
        "outer/cosine": alignment / safe_cos_denom,
        "outer/target_loss": target_loss,
        "outer/generic_loss": jnp.vdot(derivatives.normalize_weights(w_B), losses_B),
        "outer/grad_norm": optax.tree.norm(grad_phi),
        "anograd/g_w_norm": g_w_norm / w_total,
        "anograd/g_s_norm": g_s_norm,
        **base.weight_metrics(w_B),
    })
    return grad_phi, metrics


def anograd(
    loss_fn: derivatives.LossFn,
    weight_fn: derivatives.WeightFn,
    phi_tx: optax.GradientTransformation,
    *,
    normalization: str = "norm",
    eps: float = 1e-8,
) -> base.OuterMethod:
    """ANOGRAD outer method: phi <- phi_tx step on dJ/dphi (see `anograd_gradient`).

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses.
      weight_fn: (phi, batch) -> float[b] positive weights.
      phi_tx: optimiser of phi (it receives the gradient; e.g. `optax.adam(1e-3)`).
      normalization: "norm" or "hessian".
      eps: stabiliser of the denominator.

    Returns:
      An `OuterMethod` with state `PhiState(phi_opt_state, count)`. `theta` given
      to `init` and the `key` given to `update` are unused.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")

    def gradient_fn(phi, theta, generic_batch, target_batch):
        return anograd_gradient(loss_fn, weight_fn, phi, theta, generic_batch, target_batch,
                                normalization=normalization, eps=eps)

    return base.phi_gradient_method(gradient_fn, phi_tx)
