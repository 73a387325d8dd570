"""The registry of language models: one ``ModelSpec`` per architecture, the way methods are.

An entry declares its name (``config.model.name``), its config block with defaults
(``defaults(arg)``, placed at ``config.model`` by ``configs/default.py`` for
``--config=configs/default.py:model=NAME``), the rules of that block, a builder
``build(model_cfg, vocab_size) -> lm.ModelFunctions`` (``init`` and ``apply``) and,
optionally, its own parameter-sharding rule. Everything else (the per-example loss,
evaluation in bits per byte, the per-example alignment, sharding, FLOPs from XLA's cost
analysis, the weighting model's vocabulary) derives from the built ``LanguageModel``.

A user's module registers a model with ``register(ModelSpec(...))`` and is named in
``config.extra_modules`` (imported before the config is checked), exactly as a method
is; docs/guide.md, "Your own model and tokenizer", walks through ``examples/rope_lm.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from adaptive_data.config_rules import Rule, integer
from adaptive_data.data import tokenizer as tokenizer_lib
from adaptive_data.models import lm

# The default model (config.model.name): the paper's byte-level Transformer.
DEFAULT = "transformer"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registry entry: everything that belongs to one language-model architecture.

    Attributes:
      name: ``config.model.name`` of the model (a Python identifier).
      build: ``build(model_cfg, vocab_size) -> lm.ModelFunctions``: the model's ``init``
        and ``apply`` for the (validated) ``config.model`` block and the tokenizer's
        vocabulary size V (``lm.linen_functions(module)`` for a Flax Linen module).
      summary: one line for the docs and error messages.
      defaults: ``defaults(arg) -> ml_collections.ConfigDict``, the block's keys besides
        ``name`` and ``init_from`` (shared by every model), with a comment per key; it
        must hold ``max_length`` (L, the token length of every example). ``arg`` holds
        get_config's parsed arguments (``runlocal``, ``size``, ...).
      rules: ``config_rules.Rule``s of the block's keys (``model.<key>``), applied when
        ``config.model.name == name``; the keys they name must be in the block.
      partition: ``(path, shape, fsdp) -> jax.sharding.PartitionSpec | None``, the
        sharding of a state leaf (``path``: its "/"-joined keys in the train state, e.g.
        ``params/block_0/mlp_in/kernel`` or ``opt_state/0/mu/block_0/mlp_in/kernel``)
        over a mesh with ``fsdp`` devices per shard group; None (or a None answer) is
        ``adaptive_data.sharding``'s default rule, which looks only at the shape.
    """

    name: str
    build: Callable[[Any, int], lm.ModelFunctions]
    summary: str
    defaults: Callable[[Any], ml_collections.ConfigDict]
    rules: tuple[Rule, ...] = ()
    partition: Callable[[str, tuple[int, ...], int], Any] | None = None

    def required_keys(self) -> tuple[str, ...]:
        """The ``config.model`` keys the entry reads: ``max_length`` and those of its rules."""
        keys = ["max_length"] + [r.key.removeprefix("model.") for r in self.rules]
        return tuple(dict.fromkeys(keys))


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Adds ``spec`` under ``spec.name`` (a new name; ``unregister`` first to replace)."""
    if not spec.name.isidentifier():
        raise ValueError(f"Model name {spec.name!r} must be a Python identifier.")
    if spec.name in MODELS:
        raise ValueError(
            f"Model {spec.name!r} is already registered (by {MODELS[spec.name].build.__module__})."
        )
    bad = [r.key for r in spec.rules if not r.key.startswith("model.")]
    if bad:
        raise ValueError(f"Model {spec.name!r}: rules of keys outside config.model: {bad}.")
    MODELS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Removes a registered model (tests and notebooks that re-register one)."""
    del MODELS[name]


def names() -> list[str]:
    """The registered model names, in registration order."""
    return list(MODELS)


def _unknown(name) -> str:
    return (
        f"config.model.name={name!r} is not registered; registered: {names()} (a model of "
        "your own: register it in a module named in config.extra_modules)"
    )


def config_block(name: str, arg) -> ml_collections.ConfigDict:
    """The ``config.model`` block of model ``name``: ``name``, ``init_from`` ('') and
    ``defaults(arg)``."""
    if name not in MODELS:
        raise ValueError(_unknown(name) + ".")
    # init_from: parameters a fresh run starts from ('' = the entry's init): a run's
    # workdir, an orbax checkpoint of the params pytree, or a flax msgpack file
    # (adaptive_data.checkpoint.read_params); continued pretraining of your own model.
    block = ml_collections.ConfigDict({"name": name, "init_from": ""})
    block.update(MODELS[name].defaults(arg))
    return block


def _is_model(name: str) -> Callable[[Any], bool]:
    return lambda config: config.model.name == name


def _and(first, second):
    if first is None:
        return second
    return lambda config: first(config) and second(config)


def rules() -> tuple[Rule, ...]:
    """Rules of ``config.model``: a registered name whose block holds the entry's keys,
    ``max_length``, and each registered entry's own rules when it is the one named."""

    def has_keys(name, config):
        return all(k in config.model for k in MODELS[name].required_keys())

    out = [
        Rule(
            "model.name",
            lambda v, config: v in MODELS,
            f"a registered model: one of {names()} (a model of your own: register it in a "
            "module named in config.extra_modules)",
        ),
        Rule(
            "model.name",
            has_keys,
            "a model whose keys config.model holds; the block was built for another model: "
            "choose the model with --config=configs/default.py:model=NAME (which builds its "
            "block), not with --config.model.name",
        ),
        Rule("model.max_length", *integer(1, note=" (tokens per example)")),
        Rule(
            "model.init_from",
            lambda v, config: isinstance(v, str),
            "a path ('' = the model's own init): a run's workdir, an orbax checkpoint of "
            "the parameters, or a flax msgpack file",
        ),
    ]
    for spec in MODELS.values():
        out += [dataclasses.replace(r, when=_and(r.when, _is_model(spec.name))) for r in spec.rules]
    return tuple(out)


def build(model_cfg, tokenizer: tokenizer_lib.Tokenizer) -> lm.LanguageModel:
    """The ``LanguageModel`` of a validated ``config.model`` block and a tokenizer.

    Checks, on shapes only (``jax.eval_shape``), that ``apply`` maps int32[1, L] tokens
    to float[1, L, V] logits, V = ``tokenizer.vocab_size``.

    Raises:
      KeyError: ``model_cfg.name`` is not registered.
      ValueError: the logits have another shape (the message names the entry).
    """
    if model_cfg.name not in MODELS:
        raise KeyError(_unknown(model_cfg.name) + ".")
    spec = MODELS[model_cfg.name]
    functions = spec.build(model_cfg, tokenizer.vocab_size)
    model = lm.LanguageModel(
        name=spec.name,
        init=functions.init,
        apply=functions.apply,
        tokenizer=tokenizer,
        max_length=int(model_cfg.max_length),
        partition=spec.partition,
    )
    tokens = jax.ShapeDtypeStruct((1, model.max_length), jnp.int32)
    logits = jax.eval_shape(
        lambda key, x: model.apply(model.init_params(key), x, False, None),
        jax.random.key(0),
        tokens,
    )
    expected = (1, model.max_length, tokenizer.vocab_size)
    if tuple(logits.shape) != expected or not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(
            f"Model {spec.name!r}: apply(params, int32[1, {model.max_length}] tokens) gave "
            f"{logits.dtype}{list(logits.shape)} logits; expected float{list(expected)}: one "
            f"logit per token of the tokenizer's vocabulary (V = {tokenizer.vocab_size} for "
            f"config.data.tokenizer={tokenizer.spec!r}; build(model_cfg, vocab_size) receives it)."
        )
    return model
