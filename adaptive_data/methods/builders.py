"""Shared constructors the methods build on (the package's and a user's own).

Each method's module (``adaptive_data/methods/<name>.py``) builds its ``Method`` with one
of these: ``supervised_method`` (fixed streams and loss weights, no selection),
``selecting_method`` (b of a big batch of k * b drawn by scores), ``weighting_method``
(scores: the logits of the byte-CNN weighting model, with an outer update of its
parameters phi) or ``reference_method`` (scores from fixed LMs loaded from other runs'
workdirs). ``optimizer`` gives the optimisers of ``config.outer.optimizer`` and
``config.soba.v_optimizer``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptive_data import checkpoint as ckpt
from adaptive_data import train_state as ts
from adaptive_data.core.outer.base import OuterMethod
from adaptive_data.methods.registry import MethodContext
from adaptive_data.methods.types import Method, OuterState, ReferenceModels
from adaptive_data.models import transformer, weighting

# Optimisers of ``config.outer.optimizer`` and ``config.soba.v_optimizer``.
OPTIMIZERS = ("adam", "sgd")

# A run trained on target_train, the reference models of cds and rho.
TARGET_RUN = (
    "a run trained on target_train (e.g. method=finetune from a base run; "
    "experiments/benchmark.py makes it)"
)


def optimizer(name: str, learning_rate) -> optax.GradientTransformation:
    """The optimiser ``name`` (one of ``OPTIMIZERS``: adam | sgd) at ``learning_rate``."""
    return optax.adam(learning_rate) if name == "adam" else optax.sgd(learning_rate)


def _common(config, context: MethodContext, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "batch_size": int(config.train.batch_size),
        "loss_fn": transformer.make_loss_fn(context.model, deterministic=False),
        "tx": context.tx,
        "learning_rate": ts.learning_rate_schedule(config.train),
        "num_domains": context.num_domains,
        "target_domain_id": context.target_domain_id,
        "keep_best": bool(config.checkpoint.keep_best),
    }


def supervised_method(
    config, context: MethodContext, name: str, streams, loss_weights, **fields
) -> Method:
    """A method training on fixed streams with fixed loss weights (no selection).

    ``streams``: stream -> (corpus split, global batch size); ``loss_weights``: stream
    -> weight of its mean loss; ``fields``: further ``Method`` fields (``keep_best``
    adds to ``config.checkpoint.keep_best``).
    """
    common = _common(config, context, name)
    common["keep_best"] |= fields.pop("keep_best", False)
    return Method(streams=streams, loss_weights=loss_weights, **common, **fields)


def selecting_method(
    config,
    context: MethodContext,
    name: str,
    *,
    score,
    strategy: str,
    outer: OuterMethod | None = None,
    outer_batch: str = "uniform",
    init_state=None,
) -> Method:
    """A method that draws b of a big batch of k * b by ``score``.

    ``strategy`` is the method's default way of drawing (``config.select.strategy``
    overrides it).
    """
    k = int(config.select.downsampling)
    if config.select.strategy:
        strategy = config.select.strategy
    b = int(config.train.batch_size)
    fields = {} if init_state is None else {"init_state": init_state}
    return Method(
        streams={
            "generic": ("generic_train", k * b),
            "target": ("target_train", int(config.train.target_batch_size)),
        },
        loss_weights={"generic": 1.0},
        score=score,
        strategy=strategy,
        temperature=float(config.select.temperature),
        outer=outer,
        outer_batch=outer_batch,
        selection_warmup_steps=int(config.select.warmup_steps),
        outer_every=int(config.outer.every),
        outer_stop_after=int(config.outer.stop_after or 0),
        outer_batch_fraction=float(config.outer.batch_fraction or 1.0),
        **fields,
        **_common(config, context, name),
    )


def weighting_method(
    make_outer: Callable[..., OuterMethod],
    outer_batch: Callable[[Any], str] = lambda config: "uniform",
    *,
    weight_mode: str = "positive",
    strategy: str = "sample",
):
    """Constructor of a method whose b examples are drawn by a weighting model's logits.

    The byte-CNN ``w(x; phi)`` (``config.weighting``) scores the big batch; b examples
    are drawn by ``strategy`` (default: p = softmax(logits / temperature) without
    replacement); phi takes the outer update ``make_outer(config, loss_fn, weight_fn,
    phi_tx)`` (an ``OuterMethod``) on the generic batch ``outer_batch(config)``, with
    ``weight_fn(phi, batch)`` the model's output of ``weight_mode`` (positive weights,
    or raw logits) and the optimiser of ``config.outer``.
    """

    def build(config, context: MethodContext) -> Method:
        wmodel = weighting.from_config(config.weighting, context.model.tokenizer)

        def weight_fn(phi, batch):
            return weighting.weighting_forward(wmodel, phi, batch["inputs"], mode=weight_mode)

        phi_tx = optimizer(config.outer.optimizer, float(config.outer.learning_rate))
        outer = make_outer(config, transformer.make_loss_fn(context.model), weight_fn, phi_tx)

        def init_state(key, params) -> OuterState:
            dummy = jnp.zeros((1, config.model.max_length), jnp.int32)
            phi = weighting.init_weighting_params(key, wmodel, dummy)
            return OuterState(phi, outer.init(phi, params))

        def score(params, method_state: OuterState, big, target, key):
            del params, target, key
            return weighting.weighting_forward(
                wmodel, method_state.phi, big["inputs"], mode="logits"
            )

        return selecting_method(
            config,
            context,
            config.method,
            score=score,
            strategy=strategy,
            outer=outer,
            outer_batch=outer_batch(config),
            init_state=init_state,
        )

    return build


def reference_method(config, context, name: str, *, score_fn, workdirs: dict[str, str]):
    """A method scoring B with fixed LMs loaded from other runs (``ReferenceModels``).

    ``workdirs``: field of ``ReferenceModels`` -> dotted config key of its workdir;
    ``score_fn(loss_fn, params, references, big) -> float[B]``; top b are kept.
    """
    paths = {
        field: str(config[key.split(".")[0]][key.split(".")[1]]) for field, key in workdirs.items()
    }
    loss_fn = transformer.make_loss_fn(context.model)

    def init_state(key, params) -> ReferenceModels:
        del key
        return ReferenceModels(**{f: jax.tree.map(jnp.zeros_like, params) for f in paths})

    def load_state(references: ReferenceModels, target_train) -> ReferenceModels:
        del target_train
        return references._replace(
            **{
                f: ckpt.restore_pretrained_params(path, getattr(references, f), prefer_best=True)
                for f, path in paths.items()
            }
        )

    def score(params, references: ReferenceModels, big, target, key):
        del target, key
        return score_fn(loss_fn, params, references, big)

    method = selecting_method(
        config, context, name, score=score, strategy="top", init_state=init_state
    )
    return dataclasses.replace(method, load_state=load_state)
