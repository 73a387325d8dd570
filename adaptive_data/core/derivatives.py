"""Matrix-free derivative helpers for the bilevel methods (docs/algorithms.md).

Every product with a Jacobian or Hessian here is computed with one forward or
reverse pass; nothing materialises per-example gradients or a dense Hessian.
With `l_B(theta)` the vector of per-example losses and `J = d l_B / d theta`
(B x |theta|):

- `loss_jvp`:      J u   = (<grad l_i, u>)_i, one forward-mode pass (a_i when u = g_s).
- `weighted_grad`: J^T w = sum_i w_i grad l_i, one reverse pass (g_w).
- `hvp`:           H v, forward-over-reverse (`jax.jvp` of `jax.grad`).
- `mean_loss_and_grad`: L and grad L of a batch's mean loss (L_s and g_s).
- `linearize_losses`: one linearisation of l_B, then any number of J u and J^T w.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
Batch = Any  # dict of arrays with a common leading dimension B
LossFn = Callable[[PyTree, Batch], jax.Array]  # (theta, batch) -> float32[B]
WeightFn = Callable[[PyTree, Batch], jax.Array]  # (phi, batch) -> float32[B], > 0


def hvp(f: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product H v of a scalar function, forward-over-reverse.

    Args:
      f: scalar function of `params`.
      params: point theta at which the Hessian H = d2f/dtheta2 is taken.
      v: pytree shaped like `params`.

    Returns:
      H v, a pytree shaped like `params` (about the cost of two gradients).
    """
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def grad_and_hvp(
    f: Callable[[PyTree], Any], params: PyTree, v: PyTree, *, has_aux: bool = False
) -> tuple[Any, Any]:
    """Gradient and Hessian-vector product from a single forward-over-reverse pass.

    Args:
      f: scalar function of `params`; with `has_aux`, returns `(scalar, aux)` and
        the tangent of `aux` along `v` is returned too (e.g. aux = l_B gives J v).
      params: point theta.
      v: pytree shaped like `params`.

    Returns:
      `(grad f, H v)`; with `has_aux`: `((grad f, aux), (H v, d aux . v))`.
    """
    return jax.jvp(jax.grad(f, has_aux=has_aux), (params,), (v,))


def loss_jvp(
    loss_fn: LossFn, theta: PyTree, batch: Batch, tangent: PyTree
) -> tuple[jax.Array, jax.Array]:
    """Per-example losses and their directional derivatives along `tangent`.

    Args:
      loss_fn: (theta, batch) -> float[B] per-example losses l_B.
      theta: model parameters.
      batch: pytree with leading dimension B.
      tangent: pytree shaped like `theta` (e.g. the target gradient g_s).

    Returns:
      `(l_B, a_B)` with a_i = <grad_theta l_i(theta), tangent> (= J u), computed by
      one `jax.jvp` (no backward pass over the batch).
    """
    return jax.jvp(lambda p: loss_fn(p, batch), (theta,), (tangent,))


def weighted_grad(
    loss_fn: LossFn, theta: PyTree, batch: Batch, w_B: jax.Array
) -> tuple[jax.Array, PyTree]:
    """Per-example losses and g_w = sum_i w_i grad_theta l_i(theta) (= J^T w).

    Args:
      loss_fn: (theta, batch) -> float[B] per-example losses.
      theta: model parameters.
      batch: pytree with leading dimension B.
      w_B: float[B] weights (treated as constants).

    Returns:
      `(l_B, g_w)` with g_w shaped like `theta`, from one reverse pass.
    """
    losses_B, vjp_fn = jax.vjp(lambda p: loss_fn(p, batch), theta)
    (g_w,) = vjp_fn(w_B.astype(losses_B.dtype))
    return losses_B, g_w


def mean_loss(loss_fn: LossFn, theta: PyTree, batch: Batch) -> jax.Array:
    """Mean loss L(theta) = (1/B) sum_i l_i(theta) of a batch (e.g. the target loss L_s)."""
    return jnp.mean(loss_fn(theta, batch))


def mean_loss_and_grad(loss_fn: LossFn, theta: PyTree, batch: Batch) -> tuple[jax.Array, PyTree]:
    """Mean loss L(theta) = (1/B) sum_i l_i(theta) and its gradient, from one reverse pass:
    the one way the library computes the target loss and gradient (L_s, g_s).

    Returns:
      `(L float[], grad L)`, the gradient shaped like `theta`.
    """
    return jax.value_and_grad(lambda p: mean_loss(loss_fn, p, batch))(theta)


def mean_gradient(loss_fn: LossFn, theta: PyTree, batch: Batch) -> PyTree:
    """grad_theta (1/B) sum_i l_i(theta) (e.g. g_s): `mean_loss_and_grad` without the loss."""
    return mean_loss_and_grad(loss_fn, theta, batch)[1]


def linearize_losses(
    loss_fn: LossFn, theta: PyTree, batch: Batch
) -> tuple[jax.Array, Callable[[PyTree], jax.Array], Callable[[jax.Array], PyTree]]:
    """Linearises the loss vector once, for several J u and J^T w products.

    Args:
      loss_fn: (theta, batch) -> float[B] per-example losses l_B.
      theta: model parameters.
      batch: pytree with leading dimension B.

    Returns:
      `(l_B, jvp_fn, vjp_fn)`: `jvp_fn(u) = J u` (float[B], a_i = <grad l_i, u>)
      and `vjp_fn(w_B) = J^T w = sum_i w_i grad l_i` (shaped like theta). The
      forward pass runs once; each product then costs one linear pass.
    """
    losses_B, jvp_fn = jax.linearize(lambda p: loss_fn(p, batch), theta)
    transpose_fn = jax.linear_transpose(jvp_fn, theta)

    def vjp_fn(w_B: jax.Array) -> PyTree:
        return transpose_fn(w_B.astype(losses_B.dtype))[0]

    return losses_B, jvp_fn, vjp_fn


def weights_and_pullback(
    weight_fn: WeightFn, phi: PyTree, batch: Batch, *, normalize: bool = False
) -> tuple[jax.Array, Callable[[jax.Array], PyTree]]:
    """Weights on a batch and the chain rule from d/dw into phi.

    Args:
      weight_fn: (phi, batch) -> float[B] positive weights w_B.
      phi: weighting model parameters.
      batch: pytree with leading dimension B.
      normalize: return (and differentiate) w_i / sum_j w_j instead of w_i.

    Returns:
      `(w_B, pullback)` with `pullback(c_B) = sum_i c_i d w_i / d phi`, a pytree
      shaped like phi (c_B = gradient of an objective with respect to w_B).
    """

    def weights(p: PyTree) -> jax.Array:
        w_B = weight_fn(p, batch)
        return normalize_weights(w_B) if normalize else w_B

    w_B, vjp_fn = jax.vjp(weights, phi)

    def pullback(c_B: jax.Array) -> PyTree:
        return vjp_fn(c_B.astype(w_B.dtype))[0]

    return w_B, pullback


def normalize_weights(w_B: jax.Array) -> jax.Array:
    """w_i / sum_j w_j on the batch (w_B > 0 assumed, as weight_fn guarantees)."""
    return w_B / jnp.sum(w_B)


def weight_entropy(w_B: jax.Array) -> jax.Array:
    """Entropy -sum_i p_i log p_i (nats) of p = w / sum w; log B for uniform weights."""
    p_B = normalize_weights(w_B)
    return -jnp.sum(jnp.where(p_B > 0, p_B * jnp.log(jnp.where(p_B > 0, p_B, 1.0)), 0.0))
