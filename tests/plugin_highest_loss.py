"""A method defined outside the package, for tests and as the guide's example: keep the b
examples of the big batch B with the highest loss under the current model.

Importing this module registers the method ``highest_loss``; name it in
``config.extra_modules`` to use it from the command line (``tests/`` on PYTHONPATH):

    python -m adaptive_data.main --workdir=/tmp/hl \\
        --config=configs/default.py:method=highest_loss,extra_modules=plugin_highest_loss

Scores: the per-example loss s_i = l(x_i; theta) (float[B]); the b largest are kept
(``highest_loss.strategy=top``), or b are sampled with p = softmax(s / temperature)
without replacement (``sample``).
"""

import ml_collections

from adaptive_data import methods
from adaptive_data.config_rules import Rule, one_of
from adaptive_data.models import transformer

STRATEGIES = ("top", "sample")


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    # How b of B are drawn from the losses: top (the b highest) | sample.
    return ml_collections.ConfigDict({"strategy": "top"})


def _build(config, context) -> methods.Method:
    loss_fn = transformer.make_loss_fn(context.model)

    def score(params, method_state, big, target, key):
        del method_state, target, key
        return loss_fn(params, big)  # float[B] per-example losses under theta_t

    return methods.selecting_method(
        config, context, "highest_loss", score=score, strategy=config.highest_loss.strategy
    )


SPEC = methods.register(
    methods.MethodSpec(
        "highest_loss",
        _build,
        "the b examples of B with the highest loss under the current model",
        scorer="lm_forward",
        defaults=_defaults,
        rules=(Rule("highest_loss.strategy", *one_of(STRATEGIES)),),
    )
)
