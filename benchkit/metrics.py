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

from benchkit.contracts.metrics import DECLARED, Metric, MetricInfo, RankInfo
from benchkit.hookspecs import hookimpl

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
    name, label = "recall", "Recall"
    description = "the observed choice in the top K (weighted share of rows)"

    def __call__(self, ranks: RankInfo, k: int) -> float:
        return float(np.dot(ranks.weights, hit_probability(ranks, k)))


class NDCG(Metric):
    name, label = "ndcg", "NDCG"
    description = "the observed choice's discounted rank (weighted NDCG@K, ideal DCG = 1)"

    def __call__(self, ranks: RankInfo, k: int) -> float:
        return float(np.dot(ranks.weights, expected_gain(ranks, k)))


def metric_info(metric: str) -> MetricInfo:
    """The declaration of ``metric`` (``family@K`` or a family): the built-in ones and those of the
    installed metric plugins (loaded on the first question about a family not yet declared). A
    family nobody declares is read as a weighted, higher-is-better metric without bounds."""
    family = metric.partition("@")[0]
    if family not in DECLARED:
        from benchkit.plugins import get_plugins

        get_plugins()  # importing the plugins' metric modules declares their families
    return DECLARED.get(family) or MetricInfo(family, family, bounds=None)


def higher_is_better(metric: str) -> bool:
    return metric_info(metric).higher_is_better


def better_sign(metric: str) -> int:
    """+1 where higher is better, −1 where lower is: ``better_sign(m) * value`` ranks best first."""
    return 1 if higher_is_better(metric) else -1


def needs_truth(metric: str) -> bool:
    return metric_info(metric).truth


def metric_label(metric: str) -> str:
    """``cf_recall@25`` → ``cf-Recall@25``."""
    family, _, k = metric.partition("@")
    label = metric_info(family).label
    return f"{label}@{k}" if k else label


@hookimpl
def register_metrics(register: Any) -> None:
    register(Recall())
    register(NDCG())
