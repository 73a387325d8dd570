"""The one training step of every method: ``train_step(state, batches, *, method, ...)``.

Pure and module-level; ``jit_train_step`` binds it to one ``Method`` and jits it once
(donating the state, with the state's shardings). In one step, with (theta_t, phi_t):

1. selecting methods score the big batch B with phi_t (or theta_t) and draw b examples
   (``core.selection``); before the selection warm-up they take the first b of the
   shuffled big batch, i.e. a uniform sample;
2. the outer update, when scheduled, moves phi_t -> phi_{t+1} at theta_t on the generic
   batch ``method.outer_batch`` and the ``target`` batch (always a ``target_train``
   batch);
3. the inner update theta_t -> theta_{t+1} descends
   ``sum_s loss_weights[s] * sum_i w_i l(x_i)`` over the batches of the streams s, with
   the selection weights w (1/b unless the strategy weighs, e.g. L2RW's).

The selected batch is constrained to the data-parallel sharding of the mesh in context
(``jax.set_mesh``); without a mesh the constraint is skipped (one device).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from adaptive_data import sharding
from adaptive_data import train_state as ts
from adaptive_data.core import mixture, selection
from adaptive_data.methods.types import Method, OuterState

SAMPLING_STRATEGIES = ("sample", "sample_with_replacement")


def selection_metrics(big, indices_b, target_domain_id: int | None, num_domains: int):
    """Shares of the target domain in the selected b vs the big batch, per-domain shares."""
    selected_domain = big["domain"][indices_b]
    metrics = {
        "select/domain_share": (
            mixture.domain_counts(selected_domain, num_domains) / selected_domain.shape[0]
        )
    }
    if target_domain_id is not None:
        metrics["select/target_share"] = jnp.mean(selected_domain == target_domain_id)
        metrics["select/pool_target_share"] = jnp.mean(big["domain"] == target_domain_id)
    return metrics


def sampling_metrics(logits_B):
    """Entropy and effective sample size (as a fraction of B) of softmax(logits)."""
    p_B = jax.nn.softmax(logits_B)
    entropy = -jnp.sum(jnp.where(p_B > 0, p_B * jnp.log(jnp.maximum(p_B, 1e-30)), 0.0))
    ess = 1.0 / jnp.sum(p_B**2)
    return {"select/weight_entropy": entropy, "select/ess_fraction": ess / logits_B.shape[0]}


def _constrain_to_batch_sharding(batch):
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return batch
    return jax.lax.with_sharding_constraint(batch, P(sharding.BATCH_AXES))


def _select(method: Method, state: ts.TrainState, big, target, key, active: bool):
    """(indices int32[b], weights float[b], metrics) of the examples the model trains on."""
    b = method.batch_size
    metrics = {"select/active": jnp.float32(active)}
    if not active:
        return jnp.arange(b), jnp.full((b,), 1.0 / b), metrics
    scores_B = method.score(state.params, state.method_state, big, target, key)
    indices_b, weights_b = selection.select(
        key, scores_B, b, strategy=method.strategy, temperature=method.temperature
    )
    metrics.update(
        {
            "select/score_selected": jnp.mean(scores_B[indices_b]),
            "select/score_all": jnp.mean(scores_B),
        }
    )
    if method.strategy in SAMPLING_STRATEGIES:
        metrics.update(sampling_metrics(scores_B / method.temperature))
    if method.selected_metrics is not None:
        metrics.update(method.selected_metrics(big, indices_b, state.method_state))
    return indices_b, weights_b, metrics


def subsample(batch, fraction: float, key):
    """A uniform random ``ceil(fraction * n)`` of the n examples of ``batch``, without
    replacement (the whole batch, unpermuted, at fraction 1)."""
    n = jax.tree.leaves(batch)[0].shape[0]
    m = math.ceil(fraction * n)
    if m >= n:
        return batch
    return selection.gather(batch, jax.random.permutation(key, n)[:m])


def _outer_update(method: Method, state: ts.TrainState, big, selected, target, key):
    generic = {
        "big": big,
        "selected": selected,
        "uniform": selection.gather(big, jnp.arange(method.batch_size)),
    }[method.outer_batch]
    if method.outer_batch_fraction < 1.0:
        key, generic_key, target_key = jax.random.split(key, 3)
        generic = subsample(generic, method.outer_batch_fraction, generic_key)
        target = subsample(target, method.outer_batch_fraction, target_key)
    method_state: OuterState = state.method_state
    phi, outer_state, metrics = method.outer.update(
        method_state.phi, method_state.outer, state.params, generic, target, key
    )
    return OuterState(phi, outer_state), metrics


def train_step(
    state: ts.TrainState,
    batches: dict[str, Any],
    *,
    method: Method,
    active: bool,
    outer_update: bool,
) -> tuple[ts.TrainState, dict[str, Any]]:
    """One update of ``method`` (see the module docstring); ``active`` and
    ``outer_update`` are static (``method.flags(step)``)."""
    select_key, dropout_key, outer_key = jax.random.split(state.step_key(), 3)
    metrics: dict[str, Any] = {}
    weighted = {s: (batches[s], None) for s in method.loss_weights}  # (batch, weights)
    if method.selects:
        big = batches["generic"]
        indices_b, weights_b, select_metrics = _select(
            method, state, big, batches["target"], select_key, active
        )
        selected = _constrain_to_batch_sharding(selection.gather(big, indices_b))
        weighted["generic"] = (selected, weights_b)
        metrics.update(select_metrics)
        metrics.update(
            selection_metrics(big, indices_b, method.target_domain_id, method.num_domains)
        )
    dropout_keys = dict(zip(weighted, jax.random.split(dropout_key, len(weighted))))

    def objective(params):
        losses = {}
        for s, (batch, weights) in weighted.items():
            l_n = method.loss_fn(params, batch, dropout_keys[s])
            losses[s] = jnp.mean(l_n) if weights is None else jnp.sum(weights * l_n)
        return sum(method.loss_weights[s] * losses[s] for s in weighted), losses

    (loss, losses), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    metrics.update(
        {
            "train/loss": loss,
            "train/grad_norm": optax.tree.norm(grads),
            "train/lr": method.learning_rate(state.step),
        }
    )
    if len(losses) > 1:
        metrics.update({f"train/{s}_loss": v for s, v in losses.items()})

    method_state = state.method_state
    if method.outer is not None:
        metrics["outer/updated"] = jnp.float32(outer_update)
        if outer_update:
            method_state, outer_metrics = _outer_update(
                method,
                state,
                batches["generic"],
                weighted["generic"][0],
                batches["target"],
                outer_key,
            )
            metrics.update(outer_metrics)
    state = ts.apply_gradients(state, grads, method.tx, method_state=method_state)
    metrics["train/param_norm"] = optax.tree.norm(state.params)
    return state, metrics


def jit_train_step(method: Method, state_sharding: Any = None):
    """``train_step`` bound to ``method``, jitted once: ``step(state, batches, *, active,
    outer_update)``; the state is donated, and laid out as ``state_sharding`` when given.

    Call it inside ``jax.set_mesh(mesh)`` on several devices so that the selected batch
    is split over the mesh like every other batch.
    """
    out_shardings = None if state_sharding is None else (state_sharding, None)
    return jax.jit(
        functools.partial(train_step, method=method),
        static_argnames=("active", "outer_update"),
        donate_argnums=0,
        out_shardings=out_shardings,
    )
