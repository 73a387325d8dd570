"""SOBA outer update (Dagreou et al. 2022; docs/algorithms.md, "SOBA").

The hypergradient (docs/algorithms.md, "The bilevel problem and its online
solution") is dL_s/dphi = (d2F/dphi dtheta) v* with v* = -H^{-1} grad L_s. SOBA
tracks v* online with a second variable v shaped like theta. Every term uses ONE generic batch of b
examples, `generic_batch`, chosen by the caller (the authors, and the library's
default, use the selected b: the batch drawn by the weights, the one the model
trains on; a uniform sub-sample of B is the other option). With
wbar_i = w_i(phi) / sum_j w_j(phi) normalised over that batch and r = hessian_reg:

    d_v   = (1 - r) H_g v + r v + g_s,     g_s = grad_theta L_s(theta) (target batch)
    d_phi = d/dphi <grad_theta F(theta, phi), v>,   F(theta, phi) = sum_i wbar_i l_i(theta)
          = sum_i (d wbar_i / d phi) <grad l_i(theta), v>
    v   <- v_tx step on d_v       (the authors use an Adam-type optimiser;
                                   optax.sgd(rho) gives v - rho d_v)
    phi <- phi_tx step on d_phi

Which loss H_g is the Hessian of (`hessian_weights`):
- "uniform" (the authors' choice, default): the mean generic loss on the batch,
  (1/b) sum_i l_i, whatever the weights; the weights only enter d_phi.
- "weighted" (the library's previous behaviour): F itself, sum_i wbar_i l_i, so that
  a fixed point of v is exactly -(d2F/dtheta2)^{-1} g_s.

`hessian_free=True` drops the curvature (`hessian_free_curvature`):
- "zero" (the authors' choice, default): H_g is replaced by 0, d_v = g_s.
- "identity" (previous behaviour): H_g is replaced by the identity, d_v = v + g_s
  (so v tracks -g_s).

Order: both directions are evaluated at the state at the start of the step
(theta_t, phi_t, v_t), then v and phi are updated simultaneously; the driver then
takes the inner step on theta. H_g v and the per-example products <grad l_i, v>
come from one forward-over-reverse pass (`jax.jvp` of `jax.grad`, no dense
Hessian), and d_phi from one VJP through the weights.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core import derivatives
from adaptive_data.core.outer import base

PyTree = Any


HESSIAN_WEIGHTS = ("uniform", "weighted")
HESSIAN_FREE_CURVATURES = ("zero", "identity")


def _check_options(hessian_weights: str, hessian_free_curvature: str, hessian_reg: float):
    if hessian_weights not in HESSIAN_WEIGHTS:
        raise ValueError(
            f"hessian_weights must be one of {HESSIAN_WEIGHTS}, got {hessian_weights!r}"
        )
    if hessian_free_curvature not in HESSIAN_FREE_CURVATURES:
        raise ValueError(
            f"hessian_free_curvature must be one of {HESSIAN_FREE_CURVATURES}, "
            f"got {hessian_free_curvature!r}"
        )
    if not 0.0 <= hessian_reg <= 1.0:
        raise ValueError(f"hessian_reg must lie in [0, 1], got {hessian_reg}")


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
    hessian_weights: str = "uniform",
    hessian_free_curvature: str = "zero",
) -> tuple[PyTree, PyTree, base.Metrics]:
    """The SOBA directions (d_v, d_phi) at (theta, phi, v); see the module docstring.

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses.
      weight_fn: (phi, batch) -> float[b] positive weights (normalised here).
      phi: weighting model parameters.
      v: pytree shaped like theta.
      theta: model parameters.
      generic_batch: b generic examples, used by every generic term (H_g v and the
        cross derivative); the caller picks them (the authors: the selected b).
      target_batch: a batch of S_train.
      hessian_free: drop the curvature term H_g v (see `hessian_free_curvature`).
      hessian_reg: r in [0, 1]; the curvature term is (1 - r) H_g v + r v
        (ignored when hessian_free).
      hessian_weights: "uniform" (H_g of the mean loss on the batch, the authors')
        or "weighted" (H_g of sum_i wbar_i l_i, the previous behaviour).
      hessian_free_curvature: with hessian_free, "zero" (d_v = g_s, the authors')
        or "identity" (d_v = v + g_s, the previous behaviour).

    Returns:
      `(d_v, d_phi, metrics)`: d_v shaped like theta, d_phi shaped like phi
      (at a fixed point of v it is the implicit hypergradient dL_s/dphi), and
      metrics `outer/objective` (= `outer/target_loss`, L_s(theta)),
      `outer/inner_loss` (F), `outer/grad_norm` (||d_phi||), `outer/weight_entropy`,
      `outer/weight_max`, `soba/v_norm`, `soba/v_direction_norm` (||d_v||, the
      residual of H_g v = -grad L_s), `soba/v_dot_target_grad` (<v, grad L_s>).

    Raises:
      ValueError: an unknown `hessian_weights` or `hessian_free_curvature`, or
        `hessian_reg` outside [0, 1].
    """
    _check_options(hessian_weights, hessian_free_curvature, hessian_reg)
    target_loss, g_s = jax.value_and_grad(lambda p: jnp.mean(loss_fn(p, target_batch)))(theta)
    wbar_B, pullback = derivatives.weights_and_pullback(
        weight_fn, phi, generic_batch, normalize=True
    )

    if hessian_free:
        losses_B, b_B = derivatives.loss_jvp(loss_fn, theta, generic_batch, v)
        if hessian_free_curvature == "zero":
            d_v = g_s
        else:
            d_v = optax.tree.add(v, g_s)
    else:

        def hessian_objective(p: PyTree) -> tuple[jax.Array, jax.Array]:
            l_B = loss_fn(p, generic_batch)
            if hessian_weights == "uniform":
                return jnp.mean(l_B), l_B
            return jnp.vdot(wbar_B.astype(l_B.dtype), l_B), l_B

        # One forward-over-reverse pass: tangents of (grad of the Hessian's loss, l_B)
        # along v are (H_g v, (<grad l_i, v>)_i).
        (_, losses_B), (h_v, b_B) = derivatives.grad_and_hvp(
            hessian_objective, theta, v, has_aux=True
        )
        curvature_v = (
            h_v
            if hessian_reg == 0.0
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
    hessian_weights: str = "uniform",
    hessian_free_curvature: str = "zero",
) -> base.OuterMethod:
    """SOBA outer method (see the module docstring for the maths and the order).

    Args:
      loss_fn: (theta, batch) -> float[b] per-example losses.
      weight_fn: (phi, batch) -> float[b] positive weights (normalised on the batch).
      phi_tx: optimiser of phi, fed d_phi.
      v_tx: optimiser of v, fed d_v, chosen by the caller (the authors use an
        Adam-type optimiser); `optax.sgd(rho)` gives v <- v - rho d_v.
      hessian_free: drop the curvature term H_g v.
      hessian_reg: r in [0, 1], mixes (1 - r) H_g v + r v.
      hessian_weights: "uniform" (default, the authors') or "weighted".
      hessian_free_curvature: "zero" (default, the authors') or "identity".

    Returns:
      An `OuterMethod` with state `SobaState(v, v_opt_state, phi_opt_state, count)`.
      `init(phi, theta)` needs theta (v starts at zeros shaped like it).

    Raises:
      ValueError: an invalid option (see `soba_directions`).
    """
    _check_options(hessian_weights, hessian_free_curvature, hessian_reg)

    def init(phi: PyTree, theta: PyTree | None = None) -> base.SobaState:
        if theta is None:
            raise ValueError("soba's init needs theta: init(phi, theta); v is shaped like theta")
        v = optax.tree.zeros_like(theta)
        return base.SobaState(v, v_tx.init(v), phi_tx.init(phi), jnp.zeros([], jnp.int32))

    def update(phi, outer_state, theta, generic_batch, target_batch, key=None):
        del key
        v = outer_state.v
        d_v, d_phi, metrics = soba_directions(
            loss_fn,
            weight_fn,
            phi,
            v,
            theta,
            generic_batch,
            target_batch,
            hessian_free=hessian_free,
            hessian_reg=hessian_reg,
            hessian_weights=hessian_weights,
            hessian_free_curvature=hessian_free_curvature,
        )
        v_updates, v_opt_state = v_tx.update(d_v, outer_state.v_opt_state, v)
        v = optax.apply_updates(v, v_updates)
        phi, phi_opt_state = base.apply_phi_update(phi_tx, d_phi, outer_state.phi_opt_state, phi)
        state = base.SobaState(v, v_opt_state, phi_opt_state, outer_state.count + 1)
        return phi, state, metrics

    return base.OuterMethod(init, update)
