"""``anograd``: b of the big batch sampled by a weighting CNN w(x; phi); phi ascends the
normalised alignment <g_w, g_s> / ||g_w|| of the weighted generic gradient with the
target gradient (``core/outer/anograd.py``)."""

import ml_collections

from adaptive_data.config_rules import Rule, one_of, regex
from adaptive_data.core.outer.anograd import NORMALIZATIONS, anograd
from adaptive_data.methods.builders import weighting_method
from adaptive_data.methods.registry import MethodSpec, register


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    # Normaliser of <g_w, g_s>: norm (||g_w||) | hessian (sqrt(g_w^T H_s g_w), falling
    # back to the norm on a step where that curvature is <= 0); also the ANOGRAD
    # objective of mixture.update_rule=hypergradient.
    # param_filter: regex on /-joined LM parameter paths restricting g_w and g_s
    # ("" = all parameters).
    return ml_collections.ConfigDict({"normalization": "norm", "param_filter": ""})


def _outer(config, loss_fn, weight_fn, phi_tx):
    a = config.anograd
    return anograd(
        loss_fn,
        weight_fn,
        phi_tx,
        normalization=a.normalization,
        param_filter=a.param_filter or None,
    )


SPEC = register(
    MethodSpec(
        "anograd",
        weighting_method(_outer),
        "b sampled by a weighting CNN; phi maximises <g_w, g_s> / ||g_w||",
        scorer="weighting_model",
        diagnosis="learned_weights",
        defaults=_defaults,
        rules=(
            Rule("anograd.normalization", *one_of(NORMALIZATIONS)),
            Rule("anograd.param_filter", *regex(" ('' = all parameters)")),
        ),
    )
)
