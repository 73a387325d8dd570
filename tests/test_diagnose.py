"""The preflight test (docs/algorithms.md, "When does selection help"), against references
written independently of the code: truth tables, numpy, scipy and closed forms.

- the verdicts (``helps_at_equal_steps``, ``pays_for_compute``, ``verdicts``) as truth
  tables, stability required only for learned_weights, paying only with a gain and
  ``speedup > cost``; their rendering with and without a validated accuracy;
- ``ratio_of_means`` and ``speedup`` against hand-computed numbers and the ratio
  estimator's variance written with covariances;
- the choice of the diagnosed checkpoint within 15% of the budget;
- ``generic_heldout`` on a list of records: exactly the target-domain ones are dropped;
- ``make_advance`` against a loop of ``tx.update`` / ``apply_updates`` with closed-form
  gradients;
- the statistics on a toy quadratic problem with a known answer: a target that sits in
  the pool gives a clearly positive gain and a speed-up above 1; a target drawn from the
  pool's own distribution gives a gain zero up to noise and a speed-up 1 up to noise;
  scaling the loss changes nothing; one batch's values match numpy with closed-form
  gradients; ``rank_corr_stability`` matches scipy's Spearman;
- an end-to-end diagnosis of a tiny training run (slow).
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.stats

from adaptive_data import diagnose

# --------------------------------------------------------------------------- verdicts


def _stat(mean, stderr=0.01):
    return {"mean": mean, "stderr": stderr, "min": mean - 1.0, "max": mean + 1.0}


GAINS = {
    "positive": _stat(0.1, stderr=0.01),
    "noise": _stat(0.015, stderr=0.01),  # within 2 standard errors (0.02) of zero
    "nan_stderr": {"mean": 0.5, "stderr": math.nan},  # one batch: nothing is clear
    "negative": _stat(-0.1, stderr=0.01),
}


def _results(gain="positive", stability=0.8, speedup=2.0):
    """Hand-made ``batch_statistics_summary`` output; ``stability=None``: not measured."""
    results = {"cosine_gain": GAINS[gain], "speedup": {"mean": speedup, "stderr": 0.1}}
    if stability is not None:
        results["rank_corr_stability"] = _stat(stability)
    return results


@pytest.mark.parametrize(
    "gain, stability, needs_stable_scores, expected",
    [
        ("positive", 0.8, False, True),
        ("positive", 0.8, True, True),
        ("positive", 0.5, True, True),  # exactly MIN_RANK_CORRELATION is stable
        ("positive", 0.2, False, True),  # unstable, but stability is not required
        ("positive", 0.2, True, False),
        ("positive", None, False, True),
        ("positive", None, True, False),  # required but not measured
        ("noise", 0.8, False, False),
        ("noise", 0.8, True, False),
        ("nan_stderr", 0.8, False, False),
        ("negative", 0.8, True, False),
    ],
)
def test_helps_at_equal_steps_truth_table(gain, stability, needs_stable_scores, expected):
    helps, reasons = diagnose.helps_at_equal_steps(
        _results(gain, stability), needs_stable_scores=needs_stable_scores
    )
    assert helps is expected
    assert len(reasons) == 2  # the gain, the stability
    assert ("not clearly positive" in reasons[0]) is (gain != "positive")
    if not needs_stable_scores:
        assert "not required" in reasons[1]
    elif stability is None:
        assert "not measured" in reasons[1]
    else:
        assert ("unstable" in reasons[1]) is (stability < 0.5)


@pytest.mark.parametrize(
    "helps, speedup, cost, expected, words",
    [
        (True, 3.0, 2.0, True, "pays"),
        (True, 1.2, 1.0, True, "pays"),  # a method at base's cost pays with any gain
        (True, 2.0, 2.0, False, "does not pay"),  # s must exceed c
        (True, 1.5, 2.0, False, "does not pay"),
        (False, 5.0, 1.0, False, "does not pay (no gain to pay with)"),
    ],
)
def test_pays_for_compute_truth_table(helps, speedup, cost, expected, words):
    pays, reason = diagnose.pays_for_compute(
        _results(speedup=speedup), helps=helps, cost_ratio=cost
    )
    assert pays is expected
    assert reason.endswith(words)


@pytest.fixture
def no_accuracy_file(tmp_path, monkeypatch):
    monkeypatch.setattr(diagnose, "ACCURACY_FILE", tmp_path / "absent.json")


COSTS = {"align_filter": 3.0, "anograd": 2.0}


@pytest.mark.parametrize(
    "stability, speedup, expected",
    [
        # Unstable scores: only the exact-score family helps; s = 4 beats its cost 3.
        (0.2, 4.0, {"exact_scores": (True, True), "learned_weights": (False, False)}),
        # Stable, s = 2.5: both help; it pays for anograd's 2x, not align_filter's 3x.
        (0.8, 2.5, {"exact_scores": (True, False), "learned_weights": (True, True)}),
        # Stable, s = 1.5: both help, neither pays.
        (0.8, 1.5, {"exact_scores": (True, False), "learned_weights": (True, False)}),
    ],
)
def test_verdicts_per_family_truth_table(no_accuracy_file, stability, speedup, expected):
    report = diagnose.verdicts(_results("positive", stability, speedup), COSTS)
    assert set(report) == {"exact_scores", "learned_weights"}
    for family, (helps, pays) in expected.items():
        v = report[family]
        assert (v["helps_at_equal_steps"], v["pays_for_compute"]) == (helps, pays), family
        assert len(v["reasons"]) == 3 and v["accuracy"] is None
    assert sorted(report["exact_scores"]["methods"]) == ["align_filter", "l2rw"]
    assert sorted(report["learned_weights"]["methods"]) == ["anograd", "dds", "soba"]
    assert (report["exact_scores"]["cost_method"], report["exact_scores"]["cost_ratio"]) == (
        "align_filter",
        3.0,
    )
    assert (report["learned_weights"]["cost_method"], report["learned_weights"]["cost_ratio"]) == (
        "anograd",
        2.0,
    )


def test_no_gain_means_no_verdict_says_yes(no_accuracy_file):
    report = diagnose.verdicts(_results("noise", 0.9, 10.0), {"align_filter": 1.0, "anograd": 1.0})
    assert not any(v["helps_at_equal_steps"] or v["pays_for_compute"] for v in report.values())


def test_verdict_text_shows_both_questions_and_the_validated_accuracy(tmp_path, monkeypatch):
    accuracy = {"accuracy": 0.8, "tasks": 20, "always_yes": 0.6, "trivial_rule": 0.7}
    path = tmp_path / "diagnose_accuracy.json"
    path.write_text(
        json.dumps({"families": {"exact_scores": {"equal_steps": accuracy, "compute": accuracy}}})
    )
    monkeypatch.setattr(diagnose, "ACCURACY_FILE", path)
    results = _results("positive", 0.2, 4.0)
    text = diagnose.verdict_text(
        {"statistics": results, "verdicts": diagnose.verdicts(results, COSTS)}
    )
    assert "exact_scores (align_filter, l2rw):" in text
    assert "learned_weights (anograd, soba, dds):" in text
    assert text.count("Will it help at equal steps? yes (validated: right on 80% of 20") == 1
    assert "Will it help at equal steps? no (not validated)" in text
    assert "align_filter costs 3.00x base's FLOPs per update)? yes (validated" in text
    assert "anograd costs 2.00x base's FLOPs per update)? no (not validated)" in text
    assert (
        "'always yes' 60%, 'always no' 40%, 'yes unless the target is drawn from the pool' 70%"
        in text
    )
    # What to do: exact_scores helps and pays (s = 4 > 3), both verdicts validated above
    # every rule (0.8 > always yes 0.6, always no 0.4, trivial 0.7): run it;
    # learned_weights is unstable (0.2) and not validated: skip it.
    assert "What to do: align_filter/l2rw should beat base per update; it should also beat" in text
    assert "What to do: skip anograd/soba/dds on this target" in text
    # s = 1.5 < 3: exact_scores helps without paying; learned_weights (not validated) helps
    # and the compute question is left to a measurement.
    helps_only = _results("positive", 0.8, 1.5)
    text = diagnose.verdict_text(
        {"statistics": helps_only, "verdicts": diagnose.verdicts(helps_only, COSTS)}
    )
    assert "base trained for 3.0x the steps (the same FLOPs) should do better" in text
    assert "anograd/soba/dds should beat base per update; whether it beats base" in text
    # Validated below "always no" (0.75 against always yes 0.2: always no is right 0.8):
    # neither verdict is acted on; the base rates are given instead.
    accuracy.update({"accuracy": 0.75, "always_yes": 0.2, "trivial_rule": 0.3})
    path.write_text(
        json.dumps({"families": {"exact_scores": {"equal_steps": accuracy, "compute": accuracy}}})
    )
    text = diagnose.verdict_text(
        {"statistics": helps_only, "verdicts": diagnose.verdicts(helps_only, COSTS)}
    )
    assert (
        "align_filter/l2rw helped per update on 20% of the validation's tasks, and this verdict "
        "did no better than that base rate; whether it beats base given the same FLOPs this "
        "test cannot tell (20% of the validation's tasks paid)"
    ) in " ".join(text.split())


# ----------------------------------------------------------- ratio of means, speed-up


def _ratio_stderr_by_covariances(num, den):
    """sqrt(Var(mean num - R mean den)) / |mean den| with Var written with sample
    covariances: (s_nn - 2 R s_nd + R^2 s_dd) / n."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    ratio = num.mean() / den.mean()
    cov = np.cov(num, den, ddof=1)
    variance = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / num.size
    return math.sqrt(variance) / abs(den.mean())


def test_ratio_of_means_matches_the_covariance_form_of_its_stderr():
    rng = np.random.default_rng(0)
    den = 0.3 + 0.05 * rng.normal(size=10)
    num = 0.5 * den + 0.02 * rng.normal(size=10)
    ratio = diagnose.ratio_of_means(num, den)
    assert ratio["mean"] == pytest.approx(num.sum() / den.sum(), rel=1e-12)
    assert ratio["stderr"] == pytest.approx(_ratio_stderr_by_covariances(num, den), rel=1e-9)


def test_ratio_of_means_with_constant_denominator_is_a_scaled_mean():
    num = np.array([0.1, 0.3, 0.2, 0.6])
    ratio = diagnose.ratio_of_means(num, np.full(4, 2.0))
    assert ratio["mean"] == pytest.approx(num.mean() / 2.0)
    assert ratio["stderr"] == pytest.approx(num.std(ddof=1) / 2.0 / 2.0)


def test_ratio_of_means_without_a_spread_or_a_denominator_is_nan():
    one = diagnose.ratio_of_means([0.3], [0.6])
    assert one["mean"] == pytest.approx(0.5) and math.isnan(one["stderr"])
    zero = diagnose.ratio_of_means([0.3, 0.1], [0.5, -0.5])
    assert math.isnan(zero["mean"]) and math.isnan(zero["stderr"])


def test_speedup_is_one_plus_the_ratio_of_mean_gain_to_mean_random_cosine():
    """Two batches by hand: gains 0.1, 0.3 over random cosines 0.2, 0.2 give s = 1 + 0.2 /
    0.2 = 2; residuals -0.1, +0.1 give stderr 0.1 sqrt(2) / (sqrt(2) 0.2) = 0.5."""

    def stats_fn(params, gain, random_cosine, later_params):
        values = {"cosine_gain": gain, "cosine_target_random": random_cosine}
        return values, {"current": np.arange(3.0)}

    results = diagnose.batch_statistics_summary(stats_fn, None, [(0.1, 0.2), (0.3, 0.2)])
    assert results["speedup"]["mean"] == pytest.approx(2.0)
    assert results["speedup"]["stderr"] == pytest.approx(0.5)
    assert results["cosine_gain"]["mean"] == pytest.approx(0.2)
    assert "rank_corr_stability" not in results  # no advanced parameters given


def test_batch_statistics_summary_needs_a_batch():
    with pytest.raises(ValueError, match="at least one big batch"):
        diagnose.batch_statistics_summary(lambda *a: None, None, [])


# ------------------------------------------------------------------ checkpoint choice


@pytest.mark.parametrize(
    "steps, train_steps, step, expected",
    [
        ([0, 5, 10, 100], 100, None, (10, True)),  # the latest at or before 15
        ([30, 15], 100, None, (15, True)),  # exactly 15% is within the budget
        ([15, 30], 200, None, (30, True)),
        ([10, 12, 50], 100, 10, (10, True)),  # config.diagnose.step within the budget
        ([5, 50], 100, 50, (50, False)),  # config.diagnose.step beyond the budget
    ],
)
def test_choose_checkpoint(steps, train_steps, step, expected):
    assert diagnose.choose_checkpoint(steps, train_steps, step) == expected


def test_choose_checkpoint_refuses_missing_or_late_checkpoints():
    with pytest.raises(
        ValueError, match=r"diagnose.step=7 has no checkpoint; available steps: \[5, 10\]"
    ):
        diagnose.choose_checkpoint([10, 5], 100, 7)
    with pytest.raises(
        ValueError, match=r"No checkpoint at or before step 15 \(15% of train.steps=100\)"
    ):
        diagnose.choose_checkpoint([20, 100], 100)


# ------------------------------------------------------------------- generic held-out


RECORDS = [
    {"text": "a", "domain": "news"},
    {"text": "b", "domain": "python"},
    {"text": "c", "domain": "wiki"},
    {"text": "d", "domain": "python"},
    {"text": "e", "domain": "news"},
]


def test_generic_heldout_drops_exactly_the_target_domain():
    subset, sentence = diagnose.generic_heldout(RECORDS, "python")
    kept = [subset[i] for i in range(len(subset))]
    assert kept == [r for r in RECORDS if r["domain"] != "python"]  # order kept
    assert "outside the target's domain 'python' (3 of 5)" in sentence


def test_generic_heldout_keeps_everything_when_nothing_is_to_drop():
    source, sentence = diagnose.generic_heldout(RECORDS, "russian")
    assert source is RECORDS and "none is labelled 'russian'" in sentence
    source, sentence = diagnose.generic_heldout(RECORDS, None)
    assert source is RECORDS and "drawn from the pool itself" in sentence


def test_generic_heldout_refuses_a_pool_of_the_target_domain_only():
    only_target = [r for r in RECORDS if r["domain"] == "python"]
    with pytest.raises(
        ValueError, match="labelled with the target's domain 'python'.*other domains"
    ):
        diagnose.generic_heldout(only_target, "python")


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


def _toy_batches(rng, *, target_in_pool, num_batches=NUM_BATCHES):
    """(big, target_score, heldout_target, heldout_generic) tuples of ``{"x": float[n, D]}``.

    The pool is N(0, I) with a quarter of its examples shifted by c. Target in pool: the
    target is c + N(0, I) (the shifted quarter). Negative control: the target is drawn
    from the pool's own mixture.
    """
    direction = _direction()
    batches = []
    for _ in range(num_batches):
        big = _pool(rng, BIG, direction, 0.25)
        if target_in_pool:
            targets = [direction + rng.normal(size=(M, D)) for _ in range(2)]
        else:
            targets = [_pool(rng, M, direction, 0.25) for _ in range(2)]
        generic = _pool(rng, M, direction, 0.25)
        batches.append(tuple({"x": jnp.asarray(x)} for x in (big, *targets, generic)))
    return batches


def _start(rng):
    """theta near the pool's mean 0.25 c: a random batch's gradient barely points along c."""
    return 0.3 * rng.normal(size=D) + 0.25 * _direction()


def _run(scale, *, target_in_pool, seed=0):
    rng = np.random.default_rng(seed)
    batches = _toy_batches(rng, target_in_pool=target_in_pool)
    params = {"theta": jnp.asarray(_start(rng))}
    stats_fn = diagnose.make_batch_statistics(_quadratic_loss(scale), B)
    return diagnose.batch_statistics_summary(stats_fn, params, batches)


def _numpy_values(theta, big, t_score, v, gen):
    """One batch's statistics at ``theta`` with closed-form gradients (loss scale 1)."""

    def grad(x):  # mean gradient of 1/2 ||theta - x_i||^2 over the rows of x
        return theta - x.mean(axis=0)

    def cos(u, w):
        return u @ w / np.linalg.norm(u) / np.linalg.norm(w)

    scores = (theta - big) @ grad(t_score)
    top = np.argsort(-scores)[:B]
    g_sel, g_rand = grad(big[top]), grad(big[:B])
    values = {
        "cosine_target_selected": cos(g_sel, grad(v)),
        "cosine_target_random": cos(g_rand, grad(v)),
        "cosine_generic_selected": cos(g_sel, grad(gen)),
        "cosine_generic_random": cos(g_rand, grad(gen)),
    }
    values["cosine_gain"] = (
        values["cosine_target_selected"]
        - values["cosine_target_random"]
        - (values["cosine_generic_selected"] - values["cosine_generic_random"])
    )
    return values, scores


def _as_numpy(batch):
    return tuple(np.asarray(x["x"]) for x in batch)


def test_toy_target_in_pool_gain_is_clearly_positive_and_speeds_up(x64, no_accuracy_file):
    results = _run(1.0, target_in_pool=True)
    gain, speedup = results["cosine_gain"], results["speedup"]
    assert gain["mean"] > 3 * gain["stderr"], gain
    assert speedup["mean"] - 1 > 3 * speedup["stderr"], speedup
    assert diagnose.helps_at_equal_steps(results, needs_stable_scores=False)[0]


def test_toy_target_from_pool_distribution_gain_is_noise(x64):
    """Held-out target and generic batches are exchangeable: gain 0, speed-up 1."""
    results = _run(1.0, target_in_pool=False)
    gain, speedup = results["cosine_gain"], results["speedup"]
    assert abs(gain["mean"]) < 3 * gain["stderr"], gain
    assert abs(speedup["mean"] - 1) < 3 * speedup["stderr"], speedup


def test_toy_statistics_do_not_depend_on_the_scale_of_the_loss(x64):
    """Cosines and rankings are invariant to l -> 7 l."""
    unit, scaled = _run(1.0, target_in_pool=True), _run(7.0, target_in_pool=True)
    assert unit.keys() == scaled.keys()
    for key in unit:
        for part in unit[key]:
            assert scaled[key][part] == pytest.approx(unit[key][part], rel=1e-9), (key, part)


def test_toy_one_batch_matches_numpy_reference(x64):
    rng = np.random.default_rng(3)
    batch = _toy_batches(rng, target_in_pool=True, num_batches=1)[0]
    theta, later_theta = rng.normal(size=D), rng.normal(size=D)
    stats_fn = diagnose.make_batch_statistics(_quadratic_loss(1.0), B)
    values, scores = stats_fn(
        {"theta": jnp.asarray(theta)}, *batch, {"theta": jnp.asarray(later_theta)}
    )
    ref_values, ref_scores = _numpy_values(theta, *_as_numpy(batch))
    _, ref_later_scores = _numpy_values(later_theta, *_as_numpy(batch))
    np.testing.assert_allclose(scores["current"], ref_scores, rtol=1e-9)
    np.testing.assert_allclose(scores["later"], ref_later_scores, rtol=1e-9)
    assert set(values) == set(ref_values)
    for key, ref in ref_values.items():
        assert float(values[key]) == pytest.approx(ref, rel=1e-9, abs=1e-12), key


def test_toy_speedup_matches_numpy_over_batches(x64):
    """s = 1 + mean(gain) / mean(cos(g_rand, g_V)) over numpy's per-batch values, with the
    ratio estimator's stderr written with covariances."""
    rng = np.random.default_rng(5)
    batches = _toy_batches(rng, target_in_pool=True, num_batches=12)
    theta = _start(rng)
    stats_fn = diagnose.make_batch_statistics(_quadratic_loss(1.0), B)
    results = diagnose.batch_statistics_summary(stats_fn, {"theta": jnp.asarray(theta)}, batches)
    per_batch = [_numpy_values(theta, *_as_numpy(batch))[0] for batch in batches]
    gains = [v["cosine_gain"] for v in per_batch]
    randoms = [v["cosine_target_random"] for v in per_batch]
    assert results["speedup"]["mean"] == pytest.approx(1 + np.mean(gains) / np.mean(randoms))
    assert results["speedup"]["stderr"] == pytest.approx(
        _ratio_stderr_by_covariances(gains, randoms), rel=1e-6
    )
    assert results["cosine_gain"]["stderr"] == pytest.approx(
        np.std(gains, ddof=1) / math.sqrt(len(gains)), rel=1e-6
    )


def test_make_advance_matches_a_loop_of_optax_updates(x64):
    """k plain steps of make_advance = k of ``tx.update`` / ``apply_updates`` with the
    closed-form gradient theta - mean(x), from an optimiser state that has moments."""
    rng = np.random.default_rng(6)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(LR, weight_decay=0.1))
    params = {"theta": jnp.asarray(rng.normal(size=D))}
    opt_state = tx.update({"theta": jnp.asarray(rng.normal(size=D))}, tx.init(params), params)[1]
    batches = [{"x": jnp.asarray(_pool(rng, B, _direction(), 0.25))} for _ in range(4)]

    advance = diagnose.make_advance(_quadratic_loss(1.0), tx)
    got, got_state = params, opt_state
    for batch in batches:
        got, got_state = advance(got, got_state, batch)

    expected, expected_state = params, opt_state
    for batch in batches:
        gradient = np.asarray(expected["theta"]) - np.asarray(batch["x"]).mean(axis=0)
        updates, expected_state = tx.update(
            {"theta": jnp.asarray(gradient)}, expected_state, expected
        )
        expected = optax.apply_updates(expected, updates)
    np.testing.assert_allclose(got["theta"], expected["theta"], rtol=1e-10)
    for leaf, ref in zip(jax.tree.leaves(got_state), jax.tree.leaves(expected_state), strict=True):
        np.testing.assert_allclose(leaf, ref, rtol=1e-10)
    assert not np.allclose(got["theta"], params["theta"])  # it did move


def test_toy_rank_corr_stability_against_scipy(x64):
    """rank_corr_stability is the mean over batches of Spearman's rho (scipy) between the
    scores of B at theta and at the advanced parameters (scores written out by hand): high
    after a few plain steps, lower at an unrelated point."""
    rng = np.random.default_rng(4)
    batches = _toy_batches(rng, target_in_pool=True, num_batches=8)
    theta = rng.normal(size=D)
    params = {"theta": jnp.asarray(theta)}
    stats_fn = diagnose.make_batch_statistics(_quadratic_loss(1.0), B)

    tx = optax.adam(LR)
    advance = diagnose.make_advance(_quadratic_loss(1.0), tx)
    advanced, opt_state = params, tx.init(params)
    for _ in range(3):
        pool_batch = {"x": jnp.asarray(_pool(rng, B, _direction(), 0.25))}
        advanced, opt_state = advance(advanced, opt_state, pool_batch)

    def reference(later_theta):
        def scores(th, big, target):  # <grad l_i, grad L_target> of l = 1/2 ||th - x||^2
            return (th - big) @ (th - target.mean(axis=0))

        return np.mean(
            [
                scipy.stats.spearmanr(
                    scores(theta, big, target), scores(later_theta, big, target)
                ).statistic
                for big, target, *_ in map(_as_numpy, batches)
            ]
        )

    measured = {}
    for name, later in (("advanced", advanced), ("unrelated", {"theta": 2.0 * rng.normal(size=D)})):
        results = diagnose.batch_statistics_summary(stats_fn, params, batches, later)
        measured[name] = results["rank_corr_stability"]["mean"]
        assert measured[name] == pytest.approx(reference(np.asarray(later["theta"])), rel=1e-6)
    assert measured["advanced"] > measured["unrelated"] + 0.2, measured


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_diagnose_writes_statistics_and_both_families_verdicts(tfds_dir, tmp_path):
    from adaptive_data import checkpoint as ckpt
    from adaptive_data import train
    from adaptive_data.data import sources

    from conftest import run_config

    workdir = str(tmp_path / "diag")
    config = run_config(
        tfds_dir,
        "runlocal",
        **{"train.steps": 40, "checkpoint.every": 3, "checkpoint.keep": 20, "train.eval_every": 40},
    )
    train.train_and_evaluate(config, workdir)
    assert {3, 6, 9} <= set(ckpt.checkpoint_steps(workdir))
    costs = {"align_filter": 5.0, "anograd": 3.0}  # given: nothing is compiled for them

    diagnose.diagnose(config, workdir, num_batches=3, costs=costs)
    with open(os.path.join(workdir, "diagnose.json")) as f:
        saved = json.load(f)
    # Default: the latest checkpoint at or before 15% of 40 steps; 5% of 40 plain steps.
    assert (saved["checkpoint_step"], saved["within_budget"]) == (6, True)
    assert (saved["stability_steps"], saved["big_batch"], saved["b"]) == (2, 32, 8)
    assert set(saved) == {
        "checkpoint_step",
        "within_budget",
        "budget_fraction",
        "num_batches",
        "big_batch",
        "b",
        "stability_steps",
        "generic_heldout",
        "statistics",
        "verdicts",
    }
    statistics = saved["statistics"]
    for key in ("cosine_gain", "cosine_target_random", "speedup", "rank_corr_stability"):
        assert np.isfinite(statistics[key]["mean"]), key

    # G: generic_valid without the target's domain, counted here from the records.
    corpus = sources.load_corpus(config.data)
    heldout = corpus.splits["generic_valid"]
    labels = [heldout[i]["domain"] for i in range(len(heldout))]
    outside = sum(label != corpus.target_domain for label in labels)
    if outside < len(labels):
        assert f"({outside} of {len(labels)})" in saved["generic_heldout"]
    else:
        assert "none is labelled" in saved["generic_heldout"]

    # The verdicts re-derived from the saved statistics by the rules of the docs.
    gain = statistics["cosine_gain"]
    clearly_positive = gain["mean"] > 2 * gain["stderr"]
    stable = statistics["rank_corr_stability"]["mean"] >= 0.5
    speedup = statistics["speedup"]["mean"]
    faster = {"exact_scores": speedup > 5.0, "learned_weights": speedup > 3.0}
    helps = {"exact_scores": clearly_positive, "learned_weights": clearly_positive and stable}
    assert set(saved["verdicts"]) == {"exact_scores", "learned_weights"}
    for family, verdict in saved["verdicts"].items():
        assert verdict["cost_ratio"] == costs[verdict["cost_method"]]
        assert verdict["helps_at_equal_steps"] is helps[family], family
        assert verdict["pays_for_compute"] is (helps[family] and faster[family]), family
    assert "Will it pay for its compute" in diagnose.verdict_text(saved)

    config.diagnose = ml_collections.ConfigDict({"step": 9})
    report = diagnose.diagnose(config, workdir, num_batches=2, costs=costs)
    assert report["checkpoint_step"] == 9 and not report["within_budget"]
    config.diagnose.step = 7
    with pytest.raises(ValueError, match="available steps"):
        diagnose.diagnose(config, workdir, num_batches=2, costs=costs)
