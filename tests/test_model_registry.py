"""The model registry: the default entry, a model registered from outside the package
(examples/rope_lm.py) chosen by ``model=`` with its own block and rules, the errors that
say what to do, and every method training the outside model over a subword vocabulary."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adaptive_data import config_args, methods, models, run_setup, validation
from adaptive_data.config_rules import Rule, integer
from adaptive_data.data import embedded_corpus, pipeline, tokenizer

from conftest import load_default_config, tiny_config

pytestmark = pytest.mark.usefixtures("example_model_only_here")

ROPE_ARG = "model=rope_lm,extra_modules=examples.rope_lm,runlocal"
DOMAINS = ("generic_a", "generic_b", "target")


def test_the_default_model_is_the_byte_transformer():
    config = load_default_config("runlocal")
    assert models.DEFAULT == "transformer" == config.model.name
    assert config.data.tokenizer == "bytes"
    spec = models.MODELS["transformer"]
    assert set(spec.required_keys()) <= set(config.model)
    model = models.build(config.model, tokenizer.BYTES)
    params = model.init_params(jax.random.key(0))
    assert params["embed"]["embedding"].shape == (259, config.model.width)


def test_an_outside_model_is_chosen_by_name_and_brings_its_block():
    config = load_default_config(ROPE_ARG)
    assert config.model.name == "rope_lm"
    assert config.extra_modules == ("examples.rope_lm",)
    assert "rope_base" in config.model and "size" not in config.model
    validation.validate_config(config)
    # Its rules apply when it is the model named (and the Transformer's do not).
    bad = config_args.override(config, {"model.rope_base": 0.5, "model.width": 60})
    with pytest.raises(validation.ConfigError) as err:
        validation.validate_config(bad)
    assert "config.model.rope_base=0.5: must be a number > 1" in str(err.value)
    assert "config.model.width=60: must be a multiple of 2 * config.model.num_heads" in str(
        err.value
    )


def test_model_errors_say_what_to_do():
    with pytest.raises(ValueError, match=r"Unknown model='nope'; choose one of \['transformer'"):
        load_default_config("model=nope,runlocal")
    # Renaming the model of a block built for another one: build the right block instead.
    config = load_default_config("extra_modules=examples.rope_lm,runlocal")
    config = config_args.override(config, {"model.name": "rope_lm"})
    with pytest.raises(validation.ConfigError, match=r"choose the model with --config=configs/"):
        validation.validate_config(config)
    config = config_args.override(config, {"model.name": "nope"})
    with pytest.raises(validation.ConfigError, match=r"'nope': must be a registered model"):
        validation.validate_config(config)
    with pytest.raises(validation.ConfigError, match=r"config.data.tokenizer='gpt2': must be"):
        validation.validate_config(
            config_args.override(load_default_config(), {"data.tokenizer": "gpt2"})
        )


def _logits_of_width(width):
    def build(model_cfg, vocab_size):
        del vocab_size

        def init(rng, example_batch):
            return {"w": jax.random.normal(rng, (example_batch.shape[1], width))}

        def apply(params, tokens, train, rng):
            del train, rng
            return jnp.zeros((*tokens.shape, width)) + params["w"][None, : tokens.shape[1]]

        return models.ModelFunctions(init, apply)

    return build


def test_register_refuses_duplicates_and_keys_outside_the_block_and_build_checks_shapes():
    def defaults(arg):
        del arg
        return ml_collections.ConfigDict({"max_length": 8})

    spec = models.ModelSpec("fixed_width_test", _logits_of_width(7), "test", defaults)
    models.register(spec)
    try:
        with pytest.raises(ValueError, match="already registered"):
            models.register(spec)
        block = models.config_block("fixed_width_test", None)
        with pytest.raises(ValueError, match=r"gave float32\[1, 8, 7\] logits; expected float"):
            models.build(block, tokenizer.BYTES)
    finally:
        models.unregister("fixed_width_test")
    with pytest.raises(ValueError, match="rules of keys outside config.model"):
        models.register(
            models.ModelSpec(
                "x", _logits_of_width(1), "", defaults, rules=(Rule("seed", *integer(0)),)
            )
        )


def _real_batches(method, tok, max_length):
    """One batch per stream of ``method``, tokenized by ``tok`` from embedded documents."""
    records = [
        {**r, "domain": DOMAINS[i % 3]}
        for i, r in zip(range(64), embedded_corpus.iter_documents("python"))
    ]
    out = {}
    for stream, (_, size) in method.streams.items():
        (batch,) = pipeline.eval_batches(
            records,
            domains=DOMAINS,
            max_length=max_length,
            tokenizer=tok,
            batch_size=size,
            max_examples=size,
        )
        out[stream] = jax.tree.map(jnp.asarray, pipeline.device_view(batch))
    return out


# In the fast tier: a weighting-model method and DSIR (which reads the PAD id); the others
# in the slow tier.
FAST_METHODS = ("anograd", "dsir")


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(m, marks=() if m in FAST_METHODS else pytest.mark.slow)
        for m in sorted(methods.names())
    ],
)
def test_every_method_trains_the_outside_model_on_subword_tokens(subword_tokenizers, method):
    """One step of each method, with its outer update: finite metrics, parameters move,
    and the weighting model (if any) embeds the subword vocabulary."""
    config = tiny_config(
        f"method={method},{ROPE_ARG}",
        **{"data.tokenizer": subword_tokenizers["sentencepiece"], "train.warmup_steps": 0},
    )
    setup = run_setup.build(config, domains=DOMAINS, target_domain="target")
    tok = setup.model.tokenizer
    assert setup.model.name == "rope_lm" and tok.vocab_size == 515
    state = setup.initial_state()
    before = jax.tree.map(np.array, state.params)  # copies: the step donates the state
    batches = _real_batches(setup.method, tok, config.model.max_length)
    state, metrics = methods.jit_train_step(setup.method)(state, batches, **setup.method.flags(0))
    for name, value in metrics.items():
        assert np.all(np.isfinite(np.asarray(value))), name
    moved = jax.tree.map(lambda a, b: not np.allclose(a, np.asarray(b)), before, state.params)
    assert any(jax.tree.leaves(moved))
    phi = getattr(state.method_state, "phi", None)
    if isinstance(phi, dict) and "embed" in phi:
        assert phi["embed"]["embedding"].shape[0] == tok.vocab_size
