"""Statistics over seeds and test videos.

A cell (row × column × metric) reports the mean and the standard deviation over seeds. The best
row of a column has the highest mean (the lowest for bias amplification). Each row is compared with
the best *other* row of its column (the best row with the runner-up) by a **paired
sign-flip randomisation test** over (seed, test video) pairs: the per-video contribution to the
metric, w_i · m_i (w = the protocol's row weight, m = the tie-aware hit or gain), is differenced
between the two rows for the same seed and video, and under the null hypothesis each difference is
equally likely to have either sign. The statistic is the metric difference Σ d; its randomisation
distribution has variance Σ d², and the p-value uses the normal approximation
p = 2 (1 − Φ(|Σ d| / √Σ d²)), accurate for the thousands of videos of a test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchkit.interfaces import RankInfo
from benchkit.metrics import expected_gain, hit_probability

LOWER_IS_BETTER = frozenset({"bias_amp"})  # less over-recommendation of the majority genre


def higher_is_better(metric: str) -> bool:
    return metric.partition("@")[0] not in LOWER_IS_BETTER


def contributions(ranks: RankInfo, metric: str) -> np.ndarray | None:
    """Per-video contributions w_i · m_i whose sum is the metric (``None`` if not rank-based)."""
    name, _, k = metric.partition("@")
    if not k.isdigit():
        return None
    if name == "recall":
        return ranks.weights * hit_probability(ranks, int(k))
    if name == "ndcg":
        return ranks.weights * expected_gain(ranks, int(k))
    return None


def sign_flip_p(diff: np.ndarray) -> float:
    """Two-sided p-value of the paired sign-flip test (normal approximation)."""
    scale = math.sqrt(float(np.sum(diff**2)))
    if scale == 0.0:
        return 1.0
    z = abs(float(np.sum(diff))) / scale
    return math.erfc(z / math.sqrt(2.0))


@dataclass
class Cell:
    values: dict[int, float] = field(default_factory=dict)  # seed → metric
    per_video: dict[int, np.ndarray] = field(default_factory=dict)  # seed → contributions
    data: dict[int, str] = field(default_factory=dict)  # seed → test rows' dataset fingerprint
    p_value: float | None = None
    compared_with: str | None = None
    best: bool = False

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else float("nan")

    @property
    def std(self) -> float:
        v = list(self.values.values())
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

    @property
    def n(self) -> int:
        return len(self.values)


Summary = dict[tuple[str, tuple[str, ...], str], Cell]


def summarise(grid: Any, keys: list[str], results: dict[str, dict[str, Any]]) -> Summary:
    """Group the finished runs of a grid into cells and run the paired tests."""
    summary: Summary = {}
    for job, key in zip(grid.jobs, keys, strict=True):
        if key not in results:
            continue
        res = results[key]
        for metric in grid.metrics:
            cell = summary.setdefault((job.row, job.column, metric), Cell())
            if metric in res["metrics"]:
                cell.values[job.seed] = float(res["metrics"][metric])
            contrib = contributions(res["ranks"], metric)
            if contrib is not None:
                cell.per_video[job.seed] = contrib
                cell.data[job.seed] = res["record"]["dataset"]["fingerprint"]
    for column in grid.columns:
        for metric in grid.metrics:
            cells = {
                row: summary[(row, column, metric)]
                for row in grid.rows
                if (row, column, metric) in summary and summary[(row, column, metric)].n
            }
            if not cells:
                continue
            ranked = sorted(cells, key=lambda r: cells[r].mean, reverse=higher_is_better(metric))
            cells[ranked[0]].best = True
            if len(ranked) < 2:
                continue
            for row in ranked:
                other = ranked[1] if row == ranked[0] else ranked[0]
                if other == row:
                    continue
                a, b = cells[row], cells[other]
                seeds = sorted(set(a.per_video) & set(b.per_video))
                # Pairs are (seed, video): only rows ranked on the same test videos compare.
                if not seeds or any(a.data[s] != b.data[s] for s in seeds):
                    continue
                diff = np.concatenate([a.per_video[s] - b.per_video[s] for s in seeds])
                a.p_value, a.compared_with = sign_flip_p(diff), other
    return summary
