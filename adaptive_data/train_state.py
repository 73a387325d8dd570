"""The training state (one pytree) and the inner model update.

``TrainState`` holds everything a run needs to continue exactly: the step count, the
LM parameters theta, the optimiser state, the base RNG key (raw uint32 key data) and
``method_state``, the extra state of a data-selection method (weighting-model
parameters phi, SOBA's v, mixture weights alpha, ...; ``None`` for ``base``).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of completed model updates
    params: Any  # theta
    opt_state: Any
    rng: jax.Array  # uint32 key data of the run's base key
    method_state: Any = None

    def step_key(self) -> jax.Array:
        """The key of the current step: fold_in(base key, step)."""
        return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def learning_rate_schedule(train_cfg) -> optax.Schedule:
    """Linear warm-up to the peak rate, then cosine decay to end_lr_fraction * peak."""
    steps = max(int(train_cfg.steps), int(train_cfg.warmup_steps) + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=train_cfg.learning_rate,
        warmup_steps=int(train_cfg.warmup_steps),
        decay_steps=steps,
        end_value=train_cfg.learning_rate * train_cfg.end_lr_fraction,
    )


def make_optimizer(train_cfg) -> optax.GradientTransformation:
    """AdamW with global-norm clipping and the warm-up/cosine schedule."""
    parts = []
    if train_cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(train_cfg.grad_clip))
    parts.append(
        optax.adamw(
            learning_rate_schedule(train_cfg),
            b1=train_cfg.b1,
            b2=train_cfg.b2,
            weight_decay=train_cfg.weight_decay,
        )
    )
    return optax.chain(*parts)


def init_state(
    params, tx: optax.GradientTransformation, seed: int, method_state: Any = None
) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(seed)),
        method_state=method_state,
    )


def apply_gradients(
    state: TrainState, grads, tx: optax.GradientTransformation, **replace
) -> TrainState:
    """One inner update theta <- theta + tx(grads); step += 1; other fields from ``replace``."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        **replace,
    )
