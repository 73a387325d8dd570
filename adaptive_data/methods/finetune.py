"""``finetune``: a pretrained run (e.g. a base run) trained on target_train only; the
best parameters by target_valid are kept."""

import ml_collections

from adaptive_data.methods.builders import supervised_method
from adaptive_data.methods.registry import MethodSpec, NeededRun, register


def _defaults(arg) -> ml_collections.ConfigDict:
    # Workdir (or checkpoint directory) of a pretrained run to start from.
    return ml_collections.ConfigDict({"init_from": arg.init_from})


def _build(config, context):
    return supervised_method(
        config,
        context,
        "finetune",
        {"target": ("target_train", int(config.train.batch_size))},
        {"target": 1.0},
        init_from=str(config.finetune.init_from),
        keep_best=True,
    )


SPEC = register(
    MethodSpec(
        "finetune",
        _build,
        "target_train only, from a pretrained workdir, best checkpoint by target_valid",
        defaults=_defaults,
        needs_runs={
            "finetune.init_from": NeededRun("a pretrained run (e.g. a base run) to start from")
        },
    )
)
