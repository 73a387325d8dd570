"""``align_filter``: the top b of the big batch B by the exact alignment
<grad l_i(theta), g_s> of each example's gradient with the target gradient (the oracle
filter; ``core/alignment.py``)."""

import ml_collections

from adaptive_data.config_rules import Rule, boolean, integer, one_of, regex
from adaptive_data.core import alignment
from adaptive_data.methods.builders import selecting_method
from adaptive_data.methods.registry import MethodSpec, register
from adaptive_data.models import transformer


def _defaults(arg) -> ml_collections.ConfigDict:
    del arg
    block = ml_collections.ConfigDict()
    # Alignment computation: jvp | vmap | weights.
    block.method = "jvp"
    # Examples per chunk of per-example work (None: all at once).
    block.chunk_size = ml_collections.config_dict.placeholder(int)
    # Regex on /-joined parameter paths restricting the alignment ("" = all).
    block.param_filter = ""
    # Cosine instead of dot product (needs align_filter.method=vmap).
    block.normalize = False
    return block


def _build(config, context):
    loss_fn = transformer.make_loss_fn(context.model)
    f = config.align_filter
    method = f.method

    def score(params, method_state, big, target, key):
        del method_state, key
        target_grad = alignment.mean_gradient(loss_fn, params, target)
        return alignment.per_example_alignment(
            loss_fn,
            params,
            big,
            target_grad,
            method=method,
            chunk_size=f.chunk_size,
            param_filter=f.param_filter or None,
            normalize=f.normalize,
        )

    return selecting_method(config, context, "align_filter", score=score, strategy="top")


SPEC = register(
    MethodSpec(
        "align_filter",
        _build,
        "top b of B by exact alignment <grad l_i, g_s> (the oracle filter)",
        scorer="lm_gradient",
        diagnosis="exact_scores",
        defaults=_defaults,
        rules=(
            Rule("align_filter.method", *one_of(alignment.METHODS)),
            Rule(
                "align_filter.chunk_size", *integer(1, optional=True, note=" (None: all at once)")
            ),
            Rule("align_filter.param_filter", *regex(" ('' = all parameters)")),
            Rule("align_filter.normalize", *boolean()),
            Rule(
                "align_filter.normalize",
                lambda v, config: not v or config.align_filter.method == "vmap",
                "False unless config.align_filter.method='vmap' (the cosine needs "
                "per-example gradient norms, which only vmap computes)",
                reads=("align_filter.method",),
            ),
        ),
    )
)
