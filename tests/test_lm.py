"""The loss and the bits-per-byte sums of any model entry (adaptive_data.models.lm), against
hand computations; bits per byte over the same bytes whatever the tokenizer."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_data import models
from adaptive_data.data import embedded_corpus, pipeline, tokenizer


def _bigram_model(tok, max_length, seed=0):
    """A model that is no Flax module: logits of token t are row tokens[t] of a [V, V]
    table; ``train`` adds noise drawn from ``rng`` (a stand-in for dropout)."""

    def init(rng, example_batch):
        del example_batch
        return {"table": jax.random.normal(rng, (tok.vocab_size, tok.vocab_size))}

    def apply(params, tokens, train, rng):
        logits = params["table"][tokens]
        if train:
            logits = logits + jax.random.normal(rng, logits.shape)
        return logits

    return models.LanguageModel("bigram", init, apply, tokenizer=tok, max_length=max_length)


def _batch(tok, texts, length):
    examples = [tok.lm_example(t, length) for t in texts]
    return {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}


def test_loss_of_a_plain_function_model_equals_the_hand_computed_mean_nll():
    tok = tokenizer.BYTES
    model = _bigram_model(tok, 10)
    params = model.init_params(jax.random.key(0))
    batch = _batch(tok, ["hello world", "hi", ""], 10)
    losses = np.asarray(models.make_loss_fn(model)(params, batch))
    table = np.asarray(params["table"], np.float64)
    for i in range(3):
        nlls = [
            np.log(np.sum(np.exp(table[x]))) - table[x, y]
            for x, y, m in zip(batch["inputs"][i], batch["targets"][i], batch["mask"][i])
            if m
        ]
        np.testing.assert_allclose(losses[i], np.mean(nlls), rtol=1e-5)


def test_training_loss_runs_the_model_with_train_and_the_dropout_key():
    tok = tokenizer.BYTES
    model = _bigram_model(tok, 8)
    params = model.init_params(jax.random.key(0))
    batch = _batch(tok, ["some text"], 8)
    train_loss = models.make_loss_fn(model, deterministic=False)
    a = train_loss(params, batch, jax.random.key(1))
    b = train_loss(params, batch, jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, train_loss(params, batch, jax.random.key(1)))
    eval_loss = models.make_loss_fn(model)(params, batch)
    assert not np.allclose(a, eval_loss)


def _documents():
    """Sixteen embedded documents of at most 200 bytes: 8 of Python, 8 of Russian text."""
    docs = []
    for domain in ("python", "russian"):
        records = embedded_corpus.iter_documents(domain)
        short = (r for r in records if len(r["text"].encode("utf-8")) <= 200)
        docs += [{**r, "domain": "all"} for r in itertools.islice(short, 8)]
    return docs


@pytest.mark.parametrize("kind", ("bytes", "sentencepiece", "hf"))
def test_bits_per_byte_is_over_the_same_bytes_for_every_tokenizer(subword_tokenizers, kind):
    """Whole documents: ``num_bytes`` sums to their UTF-8 bytes under every tokenizer, and
    the evaluation sums of a uniform model (NLL ln V per target) give bits per byte
    (#tokens + 1 EOS per document) * log2 V / bytes."""
    tok = tokenizer.load(subword_tokenizers.get(kind, kind))
    docs = _documents()
    total_bytes = sum(len(d["text"].encode("utf-8")) for d in docs)
    length = 202  # longer than any document's tokens: nothing is truncated
    batches = pipeline.eval_batches(
        docs, domains=("all",), max_length=length, tokenizer=tok, batch_size=8, max_examples=64
    )
    assert sum(int(np.sum(b["num_bytes"])) for b in batches) == total_bytes

    def uniform_apply(params, tokens, train, rng):
        del params, train, rng
        return jnp.zeros((*tokens.shape, tok.vocab_size), jnp.float32)

    model = models.LanguageModel(
        "uniform", lambda rng, x: {}, uniform_apply, tokenizer=tok, max_length=length
    )
    eval_fn = models.make_eval_fn(model)
    sums = [eval_fn({}, pipeline.device_view(b)) for b in batches]
    nll = sum(float(s[0]) for s in sums)
    assert sum(float(s[1]) for s in sums) == total_bytes
    num_targets = sum(len(tok.encode(d["text"])) - 1 for d in docs)
    expected_bpb = num_targets * math.log2(tok.vocab_size) / total_bytes
    np.testing.assert_allclose(nll / math.log(2.0) / total_bytes, expected_bpb, rtol=1e-5)
    if kind != "bytes":  # a subword tokenizer predicts fewer tokens for the same bytes
        assert num_targets < sum(len(tokenizer.BYTES.encode(d["text"])) - 1 for d in docs)
