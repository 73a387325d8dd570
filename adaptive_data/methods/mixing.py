"""``mixing``: the LM descends gw * L_generic + (1 - gw) * L_target, the mean losses of a
generic batch of b and a target_train batch (the authors' baseline)."""

import ml_collections

from adaptive_data.config_rules import Rule, number
from adaptive_data.methods.builders import supervised_method
from adaptive_data.methods.registry import MethodSpec, register


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    # gw in gw * L_generic + (1 - gw) * L_target.
    return ml_collections.ConfigDict({"generic_weight": 0.9})


def _build(config, context):
    gw = float(config.mixing.generic_weight)
    return supervised_method(
        config,
        context,
        "mixing",
        {
            "generic": ("generic_train", int(config.train.batch_size)),
            "target": ("target_train", int(config.train.target_batch_size)),
        },
        {"generic": gw, "target": 1.0 - gw},
    )


SPEC = register(
    MethodSpec(
        "mixing",
        _build,
        "gradients of gw L_generic + (1 - gw) L_target",
        defaults=_defaults,
        rules=(Rule("mixing.generic_weight", *number(0, 1)),),
    )
)
