"""run_setup.build: the one setup path of the driver, the benchmarks and the tests."""

import jax
import numpy as np
import pytest

from adaptive_data import config_args, run_setup

from conftest import load_default_config

DOMAINS = ("generic_a", "generic_b", "target")
TINY = {
    "model.num_layers": 1,
    "model.width": 16,
    "model.mlp_dim": 32,
    "model.num_heads": 2,
    "model.max_length": 8,
    "weighting.embed_dim": 4,
    "weighting.conv_features": (4,),
}


def _setup(method="anograd", seed=0):
    config = load_default_config(f"method={method},runlocal")
    config = config_args.override(config, {**TINY, "seed": seed})
    return run_setup.build(config, domains=DOMAINS, target_domain="target")


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_two_builds_of_one_config_give_the_same_state_and_the_seed_changes_it():
    state = _setup().initial_state()
    _assert_trees_equal(state, _setup().initial_state())
    other = _setup(seed=1).initial_state()
    for field in ("params", "method_state"):  # the weighting model phi is drawn too
        a, b = jax.tree.leaves(getattr(state, field)), jax.tree.leaves(getattr(other, field))
        assert any(not np.array_equal(x, y) for x, y in zip(a, b)), field


def test_initial_state_follows_the_documented_keys():
    """theta from the first half of split(key(seed)); rng = key_data(key(seed)); step 0."""
    setup = _setup(seed=3)
    state = setup.initial_state()
    init_key, _ = jax.random.split(jax.random.key(3))
    expected = setup.model.init_params(init_key)  # eager: round-off apart
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(state.rng, jax.random.key_data(jax.random.key(3)))
    assert int(state.step) == 0
    assert state.method_state is not None  # anograd's weighting model and its optimiser


@pytest.mark.parametrize("method", ["base", "anograd"])
def test_abstract_state_has_the_shapes_of_the_initial_state(method):
    setup = _setup(method)
    abstract, state = setup.abstract_state(), setup.initial_state()
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    for a, x in zip(jax.tree.leaves(abstract), jax.tree.leaves(state)):
        assert isinstance(a, jax.ShapeDtypeStruct)
        assert (a.shape, a.dtype) == (x.shape, x.dtype)
