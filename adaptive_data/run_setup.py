"""One setup path: the tokenizer, the LM, its optimiser, the method and the initial
``TrainState`` of a config.

The driver (``train.py``), the benchmarks (``experiments/``) and the tests build a run the
same way::

    setup = run_setup.build(config, domains=corpus.domains, target_domain=corpus.target_domain)
    state = setup.initial_state()                        # materialised, on the default device
    abstract = setup.abstract_state()                    # shapes only (restore, FLOPs)
    step = methods.jit_train_step(setup.method)

The LM is the registered model ``config.model.name`` (``adaptive_data.models``) over the
vocabulary of ``config.data.tokenizer``. Keys: ``key(config.seed)`` is split into the LM's
init key and the method's init key; ``TrainState.rng`` is the key data of
``key(config.seed)``, so two builds of one config give bit-identical states. Loading what
the method reads from other runs' workdirs (``Method.init_from``, ``Method.load_state``)
is the driver's job, after a resume check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

from adaptive_data import methods, models, validation
from adaptive_data import train_state as ts
from adaptive_data.data import tokenizer as tokenizer_lib


@dataclasses.dataclass(frozen=True, eq=False)
class RunSetup:
    """What a run of one config trains with.

    ``init_state`` is pure and takes no arguments, so it can be traced:
    ``jax.eval_shape(init_state)`` gives the state's shapes and
    ``jax.jit(init_state, out_shardings=...)()`` builds it already sharded.
    """

    model: models.LanguageModel
    tx: optax.GradientTransformation
    method: methods.Method
    init_state: Callable[[], ts.TrainState]

    def abstract_state(self) -> ts.TrainState:
        """The initial state as ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
        return jax.eval_shape(self.init_state)

    def initial_state(self, shardings: Any = None) -> ts.TrainState:
        """The initial state, jitted (with ``out_shardings=shardings`` when given)."""
        return jax.jit(self.init_state, out_shardings=shardings)()


def build(config, *, domains: Sequence[str], target_domain: str) -> RunSetup:
    """The ``RunSetup`` of ``config`` over the corpus domains ``domains``.

    Raises ``validation.ConfigError`` (every bad value at once) before building anything.
    """
    validation.validate_config(config)
    model = models.build(config.model, tokenizer_lib.load(config.data.tokenizer))
    tx = ts.make_optimizer(config.train)
    method = methods.build(
        config, model=model, tx=tx, domains=tuple(domains), target_domain=target_domain
    )
    seed = int(config.seed)

    def init_state() -> ts.TrainState:
        init_key, method_key = jax.random.split(jax.random.key(seed))
        params = model.init_params(init_key)
        return ts.init_state(params, tx, seed, method.init_state(method_key, params))

    return RunSetup(model=model, tx=tx, method=method, init_state=init_state)
