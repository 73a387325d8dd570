"""What the package trains: a ``LanguageModel`` (a model entry built for one config and
tokenizer) and everything derived from its ``apply``: the per-example loss every method
builds on, and the evaluation sums behind bits per byte.

A model entry gives two functions (``ModelFunctions``)::

    init(rng, example_batch) -> params       # example_batch: int32[B, L] token ids
    apply(params, tokens, train, rng) -> logits   # int32[B, L] -> float32[B, L, V]

``apply`` must be causal (position t sees tokens 0..t) and pure in ``params``; ``train``
turns dropout (or any other training-time noise) on, with ``rng`` its key (None when
``train`` is False). ``linen_functions(module)`` gives both for a Flax Linen module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adaptive_data.data import tokenizer as tokenizer_lib

PyTree = Any


class ModelFunctions(NamedTuple):
    """A model's two functions (see the module docstring for their contract)."""

    init: Callable[[jax.Array, jax.Array], PyTree]
    apply: Callable[[PyTree, jax.Array, bool, jax.Array | None], jax.Array]


def linen_functions(module) -> ModelFunctions:
    """``ModelFunctions`` of a Flax Linen module called as ``module(tokens, train=...)``.

    Parameters are its "params" collection; dropout layers draw from the "dropout" rng.
    """

    def init(rng, example_batch):
        return module.init({"params": rng}, example_batch, train=False)["params"]

    def apply(params, tokens, train, rng):
        rngs = {"dropout": rng} if train else None
        return module.apply({"params": params}, tokens, train=train, rngs=rngs)

    return ModelFunctions(init, apply)


@dataclasses.dataclass(frozen=True, eq=False)
class LanguageModel:
    """A registered model built for a config and a tokenizer (``models.build``).

    Attributes:
      name: the entry's name (``config.model.name``).
      init: ``(rng, example_batch int32[B, L]) -> params``.
      apply: ``(params, tokens int32[B, L], train, rng) -> float32[B, L, V]`` logits,
        V = ``tokenizer.vocab_size``.
      tokenizer: the tokenizer of ``config.data.tokenizer`` (V, BOS/EOS/PAD ids).
      max_length: L, the token length of every example (``config.model.max_length``).
      partition: the entry's sharding rule, ``(path, shape, fsdp) -> PartitionSpec | None``
        (``adaptive_data.sharding.state_shardings``), or None for the default by shape.
    """

    name: str
    init: Callable[[jax.Array, jax.Array], PyTree]
    apply: Callable[[PyTree, jax.Array, bool, jax.Array | None], jax.Array]
    tokenizer: tokenizer_lib.Tokenizer
    max_length: int
    partition: Callable[..., Any] | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def init_params(self, key: jax.Array) -> PyTree:
        """Initial parameters, from an example batch of shape [1, L]."""
        return self.init(key, jnp.zeros((1, self.max_length), jnp.int32))


def token_nll(logits_BxLxV, targets_BxL):
    """Negative log-likelihood (nats) of each target token: float32[B, L]."""
    log_probs = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, targets_BxL[..., None], axis=-1)[..., 0]


def make_loss_fn(model: LanguageModel, *, deterministic: bool = True) -> Callable:
    """Returns ``loss_fn(params, batch, dropout_key=None) -> float32[B]``.

    ``loss_i = sum_t mask_it * nll_it / max(1, sum_t mask_it)``: the mean next-token NLL
    over the non-padding targets of example i (an all-padding example has loss 0).
    ``batch`` needs ``inputs``, ``targets`` (int32[B, L]) and ``mask`` (float32[B, L]).
    With ``deterministic=False`` the model runs with ``train=True`` and ``dropout_key``
    is required.
    """

    def loss_fn(params, batch, dropout_key=None):
        logits = model.apply(params, batch["inputs"], not deterministic, dropout_key)
        nll_BxL = token_nll(logits, batch["targets"])
        mask_BxL = batch["mask"]
        return jnp.sum(nll_BxL * mask_BxL, axis=-1) / jnp.maximum(jnp.sum(mask_BxL, axis=-1), 1.0)

    return loss_fn


def make_eval_fn(model: LanguageModel) -> Callable:
    """Returns ``eval_fn(params, batch) -> (sum_nll, num_bytes)`` summed over the batch.

    Bits per byte over many batches is ``sum(sum_nll) / ln 2 / sum(num_bytes)``: the NLL
    of every predicted token (text tokens and EOS) per UTF-8 byte of the original text
    they cover (``batch["num_bytes"]``, see ``adaptive_data.data.tokenizer``), so runs
    with different tokenizers compare directly.
    """

    def eval_fn(params, batch):
        logits = model.apply(params, batch["inputs"], False, None)
        nll_BxL = token_nll(logits, batch["targets"])
        return jnp.sum(nll_BxL * batch["mask"]), jnp.sum(batch["num_bytes"])

    return eval_fn
