"""Transformer LM: per-example loss against a hand computation, causality, shapes."""

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_data import models
from adaptive_data.data import tokenizer
from adaptive_data.models import transformer

CFG = transformer.TransformerConfig(
    vocab_size=tokenizer.VOCAB_SIZE,
    num_layers=2,
    width=32,
    mlp_dim=64,
    num_heads=4,
    max_length=12,
    dropout_rate=0.0,
)


def _language_model(cfg):
    """The registry's ``LanguageModel`` of the Transformer module of ``cfg``."""
    functions = models.linen_functions(transformer.TransformerLM(cfg))
    return models.LanguageModel(
        "transformer", *functions, tokenizer=tokenizer.BYTES, max_length=cfg.max_length
    )


def _model_and_params():
    model = _language_model(CFG)
    return model, model.init_params(jax.random.key(0))


def _batch(texts, length):
    examples = [tokenizer.BYTES.lm_example(t, length) for t in texts]
    return {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}


def test_per_example_loss_equals_hand_computed_nll_with_padding():
    model, params = _model_and_params()
    batch = _batch(["hello there, world", "hi", ""], CFG.max_length)  # truncated, padded, empty
    losses = np.asarray(transformer.make_loss_fn(model)(params, batch))
    logits = np.asarray(model.apply(params, batch["inputs"], False, None), dtype=np.float64)
    targets = np.asarray(batch["targets"])
    expected = []
    for i in range(targets.shape[0]):
        nlls = []
        for t in range(targets.shape[1]):
            if targets[i, t] == tokenizer.PAD_ID:
                continue
            row = logits[i, t]
            log_z = np.log(np.sum(np.exp(row - row.max()))) + row.max()
            nlls.append(log_z - row[targets[i, t]])
        expected.append(np.mean(nlls))
    # "" still predicts EOS after BOS: one target token.
    assert losses.shape == (3,)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


def test_all_padding_example_has_zero_loss():
    model, params = _model_and_params()
    batch = _batch(["abc"], CFG.max_length)
    batch = dict(batch, mask=jnp.zeros_like(batch["mask"]))
    assert float(transformer.make_loss_fn(model)(params, batch)[0]) == 0.0


def test_causality_future_tokens_do_not_change_earlier_outputs():
    model, params = _model_and_params()
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 256, size=(2, CFG.max_length)).astype(np.int32)
    changed = inputs.copy()
    changed[:, 7:] = rng.integers(0, 256, size=(2, CFG.max_length - 7))
    logits_a = model.apply(params, jnp.asarray(inputs), False, None)
    logits_b = model.apply(params, jnp.asarray(changed), False, None)
    np.testing.assert_allclose(logits_a[:, :7], logits_b[:, :7], atol=1e-6)
    assert not np.allclose(logits_a[:, 7:], logits_b[:, 7:])
    # The same through the loss: per-position NLL before position 7 is unchanged.
    targets = jnp.asarray(inputs)
    nll_a = models.token_nll(logits_a, targets)[:, :7]
    nll_b = models.token_nll(logits_b, targets)[:, :7]
    np.testing.assert_allclose(nll_a, nll_b, atol=1e-6)


def test_shared_embeddings_and_shapes():
    model, params = _model_and_params()
    assert "embed" in params and not any("unembed" in k or "head" in k for k in params)
    logits = model.apply(params, jnp.zeros((3, 5), jnp.int32), False, None)
    assert logits.shape == (3, 5, CFG.vocab_size) and logits.dtype == jnp.float32


def test_dropout_needs_key_and_changes_output():
    model = _language_model(CFG.__class__(**{**CFG.__dict__, "dropout_rate": 0.5}))
    params = model.init_params(jax.random.key(0))
    batch = _batch(["some text here"], CFG.max_length)
    train_loss = transformer.make_loss_fn(model, deterministic=False)
    a = train_loss(params, batch, jax.random.key(1))
    b = train_loss(params, batch, jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, train_loss(params, batch, jax.random.key(1)))
