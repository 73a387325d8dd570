"""The method registry and the one train step, on synthetic batches (fast, no corpus).

For every registered method: every term of its update receives the batch
docs/algorithms.md says (the outer update's and the scorer's target batch is the
``target_train`` stream, the outer update's generic batch is the documented one). Plus
the step-level maths of weighted selection (L2RW) and the schedule flags.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_data import methods, run_setup
from adaptive_data import train_state as ts
from adaptive_data.core import reference_scores, selection
from adaptive_data.core.outer.base import OuterMethod
from adaptive_data.models import weighting

from conftest import tiny_config

DOMAINS = ("generic_a", "generic_b", "target")
ALL_METHODS = sorted(methods.names())
# The generic batch each method's outer update must see (docs/algorithms.md, batch table).
DOCUMENTED_OUTER_BATCH = {
    "anograd": "uniform",
    "dds": "uniform",
    "soba": "selected",
    "domain_mixture": "big",
    "classifier": "big",
    "dsir": "big",
}


def _config(name: str, **overrides):
    """A very small config of method ``name`` (``conftest.tiny_config``)."""
    return tiny_config(f"method={name},runlocal", **overrides)


def _setup(config) -> run_setup.RunSetup:
    return run_setup.build(config, domains=DOMAINS, target_domain="target")


def test_every_method_is_registered_with_a_known_scorer():
    assert {
        "base",
        "mixing",
        "finetune",
        "align_filter",
        "anograd",
        "soba",
        "dds",
        "l2rw",
        "domain_mixture",
        "classifier",
        "cds",
        "dsir",
        "rho",
    } <= set(methods.METHODS)
    for spec in methods.METHODS.values():
        assert spec.scorer in methods.SCORERS and spec.summary


def test_unknown_method_and_bad_choices_are_refused():
    with pytest.raises(ValueError, match=r"config.method='nope': must be one of .*anograd"):
        _setup(_config("base", method="nope"))
    with pytest.raises(ValueError, match=r"config.dds.lookahead_batch='all': must be one of"):
        _setup(_config("dds", **{"dds.lookahead_batch": "all"}))
    with pytest.raises(ValueError, match=r"config.select.strategy='best': must be one of"):
        _setup(_config("anograd", **{"select.strategy": "best"}))
    with pytest.raises(ValueError, match=r"config.select.temperature=0.0: must be a number > 0"):
        _setup(_config("anograd", **{"select.temperature": 0.0}))
    with pytest.raises(ValueError, match=r"config.outer.every=0: must be an int >= 1"):
        _setup(_config("dds", **{"outer.every": 0}))


def _recorded(fn, log, name):
    """``fn`` that appends its batch arguments' ``example_id``s to ``log[name]``."""

    def wrapped(*args):
        log.setdefault(name, []).append(
            [np.asarray(a["example_id"]) for a in args if isinstance(a, dict) and "example_id" in a]
        )
        return fn(*args)

    return wrapped


@pytest.mark.parametrize("name", ALL_METHODS)
def test_each_term_sees_the_documented_batches(name, method_batches):
    """The scorer and the outer update get the target_train batch; the outer update's
    generic batch is the documented one; the model trains on the selected examples."""
    config = _config(name)
    setup = _setup(config)
    method = setup.method
    if "target" in method.streams:
        assert method.streams["target"][0] == "target_train"
    assert {split for split, _ in method.streams.values()} <= {"generic_train", "target_train"}
    if name in DOCUMENTED_OUTER_BATCH:
        assert method.outer_batch == DOCUMENTED_OUTER_BATCH[name]
    if not method.selects:
        return
    log, trained_on, original = {}, [], method
    recording = {"score": _recorded(original.score, log, "score")}
    if original.outer is not None:
        recording["outer"] = OuterMethod(
            original.outer.init, _recorded(original.outer.update, log, "outer")
        )

    def loss_fn(params, batch, key):
        trained_on.append(np.asarray(batch["example_id"]))
        return original.loss_fn(params, batch, key)

    method = dataclasses.replace(original, loss_fn=loss_fn, **recording)
    batches = method_batches(method)
    big_ids = np.asarray(batches["generic"]["example_id"])
    target_ids = np.asarray(batches["target"]["example_id"])
    with jax.disable_jit():
        methods.train_step(setup.initial_state(), batches, method=method, **method.flags(0))
    ((score_big, score_target),) = log["score"]
    np.testing.assert_array_equal(score_big, big_ids)
    np.testing.assert_array_equal(score_target, target_ids)
    (selected,) = trained_on
    assert len(selected) == method.batch_size and set(selected) <= set(big_ids)
    if method.outer is not None:
        ((outer_generic, outer_target),) = log["outer"]
        np.testing.assert_array_equal(outer_target, target_ids)
        expected = {"uniform": big_ids[: method.batch_size], "selected": selected, "big": big_ids}[
            method.outer_batch
        ]
        np.testing.assert_array_equal(outer_generic, expected)


@pytest.mark.parametrize(
    "option, value, expected",
    [("dds.lookahead_batch", "selected", "selected"), ("soba.outer_batch", "uniform", "uniform")],
)
def test_outer_batch_options(option, value, expected):
    name = option.split(".")[0]
    method = _setup(_config(name, **{option: value})).method
    assert method.outer_batch == expected


def test_l2rw_step_trains_on_the_renormalised_weights():
    """Scores whose positive part on the kept b = 3 is [.5, .3, .2] (x 10): one SGD step
    (rate 1) moves theta by -(0.5 g_0 + 0.3 g_1 + 0.2 g_2), the weighted gradient."""
    config = _config("l2rw", **{"train.batch_size": 3, "select.downsampling": 2})
    method = _setup(config).method
    scores = jnp.array([-1.0, 5.0, -4.0, 3.0, 2.0, -2.0])
    x = jax.random.normal(jax.random.key(1), (6, 5))
    theta = {"w": jax.random.normal(jax.random.key(2), (5,))}

    def loss_fn(params, batch, key):
        del key
        return jnp.log1p(jnp.exp(batch["x"] @ params["w"]))

    method = dataclasses.replace(
        method, loss_fn=loss_fn, tx=optax.sgd(1.0), score=lambda *args: scores
    )
    state = ts.init_state(theta, method.tx, 0, None)
    batches = {
        "generic": {"x": x, "domain": jnp.zeros((6,), jnp.int32)},
        "target": {"x": x[:2], "domain": jnp.zeros((2,), jnp.int32)},
    }
    new_state, _ = methods.train_step(
        state, batches, method=method, active=True, outer_update=False
    )
    per_example = [
        jax.grad(lambda p, i=i: loss_fn(p, {"x": x[i : i + 1]}, None)[0])(theta)["w"]
        for i in (1, 3, 4)
    ]
    expected = theta["w"] - (0.5 * per_example[0] + 0.3 * per_example[1] + 0.2 * per_example[2])
    np.testing.assert_allclose(new_state.params["w"], expected, rtol=1e-5, atol=1e-6)


def test_flags_follow_the_warmup_and_outer_schedule():
    method = _setup(_config("anograd", **{"select.warmup_steps": 3, "outer.every": 2})).method
    flags = [method.flags(step) for step in range(6)]
    assert [f["active"] for f in flags] == [False, False, False, True, True, True]
    assert [f["outer_update"] for f in flags] == [False, False, False, False, True, False]
    base = _setup(_config("base")).method
    assert base.flags(10) == {"active": False, "outer_update": False}


def test_readme_method_table_lists_exactly_the_registered_methods():
    from conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    table = readme[readme.index("| `config.method` |") :]
    table = table[: table.index("\n\n")]
    listed = [row.split("|")[1].strip().strip("`") for row in table.splitlines()[2:]]
    assert listed == list(methods.METHODS)


def _linear_loss(params, batch):
    """l(x; theta) = theta x per example: hand-computable scores."""
    return params * batch["x"]


def test_rho_scores_are_the_reducible_loss_and_keep_the_largest():
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    scores = reference_scores.reducible_loss(
        _linear_loss, jnp.float32(1.0), jnp.float32(0.5), {"x": x}
    )
    # l(x; 1) - l(x; 0.5) = 0.5 x: the largest reducible loss is the last example.
    np.testing.assert_allclose(scores, [0.5, 1.0, 1.5, 2.0])
    indices, _ = selection.top_b(scores, 2)
    assert list(np.asarray(indices)) == [3, 2]


def test_cds_keeps_the_lowest_finetuned_minus_generic_loss():
    # Hand-picked per-example losses of the two scoring models, named by their "params".
    losses = {
        "generic": jnp.array([2.0, 2.0, 2.0, 2.0]),
        "finetuned": jnp.array([2.5, 1.0, 1.9, 3.0]),
    }  # example 1: most target-like
    scores = reference_scores.contrastive_score(
        lambda params, batch: losses[params], "generic", "finetuned", batch=None
    )
    np.testing.assert_allclose(scores, [-0.5, 1.0, 0.1, -1.0], rtol=1e-6)  # l_g - l_ft
    indices, _ = selection.top_b(scores, 2)
    # The two lowest l_finetuned - l_generic: examples 1 (-1.0) then 2 (-0.1).
    assert list(np.asarray(indices)) == [1, 2]


def test_classifier_trains_on_the_top_fraction_by_logit(method_batches):
    config = _config("classifier")
    setup = _setup(config)
    method = setup.method
    assert method.strategy == "top" and method.outer_batch == "big"
    batches = method_batches(method)
    state = setup.initial_state()
    wmodel = weighting.from_config(config.weighting, setup.model.tokenizer)
    logits = weighting.weighting_forward(
        wmodel, state.method_state.phi, batches["generic"]["inputs"], mode="logits"
    )
    trained_on = []

    def loss_fn(params, batch, key):
        trained_on.append(np.asarray(batch["example_id"]))
        return method.loss_fn(params, batch, key)

    with jax.disable_jit():
        methods.train_step(
            state, batches, method=dataclasses.replace(method, loss_fn=loss_fn), **method.flags(0)
        )
    # _config keeps b = 4 of B = 16; generic example ids are their positions in the batch.
    logits = np.asarray(logits)
    (kept,) = trained_on
    assert logits.shape == (16,) and len(set(kept.tolist())) == 4
    dropped = np.setdiff1d(np.arange(16), kept)
    assert logits[kept].min() > logits[dropped].max()  # the b largest logits, and only them
