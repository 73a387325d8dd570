"""Every data-selection method runs in the driver, logs its diagnostics, and resumes exactly
(slow tier); the reference-model methods load the runs they are given.

A resume is simulated by deleting the last checkpoint of a finished run (as if it had
been killed after the previous one) and running the same config again: the metrics
must equal the uninterrupted run's.
"""

import os
import shutil

import pytest

from adaptive_data import methods, train

from conftest import deterministic_rows, metrics_rows, run_config

SELECTING_METHODS = sorted(methods.names(selecting=True))
# Diagnostics each method must log, beyond COMMON_KEYS.
METHOD_KEYS = {
    "align_filter": {"select/score_selected"},
    "anograd": {"outer/objective", "outer/cosine", "select/ess_fraction"},
    "soba": {"soba/v_norm", "outer/objective"},
    "dds": {"outer/objective", "dds/step_norm"},
    "l2rw": {"select/score_selected"},
    "domain_mixture": {"mixture/alpha/python", "mixture/alignment/python"},
    "classifier": {"classifier/accuracy", "outer/objective"},
    "dsir": {"dsir/feature_kl", "dsir/target_ngrams"},
    "cds": {"select/score_selected"},
    "rho": {"select/score_selected"},
}
COMMON_KEYS = {
    "select/target_share",
    "select/pool_target_share",
    "select/domain_share/python",
    "select/active",
}


@pytest.fixture(scope="module")
def reference_runs(tfds_dir, tmp_path_factory):
    """Two short base runs of different seeds, so their models differ: cds's generic
    scoring LM (seed 0) and its target LM and rho's reference (seed 1); as config
    overrides, with the reserved shard of the pool a rho run reads around."""
    workdirs = []
    for seed in (0, 1):
        workdir = str(tmp_path_factory.mktemp(f"reference_seed{seed}"))
        train.train_and_evaluate(run_config(tfds_dir, **{"train.steps": 4, "seed": seed}), workdir)
        workdirs.append(workdir)
    generic, target = workdirs
    return {
        "cds.generic_from": generic,
        "cds.target_from": target,
        "rho.reference_from": target,
        "data.reserved_fraction": 0.2,
    }


@pytest.mark.slow
@pytest.mark.parametrize("method", SELECTING_METHODS)
def test_method_runs_logs_diagnostics_and_resumes_exactly(
    method, tfds_dir, tmp_path, reference_runs
):
    workdir = str(tmp_path / method)
    config = run_config(
        tfds_dir,
        f"method={method},runlocal",
        **{
            "train.steps": 12,
            "checkpoint.every": 6,
            "train.eval_every": 6,
            "train.log_every": 2,
            "select.warmup_steps": 2,
            **reference_runs,
        },
    )
    train.train_and_evaluate(config, workdir)
    rows = metrics_rows(workdir)
    last = rows[-1]
    assert METHOD_KEYS.get(method, set()) | COMMON_KEYS <= set(last), sorted(last)
    assert last["select/active"] == 1.0
    if method == "domain_mixture":
        alphas = [
            v
            for k, v in last.items()
            if k.startswith("mixture/alpha/") and k != "mixture/alpha_entropy"
        ]
        assert sum(alphas) == pytest.approx(1.0, abs=1e-5) and min(alphas) > 0
    if method in ("cds", "rho"):  # two different models: the loss differences are not 0
        assert abs(last["select/score_selected"]) > 1e-4

    shutil.rmtree(os.path.join(workdir, "checkpoints", "12"))
    train.train_and_evaluate(config, workdir)
    assert deterministic_rows(metrics_rows(workdir)) == deterministic_rows(rows)


def test_unknown_strategy_and_bad_downsampling_are_refused(tfds_dir, tmp_path):
    config = run_config(tfds_dir, "method=anograd,runlocal", **{"select.strategy": "best"})
    with pytest.raises(ValueError, match="config.select.strategy='best'"):
        train.train_and_evaluate(config, str(tmp_path / "a"))
    config = run_config(tfds_dir, "method=anograd,runlocal", **{"select.downsampling": 0})
    with pytest.raises(ValueError, match="config.select.downsampling=0"):
        train.train_and_evaluate(config, str(tmp_path / "b"))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cds", "rho"])
def test_reference_methods_load_the_parameters_of_their_workdirs(method, tfds_dir, reference_runs):
    import jax
    import numpy as np

    from adaptive_data import checkpoint as ckpt
    from adaptive_data import methods, models
    from adaptive_data import train_state as ts
    from adaptive_data.data import tokenizer

    config = run_config(tfds_dir, f"method={method},runlocal", **reference_runs)
    model = models.build(config.model, tokenizer.BYTES)
    built = methods.build(
        config, model=model, tx=ts.make_optimizer(config.train), domains=("a",), target_domain="a"
    )
    params = model.init_params(jax.random.key(0))
    # The reference methods read their workdirs only, never the target_train stream.
    references = built.load_state(built.init_state(jax.random.key(1), params), target_train=None)
    generic = jax.tree.leaves(ckpt.restore_params(reference_runs["cds.generic_from"]))
    target = jax.tree.leaves(ckpt.restore_params(reference_runs["cds.target_from"]))
    # The two runs' models differ: a swapped or shared reference fails below.
    assert any(not np.array_equal(a, b) for a, b in zip(generic, target))
    expected = {"target": target, **({"generic": generic} if method == "cds" else {})}
    for field, saved in expected.items():
        loaded = jax.tree.leaves(getattr(references, field))
        assert len(loaded) == len(saved)
        for a, b in zip(loaded, saved):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=field)


def test_reference_methods_need_their_workdirs(tfds_dir):
    from adaptive_data import validation

    for method, key in (("rho", "rho.reference_from"), ("cds", "cds.generic_from")):
        config = run_config(tfds_dir, f"method={method},runlocal")
        with pytest.raises(ValueError, match=rf"config.{key}='': must be the workdir"):
            validation.validate_config(config)
