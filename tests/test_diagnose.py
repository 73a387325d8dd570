"""The when-does-selection-work test (docs/algorithms.md, "When does selection help").

- ``verdict`` on hand-made results, with and without the stability requirement;
- the choice of the diagnosed checkpoint within 15% of the budget;
- the statistics on a toy quadratic problem with a known answer: a target that sits in the
  pool gives clearly positive gains; a target drawn from the pool's own distribution gives
  gains that are zero up to noise; multiplying the loss by a constant leaves every
  statistic unchanged; one batch's values match a numpy computation with closed-form
  gradients and a hand-written Adam step;
- an end-to-end diagnosis of a tiny training run (slow).
"""

import json
import math
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.stats

from adaptive_data import diagnose

# --------------------------------------------------------------------------- verdict


def _stat(mean, stderr=0.01):
    return {"mean": mean, "stderr": stderr, "min": mean - 1.0, "max": mean + 1.0}


def _results(**overrides):
    results = {
        "cosine_gain": _stat(0.1),
        "relative_lookahead_gain": _stat(0.3),
        "rank_corr_checkpoints": _stat(0.8),
    }
    results.update(overrides)
    return results


@pytest.mark.parametrize("needs_stable_scores", [False, True])
def test_verdict_clearly_positive_and_stable(needs_stable_scores):
    ok, reasons = diagnose.verdict(_results(), needs_stable_scores=needs_stable_scores)
    assert ok and len(reasons) == 3
    assert all("not clearly" not in r and "unstable" not in r for r in reasons)


@pytest.mark.parametrize("key", ["cosine_gain", "relative_lookahead_gain"])
def test_verdict_gain_within_noise_of_zero(key):
    # Mean 0.015 is within 2 standard errors (0.02) of zero.
    ok, reasons = diagnose.verdict(
        _results(**{key: _stat(0.015, stderr=0.01)}), needs_stable_scores=False
    )
    assert not ok
    assert sum("not clearly positive" in r for r in reasons) == 1


def test_verdict_nan_stderr_is_not_clearly_positive():
    results = _results(relative_lookahead_gain={"mean": 0.5, "stderr": math.nan})
    assert not diagnose.verdict(results, needs_stable_scores=False)[0]


def test_stability_is_required_only_for_learned_weights():
    unstable = _results(rank_corr_checkpoints=_stat(0.2))
    assert diagnose.verdict(unstable, needs_stable_scores=False)[0]
    ok, reasons = diagnose.verdict(unstable, needs_stable_scores=True)
    assert not ok and any(r.startswith("(c)") and "unstable" in r for r in reasons)
    missing = _results()
    del missing["rank_corr_checkpoints"]
    assert diagnose.verdict(missing, needs_stable_scores=False)[0]
    ok, reasons = diagnose.verdict(missing, needs_stable_scores=True)
    assert not ok and any("not computed" in r for r in reasons)


def test_ratio_of_means_with_constant_denominator_is_a_scaled_mean():
    num = np.array([0.1, 0.3, 0.2, 0.6])
    ratio = diagnose.ratio_of_means(num, np.full(4, 2.0))
    assert ratio["mean"] == pytest.approx(num.mean() / 2.0)
    assert ratio["stderr"] == pytest.approx(num.std(ddof=1) / 2.0 / 2.0)


# ------------------------------------------------------------------ checkpoint choice


@pytest.mark.parametrize(
    "steps, train_steps, step, expected",
    [
        ([0, 5, 10, 100], 100, None, (10, 5, True)),  # latest at or before 15
        ([15, 30], 100, None, (15, None, True)),  # first checkpoint; the next is beyond 15
        ([15, 30], 200, None, (30, 15, True)),
        ([10], 100, None, (10, None, True)),  # a single checkpoint: no comparison
        ([10, 12, 50], 100, 10, (10, 12, True)),  # the next one is within the budget
        ([5, 50], 100, 50, (50, 5, False)),  # config.diagnose.step beyond the budget
    ],
)
def test_choose_checkpoints(steps, train_steps, step, expected):
    assert diagnose.choose_checkpoints(steps, train_steps, step) == expected


def test_choose_checkpoints_refuses_missing_or_late_checkpoints():
    with pytest.raises(ValueError, match=r"available steps: \[5, 10\]"):
        diagnose.choose_checkpoints([10, 5], 100, 7)
    with pytest.raises(ValueError, match="15% of train.steps=100"):
        diagnose.choose_checkpoints([20, 100], 100)


# ------------------------------------------------------------------------ toy problems

D, BIG, B, M, NUM_BATCHES, LR = 12, 64, 8, 16, 48, 0.05


def _quadratic_loss(scale):
    """l_i(theta) = scale/2 ||theta - x_i||^2: grad l_i = scale (theta - x_i)."""

    def loss_fn(params, batch):
        return 0.5 * scale * jnp.sum((params["theta"][None, :] - batch["x"]) ** 2, axis=-1)

    return loss_fn


def _pool(rng, n, direction, share):
    """n draws from the pool: N(0, I), a random ``share`` of them shifted by ``direction``."""
    x = rng.normal(size=(n, D))
    x[rng.random(n) < share] += direction
    return x


def _direction():
    """c = 3 e_0: the shift of the target-like quarter of the pool."""
    return 3.0 * np.eye(D)[0]


def _toy_batches(rng, *, target_in_pool):
    """(big, target_score, target_step, heldout_target, heldout_generic) tuples.

    The pool is N(0, I) with a quarter of its examples shifted by c. Target in pool: the
    target is c + N(0, I) (the shifted quarter). Negative control: the target is drawn
    from the pool's own mixture.
    """
    direction = _direction()
    batches = []
    for _ in range(NUM_BATCHES):
        big = _pool(rng, BIG, direction, 0.25)
        if target_in_pool:
            targets = [direction + rng.normal(size=(M, D)) for _ in range(3)]
        else:
            targets = [_pool(rng, M, direction, 0.25) for _ in range(3)]
        generic = _pool(rng, M, direction, 0.25)
        batches.append(tuple({"x": jnp.asarray(x)} for x in (big, *targets, generic)))
    return batches


def _optimizer_state(tx, params, scale, rng):
    """The Adam state after one small update (gradient ``scale * N(0, 0.1^2 I)``)."""
    g0 = {"theta": jnp.asarray(0.1 * scale * rng.normal(size=D))}
    return tx.update(g0, tx.init(params), params)[1]


def _run(scale, *, target_in_pool, seed=0):
    rng = np.random.default_rng(seed)
    batches = _toy_batches(rng, target_in_pool=target_in_pool)
    # theta near the pool's mean 0.25 c: a random batch's gradient barely points along c.
    params = {"theta": jnp.asarray(0.3 * rng.normal(size=D) + 0.25 * _direction())}
    tx = optax.adam(LR)
    opt_state = _optimizer_state(tx, params, scale, np.random.default_rng(seed + 100))
    stats_fn = diagnose.make_batch_statistics(_quadratic_loss(scale), B, tx)
    return diagnose.batch_statistics_summary(stats_fn, params, opt_state, batches)


def test_toy_target_in_pool_gains_are_clearly_positive(x64):
    results = _run(1.0, target_in_pool=True)
    for key in ("cosine_gain", "relative_lookahead_gain"):
        assert results[key]["mean"] > 3 * results[key]["stderr"], (key, results[key])
    assert diagnose.verdict(results, needs_stable_scores=False)[0]


def test_toy_target_from_pool_distribution_gains_are_noise(x64):
    """Held-out target and generic batches are exchangeable: both gains have mean 0."""
    results = _run(1.0, target_in_pool=False)
    for key in ("cosine_gain", "relative_lookahead_gain"):
        assert abs(results[key]["mean"]) < 3 * results[key]["stderr"], (key, results[key])


def _numpy_adam_step(theta, g0, g, lr, b1=0.9, b2=0.999, eps=1e-8):
    """theta after Adam's second update (gradients g0 then g), written out by hand."""
    mu = b1 * (1 - b1) * g0 + (1 - b1) * g
    nu = b2 * (1 - b2) * g0**2 + (1 - b2) * g**2
    return theta - lr * (mu / (1 - b1**2)) / (np.sqrt(nu / (1 - b2**2)) + eps)


def test_toy_one_batch_matches_numpy_reference(x64):
    rng = np.random.default_rng(3)
    big, t_score, t_step, v, gen = (
        np.asarray(x["x"]) for x in _toy_batches(rng, target_in_pool=True)[0]
    )
    theta, g0 = rng.normal(size=D), rng.normal(size=D)
    tx = optax.adam(LR)
    params = {"theta": jnp.asarray(theta)}
    opt_state = tx.update({"theta": jnp.asarray(g0)}, tx.init(params), params)[1]
    stats_fn = diagnose.make_batch_statistics(_quadratic_loss(1.0), B, tx)
    batch = tuple({"x": jnp.asarray(x)} for x in (big, t_score, t_step, v, gen))
    values, scores = stats_fn(params, opt_state, *batch)

    def grad(x):
        return theta - x.mean(axis=0)

    def loss(th, x):
        return 0.5 * np.mean(np.sum((th - x) ** 2, axis=1))

    def cos(u, w):
        return u @ w / np.linalg.norm(u) / np.linalg.norm(w)

    ref_scores = (theta - big) @ grad(t_score)
    np.testing.assert_allclose(scores["current"], ref_scores, rtol=1e-9)
    top = np.argsort(-ref_scores)[:B]
    g_sel, g_rand = grad(big[top]), grad(big[:B])
    cosine_gain = cos(g_sel, grad(v)) - cos(g_rand, grad(v))
    cosine_gain -= cos(g_sel, grad(gen)) - cos(g_rand, grad(gen))
    sel, rand = _numpy_adam_step(theta, g0, g_sel, LR), _numpy_adam_step(theta, g0, g_rand, LR)
    lookahead = loss(rand, v) - loss(sel, v) - loss(rand, gen) + loss(sel, gen)
    step_gain = loss(theta, v) - loss(_numpy_adam_step(theta, g0, grad(t_step), LR), v)
    assert float(values["cosine_gain"]) == pytest.approx(cosine_gain, rel=1e-9)
    assert float(values["lookahead_gain"]) == pytest.approx(lookahead, rel=1e-7)
    assert float(values["target_step_gain"]) == pytest.approx(step_gain, rel=1e-7)


def test_toy_rank_correlation_between_checkpoints_against_scipy(x64):
    """rank_corr_checkpoints is the mean over batches of Spearman's rho between the
    scores at the two checkpoints (scores written out by hand, rho by scipy): high for a
    nearby checkpoint, lower for an unrelated one."""
    rng = np.random.default_rng(4)
    batches = _toy_batches(rng, target_in_pool=True)[:8]
    theta = rng.normal(size=D)
    tx = optax.adam(LR)
    stats_fn = diagnose.make_batch_statistics(_quadratic_loss(1.0), B, tx)
    params = {"theta": jnp.asarray(theta)}

    def reference(previous_theta):
        def scores(th, big, target):  # <grad l_i, grad L_target> of l = 1/2 ||th - x||^2
            return (th - big) @ (th - target.mean(axis=0))

        return np.mean(
            [
                scipy.stats.spearmanr(
                    scores(theta, np.asarray(big["x"]), np.asarray(target["x"])),
                    scores(previous_theta, np.asarray(big["x"]), np.asarray(target["x"])),
                ).statistic
                for big, target, *_ in batches
            ]
        )

    measured = {}
    for name, previous in (
        ("near", theta + 0.3 * rng.normal(size=D)),
        ("unrelated", 2.0 * rng.normal(size=D)),
    ):
        results = diagnose.batch_statistics_summary(
            stats_fn, params, tx.init(params), batches, previous_params={"theta": previous}
        )
        measured[name] = results["rank_corr_checkpoints"]["mean"]
        assert measured[name] == pytest.approx(reference(previous), rel=1e-6), name
    assert measured["near"] > measured["unrelated"] + 0.2, measured


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_diagnose_writes_statistics_and_verdict(tfds_dir, tmp_path):
    from adaptive_data import checkpoint as ckpt
    from adaptive_data import train

    from conftest import run_config

    workdir = str(tmp_path / "diag")
    config = run_config(
        tfds_dir,
        "runlocal",
        **{"train.steps": 40, "checkpoint.every": 3, "checkpoint.keep": 20, "train.eval_every": 40},
    )
    train.train_and_evaluate(config, workdir)
    assert {3, 6} <= set(ckpt.checkpoint_steps(workdir))

    report = diagnose.diagnose(config, workdir, num_batches=3)
    with open(os.path.join(workdir, "diagnose.json")) as f:
        saved = json.load(f)
    # Default: the latest checkpoint at or before 15% of 40 steps.
    assert (saved["checkpoint_step"], saved["comparison_checkpoint_step"]) == (6, 3)
    assert saved["within_budget"] and saved["needs_stable_scores"] is False  # method=base
    assert set(saved["verdicts"]) == {"exact_scores", "learned_weights"}
    for key in ("cosine_gain", "relative_lookahead_gain", "rank_corr_checkpoints"):
        assert np.isfinite(saved["statistics"][key]["mean"]), key

    config.diagnose = ml_collections.ConfigDict({"step": 9})
    report = diagnose.diagnose(config, workdir, num_batches=2)
    assert report["checkpoint_step"] == 9 and not report["within_budget"]
    config.diagnose.step = 7
    with pytest.raises(ValueError, match="available steps"):
        diagnose.diagnose(config, workdir, num_batches=2)


@pytest.mark.slow
def test_diagnose_validation_quick_smoke(tfds_dir, tmp_path, monkeypatch):
    """experiments/diagnose_validation.py --quick: 2 tasks end to end, then resumes for free."""
    import csv
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "diagnose_validation.py"
    spec = importlib.util.spec_from_file_location("diagnose_validation", path)
    validation_script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, validation_script)  # dataclasses look it up
    spec.loader.exec_module(validation_script)
    args = ["--quick", f"--root={tmp_path / 'runs'}", f"--data_dir={tfds_dir}"]
    validation_script.main([*args, f"--out={tmp_path / 'out'}"])
    with open(tmp_path / "out" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["task"] for r in rows] == ["python-share0.1", "pool-seed0"]
    for row in rows:
        for method in ("align_filter", "anograd"):
            assert math.isfinite(float(row[f"{method}_gain"])), (row["task"], method)
    assert "Spearman" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "predicted_vs_realised.png").stat().st_size > 0
    # Resumable: a second call finds every run finished and trains nothing.
    logs = sorted((tmp_path / "runs").glob("*/*/log.txt"))
    sizes = [p.stat().st_size for p in logs]
    validation_script.main([*args, f"--out={tmp_path / 'out2'}"])
    assert [p.stat().st_size for p in logs] == sizes
