"""``dsir``: importance resampling; b of the big batch drawn by p_target(x) / p_generic(x)
over hashed unigram + bigram features, target_train counted once up front and the
generic pool online (``core/dsir.py``)."""

import dataclasses

import ml_collections

from adaptive_data.config_rules import Rule, integer, number
from adaptive_data.core import dsir
from adaptive_data.methods.builders import selecting_method
from adaptive_data.methods.registry import MethodSpec, register
from adaptive_data.methods.types import OuterState


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    # Hash buckets of the unigram + bigram features, and the additive smoothing of the
    # target and generic feature distributions.
    return ml_collections.ConfigDict({"num_buckets": 4096, "smoothing": 1.0})


def _build(config, context):
    d = config.dsir
    num_buckets, smoothing = int(d.num_buckets), float(d.smoothing)
    outer = dsir.dsir(num_buckets, smoothing=smoothing)

    def init_state(key, params) -> OuterState:
        del key
        counts = dsir.zero_counts(num_buckets)
        return OuterState(counts, outer.init(counts, params))

    def load_state(method_state: OuterState, target_train) -> OuterState:
        # p_t: every target_train example counted once, before training.
        target_M = dsir.count_ngrams(target_train(), num_buckets)
        return method_state._replace(phi=method_state.phi._replace(target_M=target_M))

    def score(params, method_state: OuterState, big, target, key):
        del params, target, key
        return dsir.dsir_log_weights(method_state.phi, big["inputs"], smoothing=smoothing)

    method = selecting_method(
        config,
        context,
        "dsir",
        score=score,
        strategy="sample",
        outer=outer,
        outer_batch="big",
        init_state=init_state,
    )
    return dataclasses.replace(method, load_state=load_state)


SPEC = register(
    MethodSpec(
        "dsir",
        _build,
        "importance resampling on hashed uni+bigram features: b of B drawn by "
        "p_target(x) / p_generic(x), target_train counted once up front, generic online",
        scorer="ngram",
        defaults=_defaults,
        rules=(
            Rule("dsir.num_buckets", *integer(1)),
            Rule("dsir.smoothing", *number(0, lo_open=True)),
        ),
    )
)
