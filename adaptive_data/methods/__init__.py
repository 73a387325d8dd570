"""Training methods: one registry entry per method, one ``Method`` record, one train step.

``METHODS`` (name -> ``MethodSpec``) is the registry and ``names(...)`` its filtered
lists (e.g. ``names(needs_other_runs=False)``, ``names(selecting=True)``);
``register(spec)`` adds a method of your own (docs/guide.md, "Add your own method");
``build(config, ...)`` returns the ``Method`` of ``config.method``; ``train_step(state,
batches, *, method, active, outer_update)`` runs any method, and
``jit_train_step(method, state_sharding)`` jits it once. See docs/algorithms.md for the
maths of each method.
"""

from adaptive_data.methods.registry import (
    METHODS,
    SCORERS,
    MethodContext,
    MethodSpec,
    NeededRun,
    build,
    import_extra_modules,
    names,
    register,
    selecting_method,
    unregister,
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
    "NeededRun",
    "OuterState",
    "ReferenceModels",
    "build",
    "import_extra_modules",
    "jit_train_step",
    "names",
    "register",
    "selecting_method",
    "train_step",
    "unregister",
    "weighting_method",
]
