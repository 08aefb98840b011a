"""Statistics over seeds and test videos, vectorised with numpy.

A cell (row × column × metric) reports the mean and the standard deviation over seeds, and a 95%
bootstrap confidence interval over (seed, test video) pairs (percentile method, 2,000 resamples of
the per-video contributions). The best row of a column has the highest mean (the lowest for bias
amplification). Each row is compared with the best *other* row of its column (the best row with the
runner-up) — or, in a grid that names its controls, with the baseline (the baseline with the
positive control) — by a **paired sign-flip permutation test** over (seed, test video) pairs: the
per-video contribution to the metric, w_i · m_i (w = the protocol's row weight, m = the tie-aware
hit or gain; for the oracle metrics, the row's expected value / n), is differenced between the two
rows for the same seed and video; under the null hypothesis each difference is equally likely to
have either sign. The statistic is the metric difference Σ d. The p-value is exact (every sign
pattern) for n ≤ 10 pairs and a Monte Carlo estimate from 2,000 random sign patterns above that
(as ``scipy.stats.permutation_test`` defines it, computed as one matrix product per batch of
patterns; its smallest value is then 2/2,001). The p-values of the rows compared within one column
and metric are adjusted by Holm's step-down correction; a ``*`` marks an adjusted p < 0.05.
"""

from __future__ import annotations

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


RESAMPLES = 2000
EXACT_UP_TO = 10  # pairs: 2^10 = 1,024 sign patterns, fewer than RESAMPLES
BATCH_ELEMENTS = 2**22  # resamples × pairs held at once (32 MB of float64)


def _random_bits(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """(rows, n) independent fair 0/1 draws, 64 per draw of the generator."""
    words = (rows * n + 63) // 64
    raw = rng.integers(0, 2**64 - 1, size=words, dtype=np.uint64, endpoint=True)
    return np.unpackbits(raw.view(np.uint8))[: rows * n].reshape(rows, n)


def _sign_flip_null(diff: np.ndarray, seed: int) -> tuple[np.ndarray, bool]:
    """Σ s_i d_i over sign patterns s: all 2^n of them for n ≤ EXACT_UP_TO (exact), else
    RESAMPLES random ones. With bits b ∈ {0, 1} (s = 1 − 2b) the sum is Σ d − 2 b·d: one matrix
    product per batch of patterns (scipy's generic permutation test took seconds per cell at the
    paper's 14,635 pairs; this takes a few hundredths)."""
    n = diff.size
    total = diff.sum()
    if n <= EXACT_UP_TO:
        codes = np.arange(2**n, dtype=np.uint32)[:, None]
        bits = (codes >> np.arange(n, dtype=np.uint32)) & 1
        return total - 2.0 * (bits @ diff), True
    rng = np.random.default_rng(seed)
    step = max(1, BATCH_ELEMENTS // n)
    parts = []
    for start in range(0, RESAMPLES, step):
        bits = _random_bits(rng, min(step, RESAMPLES - start), n)
        parts.append(total - 2.0 * (bits.astype(np.float64) @ diff))
    return np.concatenate(parts), False


def sign_flip_p(diff: np.ndarray, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip test of Σ d = 0 (exact for n ≤ 10): twice the
    smaller tail, counting the observed sum itself among the Monte Carlo patterns (so at least
    2 / (RESAMPLES + 1)), as ``scipy.stats.permutation_test`` defines it."""
    diff = np.asarray(diff, dtype=np.float64).ravel()
    if diff.size == 0 or not np.any(diff):
        return 1.0
    null, exact = _sign_flip_null(diff, seed)
    observed = diff.sum()
    slack = abs(observed) * np.finfo(np.float64).eps * 100  # equal in theory, not in rounding
    extra = 0 if exact else 1
    below = (np.count_nonzero(null <= observed + slack) + extra) / (null.size + extra)
    above = (np.count_nonzero(null >= observed - slack) + extra) / (null.size + extra)
    return float(min(1.0, 2.0 * min(below, above)))


def bootstrap_ci(contrib: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of Σ contributions (resampling (seed, video) pairs with
    replacement, RESAMPLES times, in batches)."""
    contrib = np.asarray(contrib, dtype=np.float64).ravel()
    if contrib.size < 2 or np.all(contrib == contrib[0]):
        total = float(np.sum(contrib))
        return total, total
    rng = np.random.default_rng(seed)
    n = contrib.size
    step = max(1, BATCH_ELEMENTS // n)
    totals = np.concatenate(
        [
            contrib[rng.integers(0, n, size=(min(step, RESAMPLES - s), n))].sum(axis=1)
            for s in range(0, RESAMPLES, step)
        ]
    )
    low, high = np.percentile(totals, [2.5, 97.5])
    return float(low), float(high)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (the order of the input is kept)."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclass
class Cell:
    values: dict[int, float] = field(default_factory=dict)  # seed → metric
    per_video: dict[int, np.ndarray] = field(default_factory=dict)  # seed → contributions
    data: dict[int, str] = field(default_factory=dict)  # seed → identity of the test rows
    p_value: float | None = None  # Holm-adjusted within the column and metric
    p_raw: float | None = None
    pairs: int = 0  # (seed, video) pairs of the test
    ci: tuple[float, float] | None = None  # 95% bootstrap interval of the mean over seeds
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
            for cell in cells.values():
                if cell.per_video:
                    seeds = sorted(cell.per_video)
                    scaled = np.concatenate([cell.per_video[s] for s in seeds]) / len(seeds)
                    cell.ci = bootstrap_ci(scaled)
            base = grid.controls.get("baseline")
            family: list[Cell] = []
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
                a.p_raw, a.pairs, a.compared_with = sign_flip_p(diff), diff.size, other
                family.append(a)
            for cell, adjusted in zip(family, holm([c.p_raw or 1.0 for c in family]), strict=True):
                cell.p_value = adjusted
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
