"""mixing, both ways of mixing the target in (``mixing.batch``), on real batches of the
input pipeline: the step's batch holds the configured target share, the step's loss and
gradient are those of a naive reference computed from the same batches, and the mixed
batch costs base's FLOPs (XLA's cost analysis) while the separate batches cost
(b + target_batch_size) / b of them."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_data import methods, run_setup, train
from adaptive_data.data import pipeline, sources
from adaptive_data.methods import mixing
from adaptive_data.models import transformer
from adaptive_data.validation import ConfigError

from conftest import REPO_ROOT, tiny_config

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import benchmark_setup  # noqa: E402


def _mixing_config(tmp_path, batch: str, **overrides):
    generic, target = tmp_path / "generic.txt", tmp_path / "target.txt"
    generic.write_text("".join(f"generic document number {i}\n" for i in range(300)))
    target.write_text("".join(f"target text {i} of the task\n" for i in range(200)))
    return tiny_config(
        "method=mixing,runlocal",
        **{
            "data.generic": f"file:{generic}",
            "data.target": f"file:{target}",
            "data.num_threads": 1,
            "model.dropout_rate": 0.0,
            "train.batch_size": 16,
            "train.target_batch_size": 8,
            "mixing.batch": batch,
            **overrides,
        },
    )


def _first_step(config):
    """(setup, initial state, the step's host batches per stream, the step's metrics) of
    the first step."""
    corpus = sources.load_corpus(config.data)
    setup = run_setup.build(config, domains=corpus.domains, target_domain=corpus.target_domain)
    streams = train.train_streams(corpus, setup.method, config, setup.model.tokenizer)
    batches = {name: next(stream) for name, stream in streams.items()}
    state = setup.initial_state()
    device_batches = {name: pipeline.device_view(b) for name, b in batches.items()}
    _, metrics = jax.jit(
        lambda s, b: methods.train_step(s, b, method=setup.method, active=False, outer_update=False)
    )(state, device_batches)
    return setup, state, batches, metrics


@pytest.mark.parametrize("generic_weight,expected_target", [(0.9, 2), (0.75, 4), (0.5, 8)])
def test_a_mixed_batch_holds_the_configured_target_share(tmp_path, generic_weight, expected_target):
    config = _mixing_config(tmp_path, "mixed", **{"mixing.generic_weight": generic_weight})
    corpus = sources.load_corpus(config.data)
    setup = run_setup.build(config, domains=corpus.domains, target_domain=corpus.target_domain)
    target_docs = {r["doc_id"] for r in corpus.splits["target_train"]}
    streams = train.train_streams(corpus, setup.method, config, setup.model.tokenizer)
    for _ in range(3):  # three steps' batches
        doc_ids = np.concatenate([next(stream)["doc_id"] for stream in streams.values()])
        assert doc_ids.shape == (16,)  # one batch of b, like base's
        # round((1 - gw) * 16) of its examples are target_train documents.
        assert sum(d in target_docs for d in doc_ids) == expected_target


@pytest.mark.parametrize("batch", ["separate", "mixed"])
def test_the_step_descends_the_weighted_loss_of_both_streams(tmp_path, batch):
    """The step's loss and gradient norm against a naive reference on the same batches:
    separate: gw mean_g + (1 - gw) mean_t; mixed: the mean over the b examples of the one
    batch, whatever stream they came from."""
    config = _mixing_config(tmp_path, batch, **{"mixing.generic_weight": 0.75})
    setup, state, batches, metrics = _first_step(config)
    loss_fn = transformer.make_loss_fn(setup.model)
    generic = pipeline.device_view(batches["generic"])
    target = pipeline.device_view(batches["target"])

    def reference(params):
        if batch == "separate":
            return 0.75 * jnp.mean(loss_fn(params, generic)) + 0.25 * jnp.mean(
                loss_fn(params, target)
            )
        one_batch = jax.tree.map(lambda g, t: jnp.concatenate([g, t]), generic, target)
        return jnp.mean(loss_fn(params, one_batch))

    loss, grads = jax.jit(jax.value_and_grad(reference))(state.params)
    assert float(metrics["train/loss"]) == pytest.approx(float(loss), rel=1e-5)
    assert float(metrics["train/grad_norm"]) == pytest.approx(
        float(optax.tree.norm(grads)), rel=1e-4
    )

    # Neither stream alone gives that gradient.
    def mean_loss(params, one_stream):
        return jnp.mean(loss_fn(params, one_stream))

    for alone in (generic, target):
        alone_norm = optax.tree.norm(jax.jit(jax.grad(mean_loss))(state.params, alone))
        assert abs(float(alone_norm) - float(metrics["train/grad_norm"])) > 1e-3


def test_a_mixed_step_costs_base_flops_and_separate_batches_more():
    values = {"train.batch_size": 16, "train.target_batch_size": 16}
    flops = {
        name: benchmark_setup.step_flops(tiny_config(arg, **values))["warmup"]
        for name, arg in (
            ("base", "method=base,runlocal"),
            ("separate", "method=mixing,runlocal"),
        )
    }
    flops["mixed"] = benchmark_setup.step_flops(
        tiny_config("method=mixing,runlocal", **values, **{"mixing.batch": "mixed"})
    )["warmup"]
    assert flops["mixed"] / flops["base"] == pytest.approx(1.0, abs=0.05)
    assert flops["separate"] / flops["base"] == pytest.approx(2.0, abs=0.1)


def test_a_mixed_batch_without_one_kind_is_refused():
    config = tiny_config("method=mixing,runlocal", **{"mixing.batch": "mixed"})
    config.mixing.generic_weight = 0.99  # round(0.01 * 4) = 0 target examples
    with pytest.raises(ConfigError, match="a mixed batch holds both kinds"):
        run_setup.build(config, domains=("a", "b"), target_domain="b")
    assert mixing.mixed_batch_target_size(4, 0.99) == 0
