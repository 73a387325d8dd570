"""Models: the registry of language models (the byte Transformer is the default entry) and
the small weighting model w(x; phi).

``MODELS`` (name -> ``ModelSpec``) is the registry; ``register(spec)`` adds a model of your
own (docs/guide.md, "Your own model and tokenizer"); ``build(config.model, tokenizer)``
returns the ``LanguageModel`` of ``config.model.name``, and ``make_loss_fn`` /
``make_eval_fn`` derive the per-example loss and the bits-per-byte sums from it.
"""

from adaptive_data.models import transformer  # noqa: F401  (registers the default entry)
from adaptive_data.models.lm import (
    LanguageModel,
    ModelFunctions,
    linen_functions,
    make_eval_fn,
    make_loss_fn,
    token_nll,
)
from adaptive_data.models.registry import (
    DEFAULT,
    MODELS,
    ModelSpec,
    build,
    config_block,
    names,
    register,
    rules,
    unregister,
)

__all__ = [
    "DEFAULT",
    "MODELS",
    "LanguageModel",
    "ModelFunctions",
    "ModelSpec",
    "build",
    "config_block",
    "linen_functions",
    "make_eval_fn",
    "make_loss_fn",
    "names",
    "register",
    "rules",
    "token_nll",
    "unregister",
]
