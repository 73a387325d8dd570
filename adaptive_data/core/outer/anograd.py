"""ANOGRAD: aligned, normalised gradient outer update of phi (docs/algorithms.md, "ANOGRAD").

With w_B = w(x_B; phi) on a generic batch of b examples, J = d l_B / d theta,
g_w(phi) = J^T w = sum_i w_i grad l_i(theta) and g_s = grad L_s(theta) on a
target batch, ANOGRAD descends phi on

    "norm":     J(phi) = - <g_w, g_s> / (||g_w|| + eps)
    "hessian":  J(phi) = - <g_w, g_s> / sqrt(g_w^T H_s g_w + eps)

(H_s the Hessian of the mean target loss). Both are homogeneous of degree 0 in w
(up to eps), so the raw weights are used, with no normalisation on the batch.

Curvature fallback ("hessian"): where Q = g_w^T H_s g_w <= 0 (H_s is not positive
definite along g_w, e.g. away from a minimum of L_s) the "hessian" denominator is
meaningless, so that update uses the "norm" objective and its gradient instead, and
reports `anograd/curvature_fallback` = 1 (0 otherwise). Both candidate directions
are formed and one is picked with `jnp.where`, so it works under `jit`.

Parameter subset (`param_filter`, a regex searched in the "/"-joined parameter
paths, the convention of `core/alignment.py`): with P the 0/1 mask of the matching
leaves, g_w and g_s are replaced by P g_w and P g_s before every inner product and
norm, and before the Hessian-vector product: J = - <P g_w, P g_s> / (||P g_w|| + eps)
or / sqrt((P g_w)^T H_s (P g_w) + eps). (The authors zero g_w outside the chosen
parameters, which gives the same dot product and norm.)

Per-example gradients are never materialised. The gradient with respect to the
weights is explicit (g_w, g_s below already masked by P):

    A = <g_w, g_s> = w . a,            a = J g_s       (alignments)
    N = ||g_w||,   dN/dw = c / N,      c = J g_w
    Q = g_w^T H_s g_w,  dQ/dw = 2 c_H, c_H = J P (H_s g_w)

    "norm":    dJ/dw = -a / (N + eps) + A c / (N (N + eps)^2)
    "hessian": dJ/dw = -a / D + A c_H / D^3,   D = sqrt(Q + eps)

Each is J u for a single vector u (u = -g_s / denom + coef * direction), so it costs
one jvp; the chain rule into phi is one VJP through `weight_fn`. Cost per step: one
backward pass on the target batch (plus one HVP for "hessian"), one linearisation
of the generic loss vector, two linear passes and one transpose.
"""

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core import derivatives
from adaptive_data.core import tree as tree_lib
from adaptive_data.core.outer import base

PyTree = Any

NORMALIZATIONS = ("norm", "hessian")


def _check_options(normalization: str, param_filter: str | None) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if param_filter is not None:
        try:
            re.compile(param_filter)
        except re.error as err:
            raise ValueError(f"param_filter {param_filter!r} is not a valid regex: {err}") from err


def _projector(theta: PyTree, param_filter: str | None):
    """x -> P x, zeroing the leaves whose path does not match `param_filter`."""
    if param_filter is None:
        return lambda tree: tree
    keep = tree_lib.path_mask(theta, param_filter)  # ValueError if nothing matches

    def project(tree: PyTree) -> PyTree:
        return jax.tree.map(lambda k, x: x if k else jnp.zeros_like(x), keep, tree)

    return project


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
    param_filter: str | None = None,
) -> tuple[PyTree, base.Metrics]:
    """Gradient of the ANOGRAD objective J(phi) with respect to phi.

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses l_i(theta).
      weight_fn: (phi, batch) -> float[b] positive weights w_i(phi).
      phi: weighting model parameters.
      theta: model parameters (held fixed).
      generic_batch: b generic examples (a uniform sub-sample of B).
      target_batch: a batch of S_train.
      normalization: "norm" (||g_w|| + eps) or "hessian" (sqrt(g_w^T H_s g_w + eps),
        with the "norm" fallback where g_w^T H_s g_w <= 0; module docstring).
      eps: stabiliser of the denominator.
      param_filter: regex (`re.search`) on the "/"-joined parameter paths; only
        the matching leaves of g_w and g_s count. None: all parameters.

    Returns:
      `(dJ/dphi, metrics)`: a pytree shaped like phi, and `outer/objective` (J),
      `outer/alignment` (<g_wbar, g_s> with wbar = w / sum w), `outer/cosine`,
      `outer/target_loss`, `outer/generic_loss` (w-weighted mean), `outer/grad_norm`
      (||dJ/dphi||), `outer/weight_entropy`, `outer/weight_max`, `anograd/g_w_norm`
      (||g_wbar||), `anograd/g_s_norm` and, for "hessian", `anograd/curvature`
      (g_w^T H_s g_w) and `anograd/curvature_fallback` (1.0 when the curvature was
      <= 0 and the "norm" objective was used, else 0.0). The reported alignment and
      norm use the normalised weights, so they do not depend on the overall weight
      scale, to which J is invariant. With `param_filter`, every quantity built from
      g_w or g_s uses the masked vectors.

    Raises:
      ValueError: an unknown normalization, or a `param_filter` that is not a
        regex or matches no parameter.
    """
    _check_options(normalization, param_filter)
    project = _projector(theta, param_filter)

    target_loss, g_s = derivatives.mean_loss_and_grad(loss_fn, theta, target_batch)
    g_s = project(g_s)
    w_B, pullback = derivatives.weights_and_pullback(weight_fn, phi, generic_batch)
    losses_B, jvp_fn, vjp_fn = derivatives.linearize_losses(loss_fn, theta, generic_batch)
    w_B = w_B.astype(losses_B.dtype)

    g_w = project(vjp_fn(w_B))
    alignment = optax.tree.vdot(g_w, g_s)  # <g_w, g_s> = sum_i w_i a_i
    g_w_norm = optax.tree.norm(g_w)
    g_s_norm = optax.tree.norm(g_s)
    metrics = {}

    def direction(denom, coef, normaliser_direction):
        """u = -g_s / denom + coef * normaliser_direction: dJ/dw_i = <grad l_i, u>."""
        return jax.tree.map(lambda s_, n_: -s_ / denom + coef * n_, g_s, normaliser_direction)

    # "norm": J = -<g_w, g_s> / (|g_w| + eps),
    # dJ/dw_i = -a_i / denom + <g_w, g_s> <grad l_i, g_w> / (|g_w| denom^2).
    norm_denom = g_w_norm + eps
    safe_norm = jnp.where(g_w_norm > 0, g_w_norm, 1.0)
    u = direction(norm_denom, alignment / (safe_norm * norm_denom**2), g_w)
    objective = -alignment / norm_denom

    if normalization == "hessian":
        # J = -<g_w, g_s> / sqrt(Q + eps), Q = g_w^T H_s g_w:
        # dJ/dw_i = -a_i / denom + <g_w, g_s> <grad l_i, P H_s g_w> / denom^3.
        h_g_w = project(
            derivatives.hvp(lambda p: derivatives.mean_loss(loss_fn, p, target_batch), theta, g_w)
        )
        curvature = optax.tree.vdot(g_w, h_g_w)
        fallback = curvature <= 0
        # Only read where curvature > 0; the guard keeps the unused branch finite.
        hess_denom = jnp.sqrt(jnp.where(fallback, 1.0, curvature) + eps)
        u_hessian = direction(hess_denom, alignment / hess_denom**3, h_g_w)
        u = jax.tree.map(lambda n_, h_: jnp.where(fallback, n_, h_), u, u_hessian)
        objective = jnp.where(fallback, objective, -alignment / hess_denom)
        metrics["anograd/curvature"] = curvature
        metrics["anograd/curvature_fallback"] = fallback.astype(curvature.dtype)
    dobj_dw_B = jvp_fn(u)

    grad_phi = pullback(dobj_dw_B)
    safe_cos_denom = jnp.where(g_w_norm * g_s_norm > 0, g_w_norm * g_s_norm, 1.0)
    w_total = jnp.sum(w_B)
    metrics.update(
        {
            "outer/objective": objective,
            "outer/alignment": alignment / w_total,
            "outer/cosine": alignment / safe_cos_denom,
            "outer/target_loss": target_loss,
            "outer/generic_loss": jnp.vdot(derivatives.normalize_weights(w_B), losses_B),
            "outer/grad_norm": optax.tree.norm(grad_phi),
            "anograd/g_w_norm": g_w_norm / w_total,
            "anograd/g_s_norm": g_s_norm,
            **base.weight_metrics(w_B),
        }
    )
    return grad_phi, metrics


def anograd(
    loss_fn: derivatives.LossFn,
    weight_fn: derivatives.WeightFn,
    phi_tx: optax.GradientTransformation,
    *,
    normalization: str = "norm",
    eps: float = 1e-8,
    param_filter: str | None = None,
) -> base.OuterMethod:
    """ANOGRAD outer method: phi <- phi_tx step on dJ/dphi (see `anograd_gradient`).

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses.
      weight_fn: (phi, batch) -> float[b] positive weights.
      phi_tx: optimiser of phi (it receives the gradient; e.g. `optax.adam(1e-3)`).
      normalization: "norm" or "hessian" (with the "norm" fallback where the
        target curvature along g_w is <= 0).
      eps: stabiliser of the denominator.
      param_filter: regex on the "/"-joined parameter paths restricting the
        alignment to the matching parameters (None: all); checked against theta
        at the first update.

    Returns:
      An `OuterMethod` with state `PhiState(phi_opt_state, count)`. `theta` given
      to `init` and the `key` given to `update` are unused.

    Raises:
      ValueError: an unknown normalization or an invalid regex (here), a regex
        that matches no parameter (at the first update).
    """
    _check_options(normalization, param_filter)

    def gradient_fn(phi, theta, generic_batch, target_batch):
        return anograd_gradient(
            loss_fn,
            weight_fn,
            phi,
            theta,
            generic_batch,
            target_batch,
            normalization=normalization,
            eps=eps,
            param_filter=param_filter,
        )

    return base.phi_gradient_method(gradient_fn, phi_tx)
