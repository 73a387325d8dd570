"""A method registered from outside the package (tests/plugin_highest_loss.py): it builds,
its own config rule is applied, it selects the b highest-loss examples, and it trains from
the command line through ``extra_modules``."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from adaptive_data import config_args, methods, run_setup, validation
from adaptive_data.core import selection
from adaptive_data.models import transformer

from conftest import REPO_ROOT, main_command, synthetic_lm_batch, tiny_config

TESTS_DIR = str(REPO_ROOT / "tests")
ARG = "method=highest_loss,extra_modules=plugin_highest_loss,runlocal"


@pytest.fixture(autouse=True, scope="module")
def _registered_only_here():
    """The plugin registers itself when first imported; afterwards the registry is left
    as it was, so other tests' method lists do not see it."""
    yield
    if "highest_loss" in methods.METHODS:
        methods.unregister("highest_loss")
    sys.modules.pop("plugin_highest_loss", None)


def _config(**overrides):
    config = config_args.load_config(f"configs/default.py:{ARG}")
    return config_args.override(config, overrides)


def test_the_config_imports_the_module_and_checks_its_rule():
    config = _config()
    assert config.extra_modules == ("plugin_highest_loss",)
    assert config.highest_loss.strategy == "top"
    assert "highest_loss" in methods.names(selecting=True, needs_other_runs=False)
    validation.validate_config(config)
    config.highest_loss.strategy = "bottom"
    with pytest.raises(validation.ConfigError, match=r"highest_loss.strategy='bottom': must be"):
        validation.validate_config(config)


def test_an_unknown_extra_module_is_refused_with_its_name():
    with pytest.raises(ImportError, match="extra_modules names 'no_such_plugin'"):
        config_args.load_config("configs/default.py:method=base,extra_modules=no_such_plugin")


def test_it_selects_the_b_highest_loss_examples():
    config = tiny_config(ARG)
    setup = run_setup.build(config, domains=("generic", "target"), target_domain="target")
    method = setup.method
    state = setup.initial_state()
    big = synthetic_lm_batch(np.random.default_rng(0), 16, 16, num_domains=2)
    big = jax.tree.map(jax.numpy.asarray, big)
    scores = method.score(state.params, state.method_state, big, None, jax.random.key(0))
    # Naive reference: each example's loss computed alone, then a numpy argsort.
    eval_loss = transformer.make_loss_fn(setup.model)

    def alone(i):
        return jax.tree.map(lambda x: x[i : i + 1], big)

    losses = np.array([float(eval_loss(state.params, alone(i))[0]) for i in range(16)])
    np.testing.assert_allclose(scores, losses, rtol=1e-5)
    indices, _ = selection.select(jax.random.key(1), scores, 4, strategy=method.strategy)
    assert method.strategy == "top"
    assert set(np.asarray(indices).tolist()) == set(np.argsort(-losses)[:4].tolist())


@pytest.mark.slow
def test_it_trains_from_the_command_line(tfds_dir, tmp_path):
    workdir = tmp_path / "highest_loss"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]),
    }
    command = main_command(
        workdir, tfds_dir, "--config.train.steps=6", "--config.train.eval_every=6", arg=ARG
    )
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6
    assert any(r.get("select/active") == 1.0 for r in rows)
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["extra_modules"] == ["plugin_highest_loss"]


def test_the_benchmark_runs_a_registered_method_of_your_own():
    # benchmark.py --extra_modules=plugin_highest_loss --methods=highest_loss: the module is
    # imported, the method joins the grid, and every run's config carries the module.
    sys.path.insert(0, str(REPO_ROOT / "experiments"))
    try:
        import benchmark_setup
    finally:
        sys.path.remove(str(REPO_ROOT / "experiments"))
    methods.import_extra_modules(["plugin_highest_loss"])
    assert "highest_loss" in benchmark_setup.grid_methods()
    args = type("Args", (), {"extra_modules": "plugin_highest_loss", "tfds_data_dir": None})
    config = benchmark_setup.run_config(
        benchmark_setup.PRESETS["quick"], "python", "highest_loss", 0, args
    )
    assert config.method == "highest_loss"
    assert tuple(config.extra_modules) == ("plugin_highest_loss",)
    validation.validate_config(config)
