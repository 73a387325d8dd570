"""``dds``: b of the big batch sampled by a weighting CNN w(x; phi); phi descends the
target loss after a virtual step theta - eta sum_i wbar_i grad l_i
(``core/outer/dds.py``)."""

import ml_collections

from adaptive_data.config_rules import Rule, number, one_of
from adaptive_data.core.outer.dds import dds
from adaptive_data.methods.builders import weighting_method
from adaptive_data.methods.registry import MethodSpec, register

# Generic batches of DDS's look-ahead (``config.dds.lookahead_batch``).
LOOKAHEAD_BATCHES = ("uniform", "selected")


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    # eta: virtual SGD step of the look-ahead (0: the eta -> 0 limit); also the DDS
    # objective of mixture.update_rule=hypergradient.
    # lookahead_batch: generic batch of the look-ahead: uniform (a uniform b of B,
    # weights normalised over it; the authors' choice) | selected (the b drawn by the
    # weights).
    return ml_collections.ConfigDict({"eta": 0.1, "lookahead_batch": "uniform"})


def _outer(config, loss_fn, weight_fn, phi_tx):
    return dds(loss_fn, weight_fn, phi_tx, eta=float(config.dds.eta))


SPEC = register(
    MethodSpec(
        "dds",
        weighting_method(_outer, lambda c: c.dds.lookahead_batch),
        "b sampled by a weighting CNN; phi descends L_s after a virtual step "
        "theta - eta sum_i wbar_i grad l_i",
        scorer="weighting_model",
        diagnosis="learned_weights",
        defaults=_defaults,
        rules=(
            Rule("dds.eta", *number(0, note=" (0: the eta -> 0 limit)")),
            Rule("dds.lookahead_batch", *one_of(LOOKAHEAD_BATCHES)),
        ),
    )
)
