"""Training methods: one module per method, one ``Method`` record, one train step.

``METHODS`` (name -> ``MethodSpec``) is the registry and ``names(...)`` its filtered
lists (e.g. ``names(needs_other_runs=False)``, ``names(selecting=True)``); each of the
package's methods is a module of this package (``base.py``, ``mixing.py``, ...) holding
its constructor, config defaults, rules and ``register(MethodSpec(...))``, and
``register(spec)`` adds a method of your own the same way (docs/guide.md, "Add your own
method"). ``selecting_method`` and ``weighting_method`` (``builders.py``) are the shared
constructors. ``build(config, ...)`` returns the ``Method`` of ``config.method``;
``train_step(state, batches, *, method, active, outer_update)`` runs any method, and
``jit_train_step(method, state_sharding)`` jits it once. See docs/algorithms.md for the
maths of each method.
"""

from adaptive_data.methods import registry
from adaptive_data.methods.builders import selecting_method, weighting_method
from adaptive_data.methods.registry import (
    DIAGNOSES,
    METHODS,
    SCORERS,
    MethodContext,
    MethodSpec,
    NeededRun,
    build,
    import_extra_modules,
    names,
    register,
    unregister,
)
from adaptive_data.methods.step import jit_train_step, train_step
from adaptive_data.methods.types import OUTER_BATCHES, Method, OuterState, ReferenceModels

# The package's own methods register themselves on import, in this order: the README's
# method table and the benchmark's order. A method module not listed here (a new one)
# registers after these, in name order (``import_submodules`` below); list it here only
# to give it another row.
# isort: off
from adaptive_data.methods import (  # noqa: F401 (importing registers them)
    base,
    mixing,
    finetune,
    align_filter,
    anograd,
    soba,
    dds,
    l2rw,
    domain_mixture,
    classifier,
    cds,
    dsir,
    rho,
)
# isort: on

registry.import_submodules(__name__, __path__)

__all__ = [
    "METHODS",
    "OUTER_BATCHES",
    "DIAGNOSES",
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
