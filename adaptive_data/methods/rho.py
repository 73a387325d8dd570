"""``rho``: RHO-LOSS; the top b of the big batch by the reducible loss
l(x; theta) - l(x; theta_ref), theta_ref a fixed LM trained on target_train
(``core/reference_scores.py``).

The reference is a base run on the reserved shard of the generic pool
(``data.reserved_fraction`` of generic_train, ``data.generic_shard=reserved``),
fine-tuned on target_train; the rho run draws from the rest of the pool, so the
reference never trained on a document that rho scores. The cost: the rho run's pool is
smaller by that fraction, and the reference's base run is one more run (its training
FLOPs are charged to rho in the benchmark's compute comparisons).
"""

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
        # The irreducible-loss model never trains on a document the rho run can score:
        # its base run reads only the reserved shard of the pool, the rho run the rest.
        needs_runs={
            "rho.reference_from": NeededRun(
                TARGET_RUN + "; from a base run on the reserved shard of the pool "
                "(data.generic_shard=reserved)",
                fine_tuned=True,
                reserved_shard=True,
            )
        },
    )
)
