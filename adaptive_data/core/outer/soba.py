"""SOBA outer update (Dagreou et al. 2022; ALGORITHMS.md 2, 4).

With wbar_i = w_i(phi) / sum_j w_j(phi) on a generic batch of b examples, the inner
objective F(theta, phi) = sum_i wbar_i l_i(theta) and H_g = d2F/dtheta2, the
hypergradient is dL_s/dphi = (d2F/dphi dtheta) v* with v* = -H_g^{-1} grad L_s.
SOBA tracks v* online with a second variable v shaped like theta:

    d_v   = (1 - r) H_g v + r v + grad_theta L_s(theta)      (r = hessian_reg)
    d_phi = d/dphi <grad_theta F(theta, phi), v>
          = sum_i (d wbar_i / d phi) <grad l_i(theta), v>
    v   <- v_tx step on d_v            (optax.sgd(rho): v - rho d_v)
    phi <- phi_tx step on d_phi        (optax.sgd(beta): phi - beta d_phi)

`hessian_free=True` uses d_v = v + grad L_s (v tracks -grad L_s). Order: both
directions are evaluated at the state at the start of the step (theta_t, phi_t,
v_t), then v and phi are updated simultaneously; the driver then takes the inner
step on theta. H_g v and the per-example products <grad l_i, v> come from one
forward-over-reverse pass, and d_phi from one VJP through the weights.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core import derivatives
from adaptive_data.core.outer import base

PyTree = Any


def soba_directions(
    loss_fn: derivatives.LossFn,
    weight_fn: derivatives.WeightFn,
    phi: PyTree,
    v: PyTree,
    theta: PyTree,
    generic_batch: PyTree,
    target_batch: PyTree,
    *,
    hessian_free: bool = False,
    hessian_reg: float = 0.0,
) -> tuple[PyTree, PyTree, base.Metrics]:
    """The SOBA directions (d_v, d_phi) at (theta, phi, v); see the module docstring.

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses.
      weight_fn: (phi, batch) -> float[b] positive weights (normalised here).
      phi: weighting model parameters.
      v: pytree shaped like theta.
      theta: model parameters.
      generic_batch: b generic examples (uniform sub-sample of B).
      target_batch: a batch of S_train.
      hessian_free: replace H_g v by v.
      hessian_reg: r in [0, 1]; the curvature term is (1 - r) H_g v + r v.

    Returns:
      `(d_v, d_phi, metrics)`: d_v shaped like theta, d_phi shaped like phi
      (at v = v* it is the implicit hypergradient dL_s/dphi), and metrics
      `outer/objective` (= `outer/target_loss`, L_s(theta)), `outer/inner_loss` (F),
      `outer/grad_norm` (||d_phi||), `outer/weight_entropy`, `outer/weight_max`,
      `soba/v_norm`, `soba/v_direction_norm` (||d_v||, the residual of
      H_g v = -grad L_s), `soba/v_dot_target_grad` (<v, grad L_s>).
    """
    target_loss, g_s = jax.value_and_grad(
        lambda p: jnp.mean(loss_fn(p, target_batch))
    )(theta)
    wbar_B, pullback = derivatives.weights_and_pullback(
        weight_fn, phi, generic_batch, normalize=True
    )

    if hessian_free:
        losses_B, b_B = derivatives.loss_jvp(loss_fn, theta, generic_batch, v)
        curvature_v = v
    else:
        def inner_objective(p: PyTree) -> tuple[jax.Array, jax.Array]:
            l_B = loss_fn(p, generic_batch)
            return jnp.vdot(wbar_B.astype(l_B.dtype), l_B), l_B

        # One forward-over-reverse pass: tangents of (grad F, l_B) along v are
        # (H_g v, (<grad l_i, v>)_i).
        (_, losses_B), (h_v, b_B) = derivatives.grad_and_hvp(
            inner_objective, theta, v, has_aux=True
        )
        curvature_v = (
            h_v if hessian_reg == 0.0
            else optax.tree.add_scale(optax.tree.scale(1.0 - hessian_reg, h_v), hessian_reg, v)
        )

    d_v = optax.tree.add(curvature_v, g_s)
    d_phi = pullback(b_B)
    metrics = {
        "outer/objective": target_loss,
        "outer/target_loss": target_loss,
        "outer/inner_loss": jnp.vdot(wbar_B.astype(losses_B.dtype), losses_B),
        "outer/grad_norm": optax.tree.norm(d_phi),
        "soba/v_norm": optax.tree.norm(v),
        "soba/v_direction_norm": optax.tree.norm(d_v),
        "soba/v_dot_target_grad": optax.tree.vdot(v, g_s),
        **base.weight_metrics(wbar_B),
    }
    return d_v, d_phi, metrics


def soba(
    loss_fn: derivatives.LossFn,
    weight_fn: derivatives.WeightFn,
    phi_tx: optax.GradientTransformation,
    v_tx: optax.GradientTransformation,
    *,
    hessian_free: bool = False,
    hessian_reg: float = 0.0,
) -> base.OuterMethod:
    """SOBA outer method (see the module docstring for the maths and the order).

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses.
      weight_fn: (phi, batch) -> float[b] positive weights (normalised on the batch).
      phi_tx: optimiser of phi, fed d_phi.
      v_tx: optimiser of v, fed d_v; `optax.sgd(rho)` gives v <- v - rho d_v.
      hessian_free: replace H_g v by v.
      hessian_reg: r in [0, 1], mixes (1 - r) H_g v + r v.

    Returns:
      An `OuterMethod` with state `SobaState(v, v_opt_state, phi_opt_state, count)`.
      `init(phi, theta)` needs theta (v starts at zeros shaped like it).
    """
    if not 0.0 <= hessian_reg <= 1.0:
        raise ValueError(f"hessian_reg must lie in [0, 1], got {hessian_reg}")

    def init(phi: PyTree, theta: PyTree | None = None) -> base.SobaState:
        if theta is None:
            raise ValueError("soba's init needs theta: init(phi, theta); v is shaped like theta")
        v = optax.tree.zeros_like(theta)
        return base.SobaState(v, v_tx.init(v), phi_tx.init(phi), jnp.zeros([], jnp.int32))

    def update(phi, outer_state, theta, generic_batch, target_batch, key=None):
        del key
        v = outer_state.v
        d_v, d_phi, metrics = soba_directions(
            loss_fn, weight_fn, phi, v, theta, generic_batch, target_batch,
            hessian_free=hessian_free, hessian_reg=hessian_reg,
        )
        v_updates, v_opt_state = v_tx.update(d_v, outer_state.v_opt_state, v)
        v = optax.apply_updates(v, v_updates)
        phi, phi_opt_state = base.apply_phi_update(
            phi_tx, d_phi, outer_state.phi_opt_state, phi
        )
        state = base.SobaState(v, v_opt_state, phi_opt_state, outer_state.count + 1)
        return phi, state, metrics

    return base.OuterMethod(init, update)
