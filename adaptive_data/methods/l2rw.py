"""``l2rw``: learning to reweight; the b largest max(0, <grad l_i, g_s>) of the big batch,
trained with those weights renormalised (``core/outer/l2rw.py``)."""

from adaptive_data.core.outer.l2rw import l2rw_weights
from adaptive_data.methods.builders import selecting_method
from adaptive_data.methods.registry import MethodSpec, register
from adaptive_data.models import transformer


def _build(config, context):
    loss_fn = transformer.make_loss_fn(context.model)

    def score(params, method_state, big, target, key):
        del method_state, key
        # eta only scales u_i = eta <grad l_i, g_s> and cancels in the normalisation.
        return l2rw_weights(loss_fn, params, big, target, eta=1.0)

    return selecting_method(config, context, "l2rw", score=score, strategy="positive_weighted")


SPEC = register(
    MethodSpec(
        "l2rw",
        _build,
        "learning to reweight: b largest max(0, <grad l_i, g_s>), trained with "
        "those weights renormalised",
        scorer="lm_gradient",
        diagnosis="exact_scores",
    )
)
