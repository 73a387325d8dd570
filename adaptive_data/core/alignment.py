"""Exact per-example gradient alignment a_i = <grad l(x_i; theta), g_s> (docs/algorithms.md,
"align_filter").

Three ways to compute the same vector a_B, which must agree:

- "vmap":    per-example gradients, `jax.vmap(jax.grad(l))`, in chunks (memory
             chunk * |theta|); the only one that also gives ||grad l_i|| (cosines).
- "jvp":     one forward-mode pass: a_B is the directional derivative of the loss
             vector l_B(theta) along the direction; no backward pass at all.
- "weights": reverse-over-reverse: a_B = d/d eps <grad_theta sum_i eps_i l_i, d> at
             eps = 1 (the weight-gradient trick that ANOGRAD relies on).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data.core import tree as tree_lib
from adaptive_data.core.derivatives import mean_gradient

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]  # (params, batch) -> float32[B]

METHODS = ("vmap", "jvp", "weights")

__all__ = ["METHODS", "batch_size", "mean_gradient", "per_example_alignment"]


def batch_size(batch: PyTree) -> int:
    """Common leading dimension B of every leaf of `batch` (static)."""
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every batch leaf needs the same leading dimension B, got {sizes}")
    return sizes.pop()


def per_example_alignment(
    loss_fn: LossFn,
    params: PyTree,
    batch: PyTree,
    direction: PyTree,
    *,
    method: str = "jvp",
    chunk_size: int | None = None,
    param_filter: str | None = None,
    normalize: bool = False,
) -> jax.Array:
    """Per-example alignments a_i = <grad_theta l(x_i; theta), direction>.

    Args:
      loss_fn: (params, batch) -> float32[B] per-example losses; it must treat
        examples independently (no batch statistics), as every method relies on it.
      params: model parameters theta (any pytree).
      batch: pytree of arrays with a common leading dimension B.
      direction: pytree shaped like `params`, e.g. the target gradient g_s.
      method: "vmap", "jvp" or "weights" (see the module docstring).
      chunk_size: examples per chunk (all methods): the batch is cut into
        B // chunk_size chunks run one after the other with `jax.lax.map`, plus
        one smaller call for the B % chunk_size remaining examples (no padding,
        no wasted work). None (or >= B): the whole batch at once. Peak memory of
        "vmap" is about chunk_size * |theta|.
      param_filter: regex searched (`re.search`) in the `/`-joined parameter
        paths (e.g. "decoder/block_3/.*"); only matching leaves count, in the
        dot product and in the norms. Non-matching leaves are held fixed and not
        differentiated at all (identical to zeroing them in `direction` and in
        the per-example gradients, but cheaper).
      normalize: return cosines a_i / (||g_i|| ||direction||) instead; only
        with method="vmap". A zero norm gives a cosine of 0.

    Returns:
      float32[B] alignments (or cosines).

    Raises:
      ValueError: unknown method, normalize without "vmap", a filter that matches
        no parameter, mismatched `direction` / `params` structures, or a bad
        chunk size.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {METHODS}")
    if normalize and method != "vmap":
        raise ValueError(
            f"normalize=True needs per-example gradient norms, which method="
            f'{method!r} does not compute; use method="vmap"'
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    if jax.tree.structure(direction) != jax.tree.structure(params):
        raise ValueError(
            "direction must have the structure of params: "
            f"{jax.tree.structure(direction)} vs {jax.tree.structure(params)}"
        )
    b_total = batch_size(batch)

    # Restrict to the filtered leaves: differentiate wrt `sub` only.
    sub_loss_fn, sub_params, sub_direction = _restrict(loss_fn, params, direction, param_filter)
    sub_direction = jax.tree.map(lambda d, p: d.astype(p.dtype), sub_direction, sub_params)

    if method == "vmap":
        chunk_fn = _vmap_chunk_fn(sub_loss_fn, sub_params, sub_direction, normalize)
    elif method == "jvp":
        chunk_fn = _jvp_chunk_fn(sub_loss_fn, sub_params, sub_direction)
    else:
        chunk_fn = _weights_chunk_fn(sub_loss_fn, sub_params, sub_direction)

    out_B = _map_in_chunks(chunk_fn, batch, b_total, chunk_size)
    if normalize:
        dots_B, grad_norms_B = out_B
        direction_norm = optax.tree.norm(sub_direction)
        return _safe_div(_safe_div(dots_B, grad_norms_B), direction_norm)
    return out_B


# ----------------------------------------------------------------------------
# The three methods, each as a function of one chunk of c examples -> [c].
# ----------------------------------------------------------------------------


def _vmap_chunk_fn(loss_fn, params, direction, normalize):
    """Chunk -> a_c (and ||g_i||_c if normalize) from per-example gradients."""

    def one_example(example):
        example_1 = jax.tree.map(lambda x: x[None], example)
        grad_i = jax.grad(lambda p: _single_loss(loss_fn, p, example_1))(params)
        dot_i = optax.tree.vdot(grad_i, direction)
        if normalize:
            return dot_i, optax.tree.norm(grad_i)
        return dot_i

    return jax.vmap(one_example)


def _jvp_chunk_fn(loss_fn, params, direction):
    """Chunk -> a_c = d/dt l_c(theta + t d) at t = 0 (one forward-mode pass)."""

    def chunk_fn(chunk):
        _, dots_c = jax.jvp(lambda p: loss_fn(p, chunk), (params,), (direction,))
        return dots_c

    return chunk_fn


def _weights_chunk_fn(loss_fn, params, direction):
    """Chunk -> a_c = grad_eps <grad_theta sum_i eps_i l_i, d> at eps = 1."""

    def chunk_fn(chunk):
        def aligned_weighted_grad(eps_c):
            grad = jax.grad(lambda p: jnp.sum(eps_c * loss_fn(p, chunk)))(params)
            return optax.tree.vdot(grad, direction)

        eps_c = jnp.ones((batch_size(chunk),), _loss_dtype(params))
        return jax.grad(aligned_weighted_grad)(eps_c)

    return chunk_fn


# ----------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------


def _single_loss(loss_fn, params, example_1):
    """Scalar loss of a batch of one example."""
    losses = loss_fn(params, example_1)
    if losses.shape != (1,):
        raise ValueError(f"loss_fn must return shape [B], got {losses.shape} for B=1")
    return losses[0]


def _loss_dtype(params):
    leaves = jax.tree.leaves(params)
    return jnp.result_type(*leaves) if leaves else jnp.float32


def _restrict(loss_fn, params, direction, param_filter):
    """Returns (loss_fn over the kept leaves, kept params, kept direction).

    With no filter, everything is kept and the inputs are returned unchanged.
    The kept leaves are a list in `jax.tree.leaves(params)` order.
    """
    if param_filter is None:
        return loss_fn, params, direction
    keep_mask = jax.tree.leaves(tree_lib.path_mask(params, param_filter))
    param_leaves, treedef = jax.tree.flatten(params)
    direction_leaves = jax.tree.leaves(direction)
    kept = [i for i, keep in enumerate(keep_mask) if keep]

    def sub_loss_fn(sub_params, batch):
        leaves = list(param_leaves)
        for i, leaf in zip(kept, sub_params):
            leaves[i] = leaf
        return loss_fn(jax.tree.unflatten(treedef, leaves), batch)

    return (
        sub_loss_fn,
        [param_leaves[i] for i in kept],
        [direction_leaves[i] for i in kept],
    )


def _map_in_chunks(chunk_fn, batch, b_total, chunk_size):
    """Applies chunk_fn (chunk of c examples -> pytree of [c] arrays) over B.

    B = n * c + r: the n full chunks go through `jax.lax.map` (sequential), the
    r remaining examples through one more direct call; results are concatenated.
    """
    if chunk_size is None or chunk_size >= b_total:
        return chunk_fn(batch)
    n_chunks, remainder = divmod(b_total, chunk_size)
    n_full = n_chunks * chunk_size
    chunks = jax.tree.map(lambda x: x[:n_full].reshape((n_chunks, chunk_size) + x.shape[1:]), batch)
    out = jax.lax.map(chunk_fn, chunks)
    out = jax.tree.map(lambda y: y.reshape((n_full,) + y.shape[2:]), out)
    if remainder:
        rest = chunk_fn(jax.tree.map(lambda x: x[n_full:], batch))
        out = jax.tree.map(lambda y, z: jnp.concatenate([y, z]), out, rest)
    return out


def _safe_div(num, den):
    """num / den, and 0 where den == 0."""
    nonzero = den > 0
    return jnp.where(nonzero, num / jnp.where(nonzero, den, 1.0), 0.0)
