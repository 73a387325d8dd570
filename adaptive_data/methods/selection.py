"""Data-selection methods: big batch, cheap scores, small gradient batch (ALGORITHMS.md 3-6).

Every step reads a generic big batch of B = k * b examples (``select.downsampling`` = k,
``train.batch_size`` = b) and a target batch. A method scores the big batch, draws b
examples (``core.selection``), and the model computes gradients on those b only:
``theta <- tx(grad sum_i w_i l(x_i))`` with the selection weights w (1/b except for
L2RW). Before ``select.warmup_steps`` the b examples are the first b of the (shuffled)
big batch, i.e. uniform, and no outer update runs. Methods:

- ``align_filter``: exact per-example alignment <grad l_i, g_s> (the oracle filter).
- ``anograd``, ``soba``, ``dds``: a byte-CNN weighting model w(x; phi) scores B; b are
  sampled by softmax(logits / temperature); phi is updated every ``outer.every`` steps
  on a uniform sub-sample of b examples of B (DDS: on the b drawn by the weights, whose
  weights it renormalises for its look-ahead step) (``core.outer``).
- ``l2rw``: learning-to-reweight weights on B, b drawn among the positive ones.
- ``domain_mixture``: mixture weights alpha over domains; b drawn from B by importance
  resampling so that the selected batch follows alpha; alpha updated on B.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data import train_state as ts
from adaptive_data.core import alignment, mixture, outer, selection
from adaptive_data.methods.types import Method
from adaptive_data.models import transformer, weighting

# Default way of drawing b of B for each method (config.select.strategy overrides).
DEFAULT_STRATEGY = {"align_filter": "top", "anograd": "sample", "soba": "sample",
                    "dds": "sample", "l2rw": "positive", "domain_mixture": "sample"}


def _optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    optimizers = {"adam": optax.adam, "sgd": optax.sgd}
    if name not in optimizers:
        raise ValueError(f"Unknown optimizer {name!r} in config.outer; use one of "
                         f"{sorted(optimizers)}.")
    return optimizers[name](learning_rate)


def selection_metrics(big, indices_b, target_domain_id: int | None, num_domains: int):
    """Shares of the target domain in the selected b vs the big batch, per-domain shares."""
    selected_domain = big["domain"][indices_b]
    metrics = {"select/domain_share": (mixture.domain_counts(selected_domain, num_domains)
                                       / selected_domain.shape[0])}
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


class _Scorer:
    """A method's scoring rule: how to turn (state, big batch, target batch) into scores."""

    def __init__(self, score: Callable, *, outer_method=None, outer_batch: str = "uniform",
                 init: Callable | None = None, report_sampling: bool = False):
        self.score = score  # (state, big, target, key) -> scores_B
        self.outer_method = outer_method
        # Generic batch of the outer update: "uniform" (b of B), "selected" (the b drawn by
        # the weights, as DDS's look-ahead step needs) or "big" (all of B).
        self.outer_batch = outer_batch
        self.init = init  # (key, params) -> method_state
        self.report_sampling = report_sampling


def _selection_step(config, model, tx, scorer: _Scorer, *, strategy: str,
                    target_domain_id: int | None, num_domains: int, shard_batch):
    """``step(state, batches, *, active, outer_update)``; the two flags are static.

    ``active``: score the big batch and select by the scores (else the first b, uniform);
    ``outer_update``: also run the outer update. The driver picks them from the step
    number with ``phase`` (a host-side schedule, so no step pays for a ``lax.cond``).
    """
    b = int(config.train.batch_size)
    temperature = float(config.select.temperature)
    train_loss = transformer.make_loss_fn(model, deterministic=False)
    schedule = ts.learning_rate_schedule(config.train)

    def step(state: ts.TrainState, batches, *, active: bool, outer_update: bool):
        big, target = batches["generic"], batches["target"]
        select_key, dropout_key, outer_key = jax.random.split(state.step_key(), 3)
        metrics = {"select/active": jnp.float32(active)}
        if active:
            scores_B = scorer.score(state, big, target, select_key)
            indices_b, weights_b = selection.select(select_key, scores_B, b, strategy=strategy,
                                                    temperature=temperature)
            metrics.update({"select/score_selected": jnp.mean(scores_B[indices_b]),
                            "select/score_all": jnp.mean(scores_B)})
            if scorer.report_sampling:
                metrics.update(sampling_metrics(scores_B / temperature))
        else:
            indices_b, weights_b = jnp.arange(b), jnp.full((b,), 1.0 / b)
        selected = shard_batch(selection.gather(big, indices_b))

        def inner_objective(params):
            return jnp.sum(weights_b * train_loss(params, selected, dropout_key))

        loss, grads = jax.value_and_grad(inner_objective)(state.params)
        metrics.update({"train/loss": loss, "train/grad_norm": optax.tree.norm(grads),
                        "train/lr": schedule(state.step)})
        metrics.update(selection_metrics(big, indices_b, target_domain_id, num_domains))

        method_state = state.method_state
        if scorer.outer_method is not None:
            metrics["outer/updated"] = jnp.float32(outer_update)
            if outer_update:
                outer_batch = {"big": big, "selected": selected,
                               "uniform": selection.gather(big, jnp.arange(b))}[
                                   scorer.outer_batch]
                phi, outer_state, outer_metrics = scorer.outer_method.update(
                    method_state["phi"], method_state["outer"], state.params, outer_batch,
                    target, outer_key)
                method_state = {"phi": phi, "outer": outer_state}
                metrics.update(outer_metrics)
        return ts.apply_gradients(state, grads, tx, method_state=method_state), metrics

    return step


def selection_phase(config, step: int) -> dict[str, bool]:
    """Static flags of model update ``step`` (0-based): selection on after the warm-up,
    outer update every ``outer.every`` steps after it."""
    active = step >= int(config.select.warmup_steps)
    return {"active": active, "outer_update": active and step % int(config.outer.every) == 0}


# ---------------------------------------------------------------------------- scorers


def _align_filter_scorer(config, model):
    loss_fn = transformer.make_loss_fn(model)
    f = config.filter

    def score(state, big, target, key):
        del key
        target_grad = alignment.mean_gradient(loss_fn, state.params, target)
        return alignment.per_example_alignment(
            loss_fn, state.params, big, target_grad, method=f.method, chunk_size=f.chunk_size,
            param_filter=f.param_filter or None, normalize=f.normalize)

    return _Scorer(score)


def _amortized_scorer(config, model, name: str):
    loss_fn = transformer.make_loss_fn(model)
    wmodel = weighting.from_config(config.weighting)
    o = config.outer

    def weight_fn(phi, batch):
        return weighting.weighting_forward(wmodel, phi, batch["inputs"], mode="positive")

    phi_tx = _optimizer(o.optimizer, o.learning_rate)
    if name == "anograd":
        outer_method = outer.anograd(loss_fn, weight_fn, phi_tx,
                                     normalization=o.anograd_normalization)
    elif name == "soba":
        outer_method = outer.soba(loss_fn, weight_fn, phi_tx,
                                  _optimizer(o.soba_v_optimizer, o.soba_v_learning_rate),
                                  hessian_free=o.soba_hessian_free,
                                  hessian_reg=o.soba_hessian_reg)
    else:
        eta = config.train.learning_rate if o.dds_eta is None else o.dds_eta
        outer_method = outer.dds(loss_fn, weight_fn, phi_tx, eta=float(eta))

    def init(key, params):
        dummy = jnp.zeros((1, config.model.max_length), jnp.int32)
        phi = weighting.init_weighting_params(key, wmodel, dummy)
        return {"phi": phi, "outer": outer_method.init(phi, params)}

    def score(state, big, target, key):
        del target, key
        return weighting.weighting_forward(wmodel, state.method_state["phi"], big["inputs"],
                                           mode="logits")

    return _Scorer(score, outer_method=outer_method, init=init, report_sampling=True,
                   outer_batch="selected" if name == "dds" else "uniform")


def _l2rw_scorer(config, model):
    loss_fn = transformer.make_loss_fn(model)
    eta = float(config.train.learning_rate if config.outer.dds_eta is None
                else config.outer.dds_eta)

    def score(state, big, target, key):
        del key
        return outer.l2rw_weights(loss_fn, state.params, big, target, eta=eta)

    return _Scorer(score)


def _mixture_scorer(config, model, num_domains: int):
    loss_fn = transformer.make_loss_fn(model)
    m = config.mixture
    phi_tx = (_optimizer(config.outer.optimizer, m.step_size)
              if m.update_rule == "hypergradient" else None)
    outer_method = mixture.mixture(loss_fn, num_domains, update=m.update_rule,
                                   step_size=m.step_size, smoothing=m.smoothing, phi_tx=phi_tx,
                                   objective=m.objective)

    def init(key, params):
        del key
        phi = jnp.zeros((num_domains,), jnp.float32)
        return {"phi": phi, "outer": outer_method.init(phi, params)}

    def score(state, big, target, key):
        del target, key
        counts_K = mixture.domain_counts(big["domain"], num_domains)
        share_K = jnp.maximum(counts_K, 1.0) / big["domain"].shape[0]
        return mixture.mixture_resampling_logits(state.method_state["outer"].alpha_K, share_K,
                                                 big["domain"])

    return _Scorer(score, outer_method=outer_method, outer_batch="big", init=init)


def build(config, *, model, tx, corpus, shard_batch) -> Method:
    """The Method of a data-selection ``config.method`` (see the module docstring)."""
    name = config.method
    num_domains = len(corpus.domains)
    target_domain_id = (corpus.domain_id(corpus.target_domain)
                        if corpus.target_domain in corpus.domains else None)
    if name == "align_filter":
        scorer = _align_filter_scorer(config, model)
    elif name in ("anograd", "soba", "dds"):
        scorer = _amortized_scorer(config, model, name)
    elif name == "l2rw":
        scorer = _l2rw_scorer(config, model)
    elif name == "domain_mixture":
        scorer = _mixture_scorer(config, model, num_domains)
    else:
        raise ValueError(f"Unknown selection method {name!r}.")
    strategy = config.select.strategy or DEFAULT_STRATEGY[name]
    if strategy not in selection.STRATEGIES:
        raise ValueError(f"Unknown config.select.strategy={strategy!r}; choose one of "
                         f"{selection.STRATEGIES}.")
    k = int(config.select.downsampling)
    if k < 1:
        raise ValueError(f"config.select.downsampling={k} must be >= 1.")
    big_batch = k * int(config.train.batch_size)
    step = _selection_step(config, model, tx, scorer, strategy=strategy,
                           target_domain_id=target_domain_id, num_domains=num_domains,
                           shard_batch=shard_batch)
    extra: dict[str, Any] = {}
    if scorer.init is not None:
        extra["init_method_state"] = scorer.init
    return Method(name=name,
                  streams={"generic": ("generic_train", big_batch),
                           "target": ("target_train", config.train.target_batch_size)},
                  step=step, phase=functools.partial(selection_phase, config), **extra)
