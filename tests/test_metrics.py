"""Metric values against hand-computed cases and brute force over tie-breaks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchkit.interfaces import RankInfo
from benchkit.metrics import NDCG, Recall, expected_gain, hit_probability


def ranks(g, e, w=None, tie="expected", n=101):
    g, e = np.asarray(g), np.asarray(e)
    w = np.full(g.size, 1.0 / g.size) if w is None else np.asarray(w, dtype=float)
    return RankInfo(n_greater=g, n_equal=e, weights=w, n_candidates=n, tie_policy=tie)


def test_hand_computed_without_ties():
    # Three rows, positives at ranks 0, 4 and 30 (0-based), weights 0.5 / 0.3 / 0.2.
    r = ranks([0, 4, 30], [0, 0, 0], [0.5, 0.3, 0.2])
    assert Recall()(r, 1) == pytest.approx(0.5)
    assert Recall()(r, 5) == pytest.approx(0.8)
    assert Recall()(r, 25) == pytest.approx(0.8)
    assert Recall()(r, 31) == pytest.approx(1.0)
    expected = 0.5 * 1.0 + 0.3 / math.log2(6)
    assert NDCG()(r, 10) == pytest.approx(expected)
    assert NDCG()(r, 31) == pytest.approx(expected + 0.2 / math.log2(32))


def test_constant_scorer_is_chance_level():
    # Every candidate tied with the positive: 100 others among 101 candidates.
    r = ranks([0] * 7, [100] * 7)
    for k in (10, 15, 20, 25):
        assert Recall()(r, k) == pytest.approx(k / 101)
        brute = sum(1 / math.log2(i + 2) for i in range(k)) / 101
        assert NDCG()(r, k) == pytest.approx(brute)


def test_tie_policies_bracket_expected():
    r = {t: ranks([3], [10], tie=t) for t in ("optimistic", "expected", "pessimistic")}
    assert Recall()(r["optimistic"], 10) == 1.0
    assert Recall()(r["pessimistic"], 10) == 0.0
    assert Recall()(r["expected"], 10) == pytest.approx(7 / 11)  # ranks 3..13, 7 of them < 10


def test_unknown_tie_policy():
    with pytest.raises(ValueError, match="tie policy"):
        Recall()(ranks([0], [0], tie="random"), 5)


@settings(max_examples=200, deadline=None)
@given(g=st.integers(0, 12), e=st.integers(0, 6), k=st.integers(1, 20))
def test_expected_policy_equals_average_over_all_tie_orders(g, e, k):
    """Brute force: place the positive at every position within its tie block, average."""
    r = ranks([g], [e])
    positions = range(g, g + e + 1)
    hit = np.mean([p < k for p in positions])
    gain = np.mean([(1 / math.log2(p + 2)) if p < k else 0.0 for p in positions])
    assert hit_probability(r, k)[0] == pytest.approx(hit)
    assert expected_gain(r, k)[0] == pytest.approx(gain)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 5), st.floats(0.01, 1.0)),
        min_size=1,
        max_size=20,
    )
)
def test_invariants(rows):
    g, e, w = map(np.asarray, zip(*rows, strict=True))
    r = ranks(g, e, w / w.sum())
    recalls = [Recall()(r, k) for k in range(1, 60)]
    assert all(0.0 <= x <= 1.0 + 1e-12 for x in recalls)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(recalls))  # monotone in K
    for k in (1, 5, 25):
        assert NDCG()(r, k) <= Recall()(r, k) + 1e-12
    assert Recall()(r, 60) == pytest.approx(1.0)  # every positive is within 50 + 5 + 1
