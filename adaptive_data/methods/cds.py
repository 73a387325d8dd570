"""``cds``: contrastive data selection; the b of the big batch with the lowest
l(x; theta_finetuned) - l(x; theta_generic), two fixed LMs from a base run and its
fine-tuned copy (``core/reference_scores.py``)."""

import ml_collections

from adaptive_data.core import reference_scores
from adaptive_data.methods.builders import TARGET_RUN, reference_method
from adaptive_data.methods.registry import MethodSpec, NeededRun, register


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    # Workdirs of the two fixed scoring LMs (same model config): a base run, and that
    # model fine-tuned on target_train (its best checkpoint by target_valid is used).
    return ml_collections.ConfigDict({"generic_from": "", "target_from": ""})


def _build(config, context):
    def score_fn(loss_fn, params, references, big):
        del params
        return reference_scores.contrastive_score(
            loss_fn, references.generic, references.target, big
        )

    return reference_method(
        config,
        context,
        "cds",
        score_fn=score_fn,
        workdirs={"generic": "cds.generic_from", "target": "cds.target_from"},
    )


SPEC = register(
    MethodSpec(
        "cds",
        _build,
        "contrastive data selection: b of B with the lowest l_finetuned - l_generic "
        "(two fixed LMs from a base run and its fine-tuned copy)",
        scorer="lm_forward",
        defaults=_defaults,
        needs_runs={
            "cds.generic_from": NeededRun(
                "a base run (generic data; experiments/benchmark.py makes it)"
            ),
            "cds.target_from": NeededRun(TARGET_RUN, fine_tuned=True),
        },
    )
)
