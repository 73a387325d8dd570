"""The paper's reference methods: base (generic only), mixing, fine-tuning on the target."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from adaptive_data import train_state as ts
from adaptive_data.methods.types import Method
from adaptive_data.models import transformer


def _supervised_step(model, tx, stream_weights: dict[str, float], schedule):
    """Step minimising sum_s weight_s * mean_i l(x_i) over the batches of streams s."""
    loss_fn = transformer.make_loss_fn(model, deterministic=False)

    def step(state: ts.TrainState, batches):
        keys = dict(zip(stream_weights, jax.random.split(state.step_key(), len(stream_weights))))

        def objective(params):
            losses = {s: jnp.mean(loss_fn(params, batches[s], keys[s])) for s in stream_weights}
            return sum(w * losses[s] for s, w in stream_weights.items()), losses

        (loss, losses), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        metrics = {"train/loss": loss, "train/grad_norm": optax.tree.norm(grads),
                   "train/lr": schedule(state.step)}
        if len(stream_weights) > 1:
            metrics.update({f"train/{s}_loss": v for s, v in losses.items()})
        return ts.apply_gradients(state, grads, tx), metrics

    return step


def base(config, *, model, tx, corpus, shard_batch):
    del corpus, shard_batch  # the input batches are already sharded
    return Method(name="base",
                  streams={"generic": ("generic_train", config.train.batch_size)},
                  step=_supervised_step(model, tx, {"generic": 1.0},
                                        ts.learning_rate_schedule(config.train)))


def mixing(config, *, model, tx, corpus, shard_batch):
    """Gradients of gw * L_generic + (1 - gw) * L_target (gw = config.mixing.generic_weight)."""
    gw = float(config.mixing.generic_weight)
    if not 0.0 <= gw <= 1.0:
        raise ValueError(f"config.mixing.generic_weight={gw} must be in [0, 1].")
    del corpus, shard_batch
    return Method(name="mixing",
                  streams={"generic": ("generic_train", config.train.batch_size),
                           "target": ("target_train", config.train.target_batch_size)},
                  step=_supervised_step(model, tx, {"generic": gw, "target": 1.0 - gw},
                                        ts.learning_rate_schedule(config.train)))


def finetune(config, *, model, tx, corpus, shard_batch):
    """Trains on target_train only; the driver starts from config.finetune.init_from."""
    del corpus, shard_batch
    return Method(name="finetune",
                  streams={"target": ("target_train", config.train.batch_size)},
                  step=_supervised_step(model, tx, {"target": 1.0},
                                        ts.learning_rate_schedule(config.train)))
