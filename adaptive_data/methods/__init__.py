"""Training methods: one ``Method`` record per method, one registry, one train step.

``METHODS`` (name -> constructor) is the registry; ``build(config, ...)`` returns the
``Method`` of ``config.method``; ``train_step(state, batches, *, method, active,
outer_update)`` runs any method, and ``jit_train_step(method, state_sharding)`` jits it
once. See docs/algorithms.md for the maths of each method.
"""

from adaptive_data.methods.registry import (
    METHODS,
    SCORERS,
    MethodContext,
    MethodSpec,
    build,
    selecting_method,
    weighting_method,
)
from adaptive_data.methods.step import jit_train_step, train_step
from adaptive_data.methods.types import OUTER_BATCHES, Method, OuterState, ReferenceModels

__all__ = [
    "METHODS",
    "OUTER_BATCHES",
    "SCORERS",
    "Method",
    "MethodContext",
    "MethodSpec",
    "OuterState",
    "ReferenceModels",
    "build",
    "jit_train_step",
    "selecting_method",
    "train_step",
    "weighting_method",
]
