"""``domain_mixture``: a mixture alpha over the K domains of the pool, updated by
exponentiated gradient on the domains' alignment with the target (or by a hypergradient);
b of the big batch resampled to follow alpha, so a domain gets at most its count in B
(``core/mixture.py``). Its settings are ``config.mixture``."""

import dataclasses

import jax.numpy as jnp
import ml_collections

from adaptive_data.config_rules import Rule, number, one_of
from adaptive_data.core import mixture
from adaptive_data.methods.builders import optimizer, selecting_method
from adaptive_data.methods.registry import MethodSpec, register
from adaptive_data.methods.types import OuterState
from adaptive_data.models import transformer


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    block = ml_collections.ConfigDict()
    # domain_mixture: eg (exponentiated gradient) | hypergradient.
    block.update_rule = "eg"
    # EG step size (or learning rate of the logits for hypergradient).
    block.step_size = 1.0
    # Floor: alpha = (1 - s) alpha + s / K.
    block.smoothing = 0.05
    # Objective of the hypergradient variant: anograd (anograd.normalization) | dds
    # (dds.eta).
    block.objective = "anograd"
    return block


def _build(config, context):
    m = config.mixture
    loss_fn = transformer.make_loss_fn(context.model)
    update = m.update_rule
    phi_tx = (
        optimizer(config.outer.optimizer, float(m.step_size)) if update == "hypergradient" else None
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

    def realised_shares(big, indices_b, method_state: OuterState):
        # Resampling b of B without replacement gives domain k at most n_k(B) of b.
        del method_state
        b = indices_b.shape[0]
        return {
            "mixture/realised_share": mixture.domain_counts(big["domain"][indices_b], num_domains)
            / b,
            "mixture/share_cap": jnp.minimum(
                mixture.domain_counts(big["domain"], num_domains) / b, 1.0
            ),
        }

    method = selecting_method(
        config,
        context,
        "domain_mixture",
        score=score,
        strategy="sample",
        outer=outer,
        outer_batch="big",
        init_state=init_state,
    )
    return dataclasses.replace(method, selected_metrics=realised_shares)


SPEC = register(
    MethodSpec(
        "domain_mixture",
        _build,
        "domain mixture alpha (EG on domain alignment, or a hypergradient); b resampled "
        "from B to follow alpha, so a domain gets at most its count in B",
        scorer="domain",
        defaults=_defaults,
        config_key="mixture",
        rules=(
            Rule("mixture.update_rule", *one_of(mixture.UPDATES)),
            Rule("mixture.step_size", *number(0, lo_open=True)),
            Rule("mixture.smoothing", *number(0, 1, hi_open=True)),
            Rule("mixture.objective", *one_of(mixture.OBJECTIVES)),
        ),
    )
)
