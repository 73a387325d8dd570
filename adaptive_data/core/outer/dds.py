"""DDS: one-step look-ahead outer update of phi (Wang et al. 2020; docs/algorithms.md, "DDS").

With wbar_i = w_i(phi) / sum_j w_j(phi) on the given batch of b examples and
g(phi) = sum_i wbar_i grad l_i(theta), a virtual SGD step

    theta'(phi) = theta - eta g(phi)

and phi descends on L_s(theta'(phi)), differentiated through the virtual step:

    dL_s(theta')/dphi = -eta (dg/dphi)^T grad L_s(theta')
                      = -eta sum_i (d wbar_i / d phi) <grad l_i(theta), grad L_s(theta')>.

First-order limit (`eta == 0` or `first_order=True`): the returned gradient is

    lim_{eta -> 0} (1/eta) dL_s(theta'_eta)/dphi = -d/dphi <g(phi), g_s>,  g_s = grad L_s(theta),

i.e. eta is divided out (fold it into phi_tx's learning rate), and the reported
objective is L_s(theta). It is computed as L_s(theta - (g - stop_gradient(g))): the
step is exactly zero in value, so only its derivative survives, with no 0/0.

Either way the gradient is obtained by reverse-mode through the virtual step: one
VJP of the generic losses (g), a backward pass on the target batch, and the
transpose of that VJP (a forward-mode pass), then the VJP of the weights.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core import derivatives
from adaptive_data.core.outer import base

PyTree = Any


def dds_gradient(
    loss_fn: derivatives.LossFn,
    weight_fn: derivatives.WeightFn,
    phi: PyTree,
    theta: PyTree,
    generic_batch: PyTree,
    target_batch: PyTree,
    *,
    eta: float,
    first_order: bool = False,
) -> tuple[PyTree, base.Metrics]:
    """Gradient with respect to phi of the look-ahead target loss (module docstring).

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses.
      weight_fn: (phi, batch) -> float[b] positive weights (normalised here).
      phi: weighting model parameters.
      theta: model parameters (held fixed).
      generic_batch: b generic examples. By default (docs/algorithms.md, "DDS") a
        uniform sub-sample of B; the batch drawn by the weights (the inner step's)
        is the other option, though it counts the weights twice.
      target_batch: a batch of S_train.
      eta: virtual step size, a Python float >= 0 (0 selects the first-order limit).
      first_order: use the first-order limit whatever eta is.

    Returns:
      `(grad_phi, metrics)`: d L_s(theta')/d phi, or its first-order limit (eta
      divided out); metrics `outer/objective` (L_s(theta'); L_s(theta) in the
      limit), `outer/grad_norm`, `outer/weight_entropy`, `outer/weight_max`,
      `outer/generic_loss` (wbar-weighted mean), `dds/step_norm` (||eta g||, or
      ||g|| in the limit).
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    first_order = first_order or eta == 0
    losses_B, vjp_fn = jax.vjp(lambda p: loss_fn(p, generic_batch), theta)

    def objective(p: PyTree) -> tuple[jax.Array, tuple[jax.Array, PyTree]]:
        wbar_B = derivatives.normalize_weights(weight_fn(p, generic_batch))
        (g,) = vjp_fn(wbar_B.astype(losses_B.dtype))
        if first_order:
            step = optax.tree.sub(g, jax.lax.stop_gradient(g))  # value 0, derivative dg
        else:
            step = optax.tree.scale(eta, g)
        theta_next = optax.tree.sub(theta, step)
        return derivatives.mean_loss(loss_fn, theta_next, target_batch), (wbar_B, g)

    (lookahead_loss, (wbar_B, g)), grad_phi = jax.value_and_grad(objective, has_aux=True)(phi)
    g_norm = optax.tree.norm(g)
    metrics = {
        "outer/objective": lookahead_loss,
        "outer/generic_loss": jnp.vdot(wbar_B.astype(losses_B.dtype), losses_B),
        "outer/grad_norm": optax.tree.norm(grad_phi),
        "dds/step_norm": g_norm if first_order else eta * g_norm,
        **base.weight_metrics(wbar_B),
    }
    return grad_phi, metrics


def dds(
    loss_fn: derivatives.LossFn,
    weight_fn: derivatives.WeightFn,
    phi_tx: optax.GradientTransformation,
    *,
    eta: float,
    first_order: bool = False,
) -> base.OuterMethod:
    """DDS outer method: phi <- phi_tx step on `dds_gradient`.

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses.
      weight_fn: (phi, batch) -> float[b] positive weights (normalised on the batch).
      phi_tx: optimiser of phi.
      eta: virtual step size (Python float; typically the inner learning rate);
        0 selects the first-order limit.
      first_order: use the first-order limit (eta divided out) whatever eta is.

    Returns:
      An `OuterMethod` with state `PhiState(phi_opt_state, count)`; `theta` in
      `init` and `key` in `update` are unused.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")

    def gradient_fn(phi, theta, generic_batch, target_batch):
        return dds_gradient(
            loss_fn,
            weight_fn,
            phi,
            theta,
            generic_batch,
            target_batch,
            eta=eta,
            first_order=first_order,
        )

    return base.phi_gradient_method(gradient_fn, phi_tx)
