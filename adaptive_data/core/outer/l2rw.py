"""Learning to reweight (Ren et al. 2018), a reference baseline (docs/algorithms.md, "l2rw").

No weighting model and no state: per example i of a generic batch,

    u_i = -d L_s(theta - eta sum_j eps_j grad l_j(theta)) / d eps_i |_{eps=0}
        = eta <grad l_i(theta), g_s>,            g_s = grad L_s(theta),
    w_i = max(0, u_i) / sum_j max(0, u_j)        (uniform 1/B if every u_i <= 0).

Since eta > 0 only scales u, the weights do not depend on it after normalisation.
The alignments <grad l_i, g_s> come from one jvp of the loss vector along g_s.

How a driver uses it each step: compute `w_B = l2rw_weights(loss_fn, theta,
batch, target_batch, eta=eta)` on the examples it will train on (the b-example
batch, as in Ren et al.; or the big batch B, then draw b examples with probability
w, or keep the top-b) and take the inner step on sum_i w_i l_i(theta) (weights
as constants, `jax.lax.stop_gradient` is already applied).
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from adaptive_data.core import derivatives

PyTree = Any


def l2rw_weights(
    loss_fn: derivatives.LossFn,
    theta: PyTree,
    generic_batch: PyTree,
    target_batch: PyTree,
    *,
    eta: float,
) -> jax.Array:
    """Learning-to-reweight weights of the examples of `generic_batch`.

    Args:
      loss_fn: (theta, batch) -> float[B] per-example losses.
      theta: model parameters.
      generic_batch: B generic examples to weight.
      target_batch: a batch of S_train (L_s is its mean loss).
      eta: virtual step size (> 0; it cancels in the normalisation).

    Returns:
      float[B] non-negative weights summing to 1 (see the module docstring).
    """
    if eta <= 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    g_s = derivatives.mean_gradient(loss_fn, theta, target_batch)
    _, a_B = derivatives.loss_jvp(loss_fn, theta, generic_batch, g_s)
    u_B = jnp.maximum(eta * a_B, 0.0)
    total = jnp.sum(u_B)
    uniform_B = jnp.full_like(u_B, 1.0 / u_B.shape[0])
    w_B = jnp.where(total > 0, u_B / jnp.where(total > 0, total, 1.0), uniform_B)
    return jax.lax.stop_gradient(w_B)


def l2rw(
    loss_fn: derivatives.LossFn, *, eta: float
) -> Callable[[PyTree, PyTree, PyTree], jax.Array]:
    """`(theta, generic_batch, target_batch) -> float[B]` weights (`l2rw_weights`)."""
    if eta <= 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    return functools.partial(l2rw_weights, loss_fn, eta=eta)
