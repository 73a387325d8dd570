"""The registry of training methods: ``METHODS[name](config, context) -> Method``.

Every list of methods in the library (``config.method`` validation, the paper config,
benchmarks, sweeps, tests, the README's table) derives from ``METHODS``. Each entry is a
``MethodSpec``: a constructor plus what the tables show (a one-line summary, and what
scores the big batch). The maths of each method is in docs/algorithms.md; each method's
settings are its own config block (``config.<name>``), shared selection settings are in
``config.select`` and the weighting model's optimiser in ``config.outer``. ``build``
checks the whole config first (``adaptive_data.validation.validate_config``), so the
constructors read their settings without checking them again.

Adding a method with a weighting model takes its core module (an ``OuterMethod``), one
``weighting_method`` entry below, its config block, the ``RULES`` of its settings in
``adaptive_data/validation.py`` and its tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data import checkpoint as ckpt
from adaptive_data import train_state as ts
from adaptive_data.core import alignment, dsir, mixture
from adaptive_data.core.outer.anograd import anograd
from adaptive_data.core.outer.base import OuterMethod
from adaptive_data.core.outer.classifier import classifier
from adaptive_data.core.outer.dds import dds
from adaptive_data.core.outer.l2rw import l2rw_weights
from adaptive_data.core.outer.soba import soba
from adaptive_data.methods.types import Method, OuterState, ReferenceModels
from adaptive_data.models import transformer, weighting

# What scores the big batch (``MethodSpec.scorer``), from cheapest to dearest per example.
SCORERS = ("none", "domain", "ngram", "weighting_model", "lm_forward", "lm_gradient")
# Optimisers of ``config.outer.optimizer`` and ``config.soba.v_optimizer``.
OPTIMIZERS = ("adam", "sgd")
# Generic batches of DDS's look-ahead (``config.dds.lookahead_batch``).
DDS_LOOKAHEAD_BATCHES = ("uniform", "selected")


@dataclasses.dataclass(frozen=True)
class MethodContext:
    """What a constructor needs besides the config: the LM, its optimiser, the domains."""

    model: Any  # transformer.TransformerLM
    tx: optax.GradientTransformation
    num_domains: int
    target_domain_id: int | None


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registry entry: ``spec(config, context) -> Method``, with table metadata."""

    build: Callable[[Any, MethodContext], Method]
    summary: str
    scorer: str = "none"

    def __call__(self, config, context: MethodContext) -> Method:
        return self.build(config, context)


# ------------------------------------------------------------------------- helpers


def _optimizer(name: str, learning_rate) -> optax.GradientTransformation:
    """The optimiser ``name`` (one of ``OPTIMIZERS``: adam | sgd) at ``learning_rate``."""
    return optax.adam(learning_rate) if name == "adam" else optax.sgd(learning_rate)


def _common(config, context: MethodContext, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "batch_size": int(config.train.batch_size),
        "loss_fn": transformer.make_loss_fn(context.model, deterministic=False),
        "tx": context.tx,
        "learning_rate": ts.learning_rate_schedule(config.train),
        "num_domains": context.num_domains,
        "target_domain_id": context.target_domain_id,
        "keep_best": bool(config.checkpoint.keep_best),
    }


def _supervised(
    config, context: MethodContext, name: str, streams, loss_weights, **fields
) -> Method:
    common = _common(config, context, name)
    common["keep_best"] |= fields.pop("keep_best", False)
    return Method(streams=streams, loss_weights=loss_weights, **common, **fields)


def selecting_method(
    config,
    context: MethodContext,
    name: str,
    *,
    score,
    strategy: str,
    outer: OuterMethod | None = None,
    outer_batch: str = "uniform",
    init_state=None,
) -> Method:
    """A method that draws b of a big batch of k * b by ``score``.

    ``strategy`` is the method's default way of drawing (``config.select.strategy``
    overrides it).
    """
    k = int(config.select.downsampling)
    if config.select.strategy:
        strategy = config.select.strategy
    b = int(config.train.batch_size)
    fields = {} if init_state is None else {"init_state": init_state}
    return Method(
        streams={
            "generic": ("generic_train", k * b),
            "target": ("target_train", int(config.train.target_batch_size)),
        },
        loss_weights={"generic": 1.0},
        score=score,
        strategy=strategy,
        temperature=float(config.select.temperature),
        outer=outer,
        outer_batch=outer_batch,
        selection_warmup_steps=int(config.select.warmup_steps),
        outer_every=int(config.outer.every),
        **fields,
        **_common(config, context, name),
    )


def weighting_method(
    make_outer: Callable[..., OuterMethod],
    outer_batch: Callable[[Any], str] = lambda config: "uniform",
    *,
    weight_mode: str = "positive",
    strategy: str = "sample",
):
    """Constructor of a method whose b examples are drawn by a weighting model's logits.

    The byte-CNN ``w(x; phi)`` (``config.weighting``) scores the big batch; b examples
    are drawn by ``strategy`` (default: p = softmax(logits / temperature) without
    replacement); phi takes the outer update ``make_outer(config, loss_fn, weight_fn,
    phi_tx)`` (an ``OuterMethod``) on the generic batch ``outer_batch(config)``, with
    ``weight_fn(phi, batch)`` the model's output of ``weight_mode`` (positive weights,
    or raw logits) and the optimiser of ``config.outer``.
    """

    def build(config, context: MethodContext) -> Method:
        wmodel = weighting.from_config(config.weighting)

        def weight_fn(phi, batch):
            return weighting.weighting_forward(wmodel, phi, batch["inputs"], mode=weight_mode)

        phi_tx = _optimizer(config.outer.optimizer, float(config.outer.learning_rate))
        outer = make_outer(config, transformer.make_loss_fn(context.model), weight_fn, phi_tx)

        def init_state(key, params) -> OuterState:
            dummy = jnp.zeros((1, config.model.max_length), jnp.int32)
            phi = weighting.init_weighting_params(key, wmodel, dummy)
            return OuterState(phi, outer.init(phi, params))

        def score(params, method_state: OuterState, big, target, key):
            del params, target, key
            return weighting.weighting_forward(
                wmodel, method_state.phi, big["inputs"], mode="logits"
            )

        return selecting_method(
            config,
            context,
            config.method,
            score=score,
            strategy=strategy,
            outer=outer,
            outer_batch=outer_batch(config),
            init_state=init_state,
        )

    return build


# ------------------------------------------------------------------------- methods


def _base(config, context):
    return _supervised(
        config,
        context,
        "base",
        {"generic": ("generic_train", int(config.train.batch_size))},
        {"generic": 1.0},
    )


def _mixing(config, context):
    gw = float(config.mixing.generic_weight)
    return _supervised(
        config,
        context,
        "mixing",
        {
            "generic": ("generic_train", int(config.train.batch_size)),
            "target": ("target_train", int(config.train.target_batch_size)),
        },
        {"generic": gw, "target": 1.0 - gw},
    )


def _finetune(config, context):
    return _supervised(
        config,
        context,
        "finetune",
        {"target": ("target_train", int(config.train.batch_size))},
        {"target": 1.0},
        init_from=str(config.finetune.init_from),
        keep_best=True,
    )


def _align_filter(config, context):
    loss_fn = transformer.make_loss_fn(context.model)
    f = config.align_filter
    method = f.method

    def score(params, method_state, big, target, key):
        del method_state, key
        target_grad = alignment.mean_gradient(loss_fn, params, target)
        return alignment.per_example_alignment(
            loss_fn,
            params,
            big,
            target_grad,
            method=method,
            chunk_size=f.chunk_size,
            param_filter=f.param_filter or None,
            normalize=f.normalize,
        )

    return selecting_method(config, context, "align_filter", score=score, strategy="top")


def _l2rw(config, context):
    loss_fn = transformer.make_loss_fn(context.model)

    def score(params, method_state, big, target, key):
        del method_state, key
        # eta only scales u_i = eta <grad l_i, g_s> and cancels in the normalisation.
        return l2rw_weights(loss_fn, params, big, target, eta=1.0)

    return selecting_method(config, context, "l2rw", score=score, strategy="positive_weighted")


def _anograd_outer(config, loss_fn, weight_fn, phi_tx):
    a = config.anograd
    return anograd(
        loss_fn,
        weight_fn,
        phi_tx,
        normalization=a.normalization,
        param_filter=a.param_filter or None,
    )


def _soba_outer(config, loss_fn, weight_fn, phi_tx):
    s = config.soba
    v_learning_rate = (
        ts.learning_rate_schedule(config.train)
        if s.v_learning_rate is None
        else float(s.v_learning_rate)
    )
    if s.v_optimizer == "adam":
        v_tx = optax.adam(v_learning_rate, b1=0.9, b2=0.98, eps=1e-9)
    else:
        v_tx = optax.sgd(v_learning_rate)
    return soba(
        loss_fn,
        weight_fn,
        phi_tx,
        v_tx,
        hessian_free=bool(s.hessian_free),
        hessian_free_curvature=s.hessian_free_curvature,
        hessian_reg=float(s.hessian_reg),
        hessian_weights=s.hessian_weights,
    )


def _dds_outer(config, loss_fn, weight_fn, phi_tx):
    return dds(loss_fn, weight_fn, phi_tx, eta=float(config.dds.eta))


def _domain_mixture(config, context):
    m = config.mixture
    loss_fn = transformer.make_loss_fn(context.model)
    update = m.update_rule
    phi_tx = (
        _optimizer(config.outer.optimizer, float(m.step_size))
        if update == "hypergradient"
        else None
    )
    outer = mixture.mixture(
        loss_fn,
        context.num_domains,
        update=update,
        step_size=float(m.step_size),
        smoothing=float(m.smoothing),
        phi_tx=phi_tx,
        objective=m.objective,
        eta=float(config.dds.eta),
        normalization=config.anograd.normalization,
    )
    num_domains = context.num_domains

    def init_state(key, params) -> OuterState:
        del key
        phi = jnp.zeros((num_domains,), jnp.float32)
        return OuterState(phi, outer.init(phi, params))

    def score(params, method_state: OuterState, big, target, key):
        del params, target, key
        counts_K = mixture.domain_counts(big["domain"], num_domains)
        share_K = jnp.maximum(counts_K, 1.0) / big["domain"].shape[0]
        return mixture.mixture_resampling_logits(method_state.outer.alpha_K, share_K, big["domain"])

    return selecting_method(
        config,
        context,
        "domain_mixture",
        score=score,
        strategy="sample",
        outer=outer,
        outer_batch="big",
        init_state=init_state,
    )


def _classifier_outer(config, loss_fn, weight_fn, phi_tx):
    del config, loss_fn  # a classifier of the inputs alone: no LM involved
    return classifier(weight_fn, phi_tx)


def _dsir(config, context):
    d = config.dsir
    num_buckets, smoothing = int(d.num_buckets), float(d.smoothing)
    outer = dsir.dsir(num_buckets, smoothing=smoothing)

    def init_state(key, params) -> OuterState:
        del key
        counts = dsir.zero_counts(num_buckets)
        return OuterState(counts, outer.init(counts, params))

    def score(params, method_state: OuterState, big, target, key):
        del params, target, key
        return dsir.dsir_log_weights(method_state.phi, big["inputs"], smoothing=smoothing)

    return selecting_method(
        config,
        context,
        "dsir",
        score=score,
        strategy="sample",
        outer=outer,
        outer_batch="big",
        init_state=init_state,
    )


def _reference_method(config, context, name: str, *, score_fn, workdirs: dict[str, str]):
    """A method scoring B with fixed LMs loaded from other runs (``ReferenceModels``).

    ``workdirs``: field of ``ReferenceModels`` -> dotted config key of its workdir;
    ``score_fn(loss_fn, params, references, big) -> float[B]``; top b are kept.
    """
    paths = {
        field: str(config[key.split(".")[0]][key.split(".")[1]]) for field, key in workdirs.items()
    }
    loss_fn = transformer.make_loss_fn(context.model)

    def init_state(key, params) -> ReferenceModels:
        del key
        return ReferenceModels(**{f: jax.tree.map(jnp.zeros_like, params) for f in paths})

    def load_state(references: ReferenceModels) -> ReferenceModels:
        return references._replace(
            **{
                f: ckpt.restore_pretrained_params(path, getattr(references, f), prefer_best=True)
                for f, path in paths.items()
            }
        )

    def score(params, references: ReferenceModels, big, target, key):
        del target, key
        return score_fn(loss_fn, params, references, big)

    method = selecting_method(
        config, context, name, score=score, strategy="top", init_state=init_state
    )
    return dataclasses.replace(method, load_state=load_state)


def reducible_loss(loss_fn, params, references: ReferenceModels, batch):
    """RHO-LOSS scores: ``l(x; theta) - l(x; theta_ref)``, float[B] (higher: keep)."""
    return loss_fn(params, batch) - loss_fn(references.target, batch)


def contrastive_score(loss_fn, params, references: ReferenceModels, batch):
    """CDS scores ``l(x; theta_generic) - l(x; theta_finetuned)``, float[B]: the top b are
    the b lowest ``l_finetuned - l_generic`` (the most target-like)."""
    del params
    return loss_fn(references.generic, batch) - loss_fn(references.target, batch)


def _rho(config, context):
    return _reference_method(
        config, context, "rho", score_fn=reducible_loss, workdirs={"target": "rho.reference_from"}
    )


def _cds(config, context):
    return _reference_method(
        config,
        context,
        "cds",
        score_fn=contrastive_score,
        workdirs={"generic": "cds.generic_from", "target": "cds.target_from"},
    )


METHODS: dict[str, MethodSpec] = {
    "base": MethodSpec(_base, "generic data only"),
    "mixing": MethodSpec(_mixing, "gradients of gw L_generic + (1 - gw) L_target"),
    "finetune": MethodSpec(
        _finetune, "target_train only, from a pretrained workdir, best checkpoint by target_valid"
    ),
    "align_filter": MethodSpec(
        _align_filter,
        "top b of B by exact alignment <grad l_i, g_s> (the oracle filter)",
        scorer="lm_gradient",
    ),
    "anograd": MethodSpec(
        weighting_method(_anograd_outer),
        "b sampled by a weighting CNN; phi maximises <g_w, g_s> / ||g_w||",
        scorer="weighting_model",
    ),
    "soba": MethodSpec(
        weighting_method(_soba_outer, lambda c: c.soba.outer_batch),
        "b sampled by a weighting CNN; phi follows the SOBA hypergradient, v ~ -H^-1 grad L_s",
        scorer="weighting_model",
    ),
    "dds": MethodSpec(
        weighting_method(_dds_outer, lambda c: c.dds.lookahead_batch),
        "b sampled by a weighting CNN; phi descends L_s after a virtual step "
        "theta - eta sum_i wbar_i grad l_i",
        scorer="weighting_model",
    ),
    "l2rw": MethodSpec(
        _l2rw,
        "learning to reweight: b largest max(0, <grad l_i, g_s>), trained with "
        "those weights renormalised",
        scorer="lm_gradient",
    ),
    "domain_mixture": MethodSpec(
        _domain_mixture,
        "domain mixture alpha (EG on domain alignment, or a "
        "hypergradient); b resampled from B to follow alpha",
        scorer="domain",
    ),
    "classifier": MethodSpec(
        weighting_method(
            _classifier_outer, lambda config: "big", weight_mode="logits", strategy="top"
        ),
        "top b of B by the logit of a target-vs-generic classifier (the weighting CNN) "
        "trained online",
        scorer="weighting_model",
    ),
    "cds": MethodSpec(
        _cds,
        "contrastive data selection: b of B with the lowest l_finetuned - l_generic "
        "(two fixed LMs from a base run and its fine-tuned copy)",
        scorer="lm_forward",
    ),
    "dsir": MethodSpec(
        _dsir,
        "importance resampling on hashed uni+bigram features: b of B drawn by "
        "p_target(x) / p_generic(x), both estimated online",
        scorer="ngram",
    ),
    "rho": MethodSpec(
        _rho,
        "RHO-LOSS: top b of B by reducible loss l(x; theta) - l(x; theta_ref), "
        "theta_ref trained on target_train",
        scorer="lm_forward",
    ),
}


def build(config, *, model, tx, domains, target_domain) -> Method:
    """The ``Method`` of ``config.method`` for this LM, optimiser and domain vocabulary.

    Raises:
      adaptive_data.validation.ConfigError: the config has values out of range (all of
        them are listed).
    """
    from adaptive_data.validation import validate_config  # it imports this module

    validate_config(config)
    context = MethodContext(
        model=model,
        tx=tx,
        num_domains=len(domains),
        target_domain_id=domains.index(target_domain) if target_domain in domains else None,
    )
    return METHODS[config.method](config, context)
