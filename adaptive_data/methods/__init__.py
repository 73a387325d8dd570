"""Training methods: what data each step reads and the pure step function.

A ``Method`` names its input streams (stream -> (corpus split, global batch size)),
how to initialise its extra state, and ``step(state, batches) -> (state, metrics)``,
a pure function that the driver jits once. ``build(config, ...)`` picks the method of
``config.method``.
"""

from __future__ import annotations

from collections.abc import Callable

from adaptive_data.methods import baselines, selection
from adaptive_data.methods.types import Method

BUILDERS: dict[str, Callable[..., Method]] = {
    "base": baselines.base,
    "mixing": baselines.mixing,
    "finetune": baselines.finetune,
    **{name: selection.build for name in selection.DEFAULT_STRATEGY},
}


def build(config, *, model, tx, corpus, shard_batch=lambda batch: batch) -> Method:
    """The Method of ``config.method`` for this model, optimiser and corpus.

    ``shard_batch`` constrains a batch built inside the step (the selected b examples)
    to the data-parallel sharding; the identity on one device.
    """
    if config.method not in BUILDERS:
        raise ValueError(f"Unknown config.method={config.method!r}; choose one of "
                         f"{sorted(BUILDERS)}.")
    return BUILDERS[config.method](config, model=model, tx=tx, corpus=corpus,
                                   shard_batch=shard_batch)
