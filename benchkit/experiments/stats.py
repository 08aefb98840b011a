"""Statistics over seeds and test videos.

A cell (row × column × metric) reports the mean and the standard deviation over seeds. The best
row of a column has the highest mean (the lowest for bias amplification). Each row is compared with
the best *other* row of its column (the best row with the runner-up) — or, in a grid that names
its controls, with the baseline (the baseline with the positive control) — by a **paired
sign-flip randomisation test** over (seed, test video) pairs: the per-video contribution to the
metric, w_i · m_i (w = the protocol's row weight, m = the tie-aware hit or gain; for the oracle
metrics, the row's expected value / n), is differenced between the two rows for the same seed and
video, and under the null hypothesis each difference is
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
    """Per-video contributions whose sum is the metric: w_i · m_i for the protocol's metrics, the
    row's value / n for the row-averaged oracle and bias metrics (``None`` when unknown)."""
    if metric in ranks.per_row:
        values = ranks.per_row[metric]
        return values / max(1, values.size)
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
    data: dict[int, str] = field(default_factory=dict)  # seed → identity of the test rows
    p_value: float | None = None
    compared_with: str | None = None
    best: bool = False
    headroom: float | None = None  # (row − baseline) / (positive control − baseline)
    failed: int = 0  # seeds whose run failed

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


def summarise(
    grid: Any,
    keys: list[str],
    results: dict[str, dict[str, Any]],
    jobs: list[Any] | None = None,
    failed: set[str] | None = None,
) -> Summary:
    """Group the finished runs of a grid into cells and run the paired tests. ``jobs`` are the
    grid's jobs that ``keys`` belong to (default: all of them); ``failed`` the keys that failed."""
    summary: Summary = {}
    for job, key in zip(grid.jobs if jobs is None else jobs, keys, strict=True):
        if failed and key in failed:
            for metric in grid.metrics:
                summary.setdefault((job.row, job.column, metric), Cell()).failed += 1
            continue
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
                dataset = res["record"]["dataset"]
                cell.data[job.seed] = dataset.get("eval_rows", dataset["fingerprint"])
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
            base = grid.controls.get("baseline")
            for row in ranked:
                if base in cells:  # with controls: does the row differ from the baseline?
                    other = grid.controls["positive"] if row == base else base
                else:
                    other = ranked[1] if row == ranked[0] else ranked[0]
                if other == row or other not in cells:
                    continue
                a, b = cells[row], cells[other]
                seeds = sorted(set(a.per_video) & set(b.per_video))
                # Pairs are (seed, video): only rows ranked on the same test videos compare.
                if not seeds or any(a.data[s] != b.data[s] for s in seeds):
                    continue
                diff = np.concatenate([a.per_video[s] - b.per_video[s] for s in seeds])
                a.p_value, a.compared_with = sign_flip_p(diff), other
    if grid.controls:
        headroom_closed(grid, summary)
    return summary


def headroom_closed(grid: Any, summary: Summary) -> None:
    """Per column and metric, each row's share of the gap between the baseline (the backbone
    trained on the observed choices) and the positive control (the same backbone trained on the
    counterfactual ones) that it closes: 0 = no better than the baseline, 1 = as good as
    debiasing the training data itself. Undefined (None) where the controls do not differ."""
    base_row, pos_row = grid.controls["baseline"], grid.controls["positive"]
    for column in grid.columns:
        for metric in grid.metrics:
            base = summary.get((base_row, column, metric))
            pos = summary.get((pos_row, column, metric))
            if base is None or pos is None or not base.n or not pos.n:
                continue
            gap = pos.mean - base.mean
            if abs(gap) < 1e-12:
                continue
            for row in grid.rows:
                cell = summary.get((row, column, metric))
                if cell is not None and cell.n:
                    cell.headroom = (cell.mean - base.mean) / gap
