"""Ranking metrics for one relevant item per row, with a stated tie policy.

Each row's positive landed below ``g`` candidates that scored strictly higher and level with ``e``
others. Tie policies:

- ``expected`` (default): the positive's rank is uniform over g … g+e, as if ties were broken by a
  fair coin; a model that scores everything the same gets exactly chance-level numbers.
- ``optimistic``: rank g (ties broken in the positive's favour) — what an argsort that happens to
  put the positive first would report.
- ``pessimistic``: rank g + e.

Recall@K = Σ_rows w · P(rank < K); NDCG@K = Σ_rows w · E[1(rank < K) / log2(rank + 2)] — with one
relevant item the ideal DCG is 1. Weights sum to 1 (the paper's inverse-popularity weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchkit import hookimpl
from benchkit.interfaces import Metric, RankInfo

TIE_POLICIES = ("expected", "optimistic", "pessimistic")


def _rank_bounds(ranks: RankInfo) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(ranks.n_greater, dtype=np.int64)
    e = np.asarray(ranks.n_equal, dtype=np.int64)
    if ranks.tie_policy == "expected":
        return g, g + e
    if ranks.tie_policy == "optimistic":
        return g, g
    if ranks.tie_policy == "pessimistic":
        return g + e, g + e
    raise ValueError(f"unknown tie policy {ranks.tie_policy!r}; choose from {TIE_POLICIES}")


def hit_probability(ranks: RankInfo, k: int) -> np.ndarray:
    """P(rank < k) per row under the tie policy."""
    lo, hi = _rank_bounds(ranks)
    return np.clip(k - lo, 0, hi - lo + 1) / (hi - lo + 1)


def expected_gain(ranks: RankInfo, k: int) -> np.ndarray:
    """E[1(rank < k) / log2(rank + 2)] per row under the tie policy (rank uniform on lo … hi)."""
    lo, hi = _rank_bounds(ranks)
    prefix = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    top = np.minimum(hi, k - 1) + 1
    total = np.where(lo < k, prefix[np.minimum(top, k)] - prefix[np.minimum(lo, k)], 0.0)
    return total / (hi - lo + 1)


class Recall(Metric):
    name = "recall"
    description = "weighted share of rows whose positive ranks in the top K"

    def __call__(self, ranks: RankInfo, k: int) -> float:
        return float(np.dot(ranks.weights, hit_probability(ranks, k)))


class NDCG(Metric):
    name = "ndcg"
    description = "weighted NDCG@K with one relevant item per row (ideal DCG = 1)"

    def __call__(self, ranks: RankInfo, k: int) -> float:
        return float(np.dot(ranks.weights, expected_gain(ranks, k)))


@hookimpl
def register_metrics(register: Any) -> None:
    register(Recall())
    register(NDCG())
