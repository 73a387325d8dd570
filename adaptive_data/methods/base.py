"""``base``: the LM trained on generic data only, b uniform examples per step."""

from adaptive_data.methods.builders import supervised_method
from adaptive_data.methods.registry import MethodSpec, register


def _build(config, context):
    return supervised_method(
        config,
        context,
        "base",
        {"generic": ("generic_train", int(config.train.batch_size))},
        {"generic": 1.0},
    )


SPEC = register(MethodSpec("base", _build, "generic data only"))
