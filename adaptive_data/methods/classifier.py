"""``classifier``: the top b of the big batch by the logit of a target-vs-generic
classifier (the weighting CNN) trained online (``core/outer/classifier.py``)."""

from adaptive_data.core.outer.classifier import classifier
from adaptive_data.methods.builders import weighting_method
from adaptive_data.methods.registry import MethodSpec, register


def _outer(config, loss_fn, weight_fn, phi_tx):
    del config, loss_fn  # a classifier of the inputs alone: no LM involved
    return classifier(weight_fn, phi_tx)


SPEC = register(
    MethodSpec(
        "classifier",
        weighting_method(_outer, lambda config: "big", weight_mode="logits", strategy="top"),
        "top b of B by the logit of a target-vs-generic classifier (the weighting CNN) "
        "trained online",
        scorer="weighting_model",
    )
)
