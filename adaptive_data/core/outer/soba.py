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
    phi <- phi_tx step on d_phi, taken at the updated v

Which loss H_g is the Hessian of (`hessian_weights`):
- "uniform" (the authors' choice, default): the mean generic loss on the batch,
  (1/b) sum_i l_i, whatever the weights; the weights only enter d_phi.
- "weighted" (the library's previous behaviour): F itself, sum_i wbar_i l_i, so that
  a fixed point of v is exactly -(d2F/dtheta2)^{-1} g_s.

`hessian_free=True` drops the curvature (`hessian_free_curvature`):
- "zero" (the authors' choice, default): H_g is replaced by 0, d_v = g_s.
- "identity" (previous behaviour): H_g is replaced by the identity, d_v = v + g_s
  (so v tracks -g_s).

Order (the authors'): v moves first, then phi uses the new v. With (theta_t, phi_t, v_t)
at the start of the step: d_v at (theta_t, phi_t, v_t), v_{t+1} = v_tx step on d_v;
then d_phi at (theta_t, phi_t, v_{t+1}) and the phi_tx step; the driver then takes
the inner step on theta. H_g v comes from one forward-over-reverse pass (`jax.jvp` of
`jax.grad`, no dense Hessian), the per-example products <grad l_i, v_{t+1}> from one
jvp of the loss vector, and d_phi from one VJP through the weights.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core import derivatives
from adaptive_data.core.outer import base

PyTree = Any


HESSIAN_WEIGHTS = ("uniform", "weighted")
HESSIAN_FREE_CURVATURES = ("zero", "identity")


class SobaState(NamedTuple):
    """State of SOBA.

    Attributes:
      v: pytree shaped like theta, the running estimate of -H^{-1} grad L_s.
      v_opt_state: state of `v_tx`.
      phi_opt_state: state of `phi_tx`.
      count: int32[] number of updates done.
    """

    v: PyTree
    v_opt_state: optax.OptState
    phi_opt_state: optax.OptState
    count: jax.Array


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


def soba_v_direction(
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
) -> tuple[PyTree, base.Metrics]:
    """d_v = (1 - r) H_g v + r v + g_s at (theta, phi, v); see the module docstring.

    Returns:
      `(d_v, metrics)`: d_v shaped like theta; `outer/objective` (= `outer/target_loss`,
      L_s(theta)), `soba/v_norm`, `soba/v_direction_norm` (||d_v||, the residual of
      H_g v = -grad L_s) and `soba/v_dot_target_grad` (<v, grad L_s>).
    """
    _check_options(hessian_weights, hessian_free_curvature, hessian_reg)
    target_loss, g_s = derivatives.mean_loss_and_grad(loss_fn, theta, target_batch)
    if hessian_free:
        d_v = g_s if hessian_free_curvature == "zero" else optax.tree.add(v, g_s)
    else:
        if hessian_weights == "uniform":
            hessian_loss = lambda p: derivatives.mean_loss(loss_fn, p, generic_batch)  # noqa: E731
        else:
            wbar_B = jax.lax.stop_gradient(
                derivatives.normalize_weights(weight_fn(phi, generic_batch))
            )

            def hessian_loss(p: PyTree) -> jax.Array:
                l_B = loss_fn(p, generic_batch)
                return jnp.vdot(wbar_B.astype(l_B.dtype), l_B)

        h_v = derivatives.hvp(hessian_loss, theta, v)
        curvature_v = (
            h_v
            if hessian_reg == 0.0
            else optax.tree.add_scale(optax.tree.scale(1.0 - hessian_reg, h_v), hessian_reg, v)
        )
        d_v = optax.tree.add(curvature_v, g_s)
    metrics = {
        "outer/objective": target_loss,
        "outer/target_loss": target_loss,
        "soba/v_norm": optax.tree.norm(v),
        "soba/v_direction_norm": optax.tree.norm(d_v),
        "soba/v_dot_target_grad": optax.tree.vdot(v, g_s),
    }
    return d_v, metrics


def soba_phi_direction(
    loss_fn: derivatives.LossFn,
    weight_fn: derivatives.WeightFn,
    phi: PyTree,
    v: PyTree,
    theta: PyTree,
    generic_batch: PyTree,
) -> tuple[PyTree, base.Metrics]:
    """d_phi = sum_i (d wbar_i / d phi) <grad l_i(theta), v>, the cross derivative
    d/dphi <grad_theta F(theta, phi), v> (module docstring).

    One jvp of the loss vector along v gives (<grad l_i, v>)_i, one VJP through the
    normalised weights carries it into phi.

    Returns:
      `(d_phi, metrics)`: d_phi shaped like phi; `outer/inner_loss` (F),
      `outer/grad_norm` (||d_phi||), `outer/weight_entropy`, `outer/weight_max`.
    """
    wbar_B, pullback = derivatives.weights_and_pullback(
        weight_fn, phi, generic_batch, normalize=True
    )
    losses_B, b_B = derivatives.loss_jvp(loss_fn, theta, generic_batch, v)
    d_phi = pullback(b_B)
    metrics = {
        "outer/inner_loss": jnp.vdot(wbar_B.astype(losses_B.dtype), losses_B),
        "outer/grad_norm": optax.tree.norm(d_phi),
        **base.weight_metrics(wbar_B),
    }
    return d_phi, metrics


def soba_directions(
    loss_fn: derivatives.LossFn,
    weight_fn: derivatives.WeightFn,
    phi: PyTree,
    v: PyTree,
    theta: PyTree,
    generic_batch: PyTree,
    target_batch: PyTree,
    **options,
) -> tuple[PyTree, PyTree, base.Metrics]:
    """Both SOBA directions at the same v: `(d_v, d_phi, metrics)` of
    `soba_v_direction` and `soba_phi_direction` (`options`: those of the former).

    At a fixed point of v, d_phi is the implicit hypergradient dL_s/dphi. The `soba`
    update does not use this pair: it moves v first and takes d_phi at v_{t+1}.
    """
    d_v, v_metrics = soba_v_direction(
        loss_fn, weight_fn, phi, v, theta, generic_batch, target_batch, **options
    )
    d_phi, phi_metrics = soba_phi_direction(loss_fn, weight_fn, phi, v, theta, generic_batch)
    return d_v, d_phi, {**v_metrics, **phi_metrics}


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
      ValueError: an invalid option (`hessian_weights`, `hessian_free_curvature` not one
        of their values, or `hessian_reg` outside [0, 1]).
    """
    _check_options(hessian_weights, hessian_free_curvature, hessian_reg)
    v_options = dict(
        hessian_free=hessian_free,
        hessian_reg=hessian_reg,
        hessian_weights=hessian_weights,
        hessian_free_curvature=hessian_free_curvature,
    )

    def init(phi: PyTree, theta: PyTree | None = None) -> SobaState:
        if theta is None:
            raise ValueError("soba's init needs theta: init(phi, theta); v is shaped like theta")
        v = optax.tree.zeros_like(theta)
        return SobaState(v, v_tx.init(v), phi_tx.init(phi), jnp.zeros([], jnp.int32))

    def update(phi, outer_state, theta, generic_batch, target_batch, key=None):
        del key
        d_v, v_metrics = soba_v_direction(
            loss_fn, weight_fn, phi, outer_state.v, theta, generic_batch, target_batch, **v_options
        )
        v_updates, v_opt_state = v_tx.update(d_v, outer_state.v_opt_state, outer_state.v)
        v = optax.apply_updates(outer_state.v, v_updates)  # v_{t+1}
        d_phi, phi_metrics = soba_phi_direction(loss_fn, weight_fn, phi, v, theta, generic_batch)
        phi, phi_opt_state = base.apply_phi_update(phi_tx, d_phi, outer_state.phi_opt_state, phi)
        state = SobaState(v, v_opt_state, phi_opt_state, outer_state.count + 1)
        return phi, state, {**v_metrics, **phi_metrics}

    return base.OuterMethod(init, update)
