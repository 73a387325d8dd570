"""Small-sample statistics for comparing runs and validating predictors (numpy + scipy).

Everything here works on host-side numbers (final metrics of finished runs, one value per
seed or per task), so it is plain numpy; only the Student-t quantile comes from scipy.

* Paired comparisons over seeds. Seed ``i`` of method A and seed ``i`` of method B share the
  same data order, so the per-seed differences ``d_i = a_i - b_i`` remove the seed-to-seed
  variation common to both. :func:`paired_difference` gives their mean with a Student-t
  confidence interval, :func:`relative_paired_difference` the same on ``d_i / b_i``, and
  :func:`compare` turns the interval into "better" / "worse" / "not distinguishable".
* Compute accounting. :func:`frontier_flops` inverts a compute frontier (bpb against
  FLOPs, linear in log FLOPs between points) and :func:`ratio_interval` gives the geometric
  mean of per-seed ratios (e.g. effective compute multipliers) with a t interval of their
  logs (docs/algorithms.md, "Compute accounting").
* Predictor validation. :func:`spearman` (rank correlation, average ranks for ties),
  :func:`roc_auc` (Mann-Whitney U / (n_pos n_neg), ties counted 1/2) and
  :func:`leave_one_group_out_threshold` (a threshold fitted on all groups but one, scored on
  the held-out group).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import scipy.stats

BETTER = "better"
WORSE = "worse"
NOT_DISTINGUISHABLE = "not distinguishable"


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Mean of paired differences with a two-sided Student-t confidence interval.

    Attributes:
      mean: mean of ``d_i`` over the ``n`` pairs.
      low, high: ``mean -/+ t_{n-1, (1+confidence)/2} * sd / sqrt(n)``; infinite when
        ``n == 1`` (one pair says nothing about the spread).
      sd: sample standard deviation of ``d_i`` (denominator ``n - 1``); ``nan`` when ``n == 1``.
      n: number of pairs.
      confidence: coverage of the interval, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    sd: float
    n: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies strictly on one side of 0."""
        return self.low > 0.0 or self.high < 0.0


def _paired_arrays(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a_arr = np.asarray(a, dtype=np.float64).reshape(-1)
    b_arr = np.asarray(b, dtype=np.float64).reshape(-1)
    if a_arr.shape != b_arr.shape:
        raise ValueError(
            f"paired inputs need the same length, got {a_arr.size} and {b_arr.size} values; pass "
            "one value per seed (or per item) on both sides, in the same order."
        )
    if a_arr.size == 0:
        raise ValueError("paired inputs are empty; pass at least one pair of values.")
    return a_arr, b_arr


def _t_interval(d: np.ndarray, confidence: float) -> PairedDifference:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    n = int(d.size)
    mean = float(d.mean())
    if n == 1:
        return PairedDifference(mean, -math.inf, math.inf, math.nan, 1, confidence)
    sd = float(d.std(ddof=1))
    half_width = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, df=n - 1)) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half_width, mean + half_width, sd, n, confidence)


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Mean of ``d_i = a_i - b_i`` over paired seeds with a t confidence interval.

    Args:
      a, b: shape ``[n]``, one value per seed, seed ``i`` of ``a`` paired with seed ``i`` of
        ``b``.
      confidence: coverage of the two-sided interval.

    Returns:
      :class:`PairedDifference`; ``n == 1`` gives ``low = -inf``, ``high = +inf``.

    Raises:
      ValueError: if ``a`` and ``b`` differ in length or are empty.
    """
    a_arr, b_arr = _paired_arrays(a, b)
    return _t_interval(a_arr - b_arr, confidence)


def relative_paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """As :func:`paired_difference` on the fractions ``(a_i - b_i) / b_i`` (0.03 = 3%)."""
    a_arr, b_arr = _paired_arrays(a, b)
    if np.any(b_arr == 0.0):
        raise ValueError("relative difference divides by b, but b contains 0.")
    return _t_interval((a_arr - b_arr) / b_arr, confidence)


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    lower_is_better: bool = True,
    confidence: float = 0.95,
) -> str:
    """Verdict of method ``a`` against ``b`` from the paired-difference interval.

    Returns "better" when the interval of ``a - b`` lies entirely on the good side of 0
    (below it when ``lower_is_better``, e.g. for bpb), "worse" when it lies entirely on the
    bad side, and "not distinguishable" when it contains 0.
    """
    diff = paired_difference(a, b, confidence)
    if diff.high < 0.0:
        return BETTER if lower_is_better else WORSE
    if diff.low > 0.0:
        return WORSE if lower_is_better else BETTER
    return NOT_DISTINGUISHABLE


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``x`` (shape ``[n]``), tied values sharing the mean of their ranks."""
    x_arr = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.argsort(x_arr, kind="stable")
    sorted_x = x_arr[order]
    ranks = np.empty(x_arr.size, dtype=np.float64)
    start = 0
    while start < x_arr.size:
        stop = start + 1
        while stop < x_arr.size and sorted_x[stop] == sorted_x[start]:
            stop += 1
        # Positions start..stop-1 hold rank values start+1..stop; ties share their mean.
        ranks[order[start:stop]] = 0.5 * (start + 1 + stop)
        start = stop
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks of ``x`` and ``y``.

    Returns ``nan`` when either side is constant (no ranking to correlate).
    """
    x_arr, y_arr = _paired_arrays(x, y)
    rx, ry = average_ranks(x_arr), average_ranks(y_arr)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0.0 else math.nan


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative).

    Computed as the Mann-Whitney statistic from average ranks, so a tie between a positive
    and a negative counts 1/2. Returns ``nan`` when one class is empty.
    """
    scores_arr, labels_arr = _paired_arrays(scores, labels)
    positive = labels_arr.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum_pos = float(average_ranks(scores_arr)[positive].sum())
    u_pos = rank_sum_pos - n_pos * (n_pos + 1) / 2.0
    return u_pos / (n_pos * n_neg)


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Threshold ``tau`` maximising the accuracy of the rule ``score > tau  =>  positive``.

    Candidates are the midpoints between consecutive distinct scores plus one below the
    smallest (everything positive) and one above the largest (everything negative). Ties
    in accuracy go to the smallest candidate.
    """
    distinct = np.unique(scores)
    spacing = float(distinct[-1] - distinct[0]) if distinct.size > 1 else 1.0
    candidates = np.concatenate(
        [
            [distinct[0] - spacing],
            (distinct[:-1] + distinct[1:]) / 2.0,
            [distinct[-1] + spacing],
        ]
    )
    predictions = scores[None, :] > candidates[:, None]
    accuracy = (predictions == labels[None, :]).mean(axis=1)
    return float(candidates[int(np.argmax(accuracy))])


def leave_one_group_out_threshold(
    scores: Sequence[float], labels: Sequence[bool], groups: Sequence[object]
) -> tuple[float, dict[object, float]]:
    """Held-out accuracy of a score threshold chosen leave-one-group-out.

    For each group ``g`` the threshold maximising accuracy of ``score > tau`` on the items
    of all other groups (:func:`best_threshold`) is applied to the items of ``g``.

    Args:
      scores: shape ``[n]``, the predictor's value per item.
      labels: shape ``[n]``, True where the item is a positive.
      groups: shape ``[n]``, the group of each item (e.g. the corpus domain of a task).

    Returns:
      ``(accuracy, thresholds)``: the fraction of items classified correctly by their own
      fold's threshold, and ``{group: threshold fitted without it}``.

    Raises:
      ValueError: on mismatched lengths or fewer than two groups.
    """
    scores_arr, labels_arr = _paired_arrays(scores, labels)
    groups_list = list(groups)
    if len(groups_list) != scores_arr.size:
        raise ValueError(
            f"need one group per score, got {len(groups_list)} groups for {scores_arr.size} scores."
        )
    labels_arr = labels_arr.astype(bool)
    group_arr = np.asarray(groups_list, dtype=object)
    unique_groups = list(dict.fromkeys(groups_list))
    if len(unique_groups) < 2:
        raise ValueError(
            "leave-one-group-out needs at least two groups to fit on one and test on another."
        )
    correct = 0
    thresholds: dict[object, float] = {}
    for group in unique_groups:
        held_out = group_arr == group
        tau = best_threshold(scores_arr[~held_out], labels_arr[~held_out])
        thresholds[group] = tau
        correct += int(((scores_arr[held_out] > tau) == labels_arr[held_out]).sum())
    return correct / scores_arr.size, thresholds


# ----------------------------------------------------------------------------- compute


@dataclasses.dataclass(frozen=True)
class FrontierPoint:
    """Where a compute frontier reaches a bpb: ``flops``, and ``where`` it was found:
    "inside" (interpolated between two points), "below" (worse than the cheapest point:
    extrapolated along the first segment, so the true value is at most the cheapest
    point's FLOPs) or "above" (better than the dearest point: extrapolated along the last
    segment, so the true value is at least the dearest point's FLOPs). Where the segment
    to extend does not descend (more compute did not lower the bpb there), no line
    reaches the bpb on that side and ``flops`` is the bound itself: the cheapest point's
    FLOPs ("below") or the dearest point's ("above")."""

    flops: float
    where: str


def frontier_flops(flops: Sequence[float], bpb: Sequence[float], target: float) -> FrontierPoint:
    """The FLOPs at which a frontier reaches bpb ``target``.

    The frontier is the piecewise-linear curve through ``(log flops_j, bpb_j)`` in order
    of FLOPs; the answer is its first crossing of ``target`` (the smallest spend that does
    as well). Outside the frontier the nearest segment is extended (``where`` says so).

    Args:
      flops: shape ``[J]``, J >= 2 distinct positive budgets.
      bpb: shape ``[J]``, the bpb reached at each budget (lower is better; need not be
        monotone).
      target: the bpb to reach.
    """
    order = np.argsort(np.asarray(flops, dtype=float))
    x = np.log(np.asarray(flops, dtype=float)[order])
    y = np.asarray(bpb, dtype=float)[order]
    if x.size < 2 or np.unique(x).size != x.size:
        raise ValueError(f"a frontier needs at least two distinct budgets, got FLOPs {flops}.")

    def along(i: int, where: str, bound: int) -> FrontierPoint:
        """On the line through points i, i+1; at point ``bound`` if that line does not
        descend (outside the frontier only: inside, the segment crosses ``target``)."""
        slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
        if slope >= 0.0:
            return FrontierPoint(float(np.asarray(flops, dtype=float)[order][bound]), where)
        return FrontierPoint(float(np.exp(x[i] + (target - y[i]) / slope)), where)

    if target >= y[0]:
        if target == y[0]:
            return FrontierPoint(float(np.exp(x[0])), "inside")
        return along(0, "below", 0)
    for i in range(x.size - 1):
        if y[i + 1] <= target:
            return along(i, "inside", i)
    return along(x.size - 2, "above", x.size - 1)


def frontier_bpb(flops: Sequence[float], bpb: Sequence[float], at: float) -> float:
    """The bpb of a frontier at ``at`` FLOPs: the break-even a method spending ``at`` must
    reach to pay for its compute (its multiplier is 1 there on a descending frontier).

    The same curve as ``frontier_flops``: linear in ``log flops`` between the points
    (shapes ``[J]``, J >= 2 distinct budgets), its first or last segment extended outside
    them.
    """
    order = np.argsort(np.asarray(flops, dtype=float))
    x = np.log(np.asarray(flops, dtype=float)[order])
    y = np.asarray(bpb, dtype=float)[order]
    if x.size < 2 or np.unique(x).size != x.size:
        raise ValueError(f"a frontier needs at least two distinct budgets, got FLOPs {flops}.")
    i = int(np.clip(np.searchsorted(x, np.log(at)) - 1, 0, x.size - 2))
    slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
    return float(y[i] + slope * (np.log(at) - x[i]))


def ratio_interval(ratios: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Geometric mean of positive ratios (one per seed) with the t interval of their logs,
    mapped back: ``exp(mean log r)`` and ``exp(mean log r -/+ t sd / sqrt(n))``."""
    r = np.asarray(ratios, dtype=float)
    if r.size == 0 or np.any(~(r > 0.0)):
        raise ValueError(f"ratios must be positive numbers, got {list(ratios)}.")
    logs = _t_interval(np.log(r), confidence)
    sd = logs.sd
    return PairedDifference(
        math.exp(logs.mean), math.exp(logs.low), math.exp(logs.high), sd, logs.n, confidence
    )
