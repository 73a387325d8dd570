"""``rho``: RHO-LOSS; the top b of the big batch by the reducible loss
l(x; theta) - l(x; theta_ref), theta_ref a fixed LM trained on target_train
(``core/reference_scores.py``)."""

import ml_collections

from adaptive_data.core import reference_scores
from adaptive_data.methods.builders import TARGET_RUN, reference_method
from adaptive_data.methods.registry import MethodSpec, NeededRun, register


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    # Workdir of the reference LM trained on target_train (best checkpoint if kept).
    return ml_collections.ConfigDict({"reference_from": ""})


def _build(config, context):
    def score_fn(loss_fn, params, references, big):
        return reference_scores.reducible_loss(loss_fn, params, references.target, big)

    return reference_method(
        config, context, "rho", score_fn=score_fn, workdirs={"target": "rho.reference_from"}
    )


SPEC = register(
    MethodSpec(
        "rho",
        _build,
        "RHO-LOSS: top b of B by reducible loss l(x; theta) - l(x; theta_ref), "
        "theta_ref trained on target_train",
        scorer="lm_forward",
        defaults=_defaults,
        # The irreducible-loss model never trains on the scored run's generic stream.
        needs_runs={
            "rho.reference_from": NeededRun(
                TARGET_RUN + "; from a base run of another seed than the rho run",
                fine_tuned=True,
                independent_seed=True,
            )
        },
    )
)
