"""adaptive_data.stats against independent references (scipy.stats, naive loops, hand cases)."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from adaptive_data import stats


def test_paired_difference_matches_scipy_t_interval_and_ttest_rel():
    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 0.2, size=5)
    b = a + rng.normal(0.1, 0.05, size=5)
    diff = stats.paired_difference(a, b, confidence=0.9)
    d = a - b
    low, high = scipy.stats.t.interval(0.9, df=4, loc=d.mean(), scale=scipy.stats.sem(d))
    assert diff.mean == pytest.approx(d.mean())
    assert (diff.low, diff.high) == pytest.approx((low, high))
    assert diff.sd == pytest.approx(np.std(d, ddof=1))
    assert diff.n == 5 and diff.confidence == 0.9
    # The interval excludes 0 exactly when the paired t-test rejects at 1 - confidence.
    p_value = scipy.stats.ttest_rel(a, b).pvalue
    assert diff.excludes_zero == (p_value < 0.1)


def test_relative_paired_difference_is_interval_of_fractions():
    a = np.array([3.6, 3.5, 3.7])
    b = np.array([3.7, 3.65, 3.72])
    diff = stats.relative_paired_difference(a, b)
    fractions = (a - b) / b
    low, high = scipy.stats.t.interval(
        0.95, df=2, loc=fractions.mean(), scale=scipy.stats.sem(fractions)
    )
    assert diff.mean == pytest.approx(fractions.mean())
    assert (diff.low, diff.high) == pytest.approx((low, high))


def test_single_pair_gives_infinite_interval_and_no_verdict():
    diff = stats.paired_difference([1.0], [2.0])
    assert diff.mean == -1.0 and diff.n == 1
    assert diff.low == -math.inf and diff.high == math.inf
    assert stats.compare([1.0], [2.0]) == "not distinguishable"


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_compare_verdicts_respect_direction():
    base = [4.0, 4.1, 3.9, 4.05]
    lower = [3.5, 3.62, 3.41, 3.54]  # about 0.5 lower on every seed
    noisy = [4.3, 3.8, 4.2, 3.75]  # differences straddle 0
    assert stats.compare(lower, base) == "better"
    assert stats.compare(base, lower) == "worse"
    assert stats.compare(lower, base, lower_is_better=False) == "worse"
    assert stats.compare(noisy, base) == "not distinguishable"


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=30).astype(float)  # many ties
    y = x + rng.integers(0, 3, size=30)
    assert stats.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
    assert math.isnan(stats.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def _naive_auc(scores, labels):
    """P(positive scores above negative) by a double loop, ties counted 1/2."""
    positives = [s for s, label in zip(scores, labels) if label]
    negatives = [s for s, label in zip(scores, labels) if not label]
    total = 0.0
    for p, n in itertools.product(positives, negatives):
        total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(positives) * len(negatives))


def test_roc_auc_matches_double_loop_with_ties():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 6, size=40).astype(float)
    labels = rng.random(40) < 0.4
    assert stats.roc_auc(scores, labels) == pytest.approx(_naive_auc(scores, labels))
    assert stats.roc_auc([0.1, 0.2, 0.9], [False, False, True]) == 1.0
    assert stats.roc_auc([0.9, 0.2, 0.1], [False, False, True]) == 0.0
    assert math.isnan(stats.roc_auc([0.1, 0.2], [True, True]))


def test_leave_one_group_out_threshold_hand_built_case():
    scores = [0.1, 0.9, 0.2, 0.8, 0.1, 0.2, 0.3]
    labels = [False, True, False, True, False, True, True]
    groups = ["A", "A", "B", "B", "C", "C", "C"]
    accuracy, thresholds = stats.leave_one_group_out_threshold(scores, labels, groups)
    # Fold A: training on B and C, tau = 0.15 and 0.25 both get 4 of 5 right; the smaller
    # wins. A's 0.1 (neg) and 0.9 (pos) are both right: 2 of 2.
    # Fold B: training on A and C, tau = 0.15 is perfect. B's negative at 0.2 > 0.15 is
    # called positive: 1 of 2.
    # Fold C: training on A and B (0.1, 0.2 negative; 0.8, 0.9 positive), the midpoint 0.5
    # is the smallest perfect candidate. C's positives 0.2 and 0.3 fall below it: 1 of 3.
    assert thresholds == pytest.approx({"A": 0.15, "B": 0.15, "C": 0.5})
    assert accuracy == pytest.approx((2 + 1 + 1) / 7)


def test_leave_one_group_out_threshold_needs_two_groups():
    with pytest.raises(ValueError, match="two groups"):
        stats.leave_one_group_out_threshold([0.1, 0.2], [False, True], ["A", "A"])
