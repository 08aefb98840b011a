"""Statistics of a grid whose unit of evidence is what varies between the worlds a claim is about.

A cell (row × column × metric) holds runs by **replicate** and seed. A replicate is a fresh world —
its own world seed, split, sampled negatives, truth, PGC teacher and training seed — or, on data
from disk, a fresh validation/test partition; seeds within a replicate vary only initialisation and
batching. The test videos of one replicate are not independent evidence: videos of one uploader
share their history, their d_u and much of their music, and every video of a run shares that run's
training noise. So:

- **Value**: the mean over replicates of the mean over the replicate's seeds.
- **Interval** (95%): a hierarchical bootstrap — 2,000 resamples of the replicates, then of the
  uploaders within each resampled test set, then of the videos within each resampled uploader (the
  videos alone where the data has no uploaders) — gives the standard error of the value; the
  interval is value ± t(U − 1) · SE · √(U / (U − 1)), U = the replicates (the small-sample factor
  undoes the bootstrap's (U − 1)/U bias). With one replicate the seeds are the top level; with one
  run the interval covers the test videos' sampling noise only, with the normal quantile, and the
  footer of a table says so.
- **Comparisons** are paired within replicate (the same worlds and test videos): the difference of
  two rows per replicate, tested by a paired t-test over replicates (``scipy.stats.ttest_1samp``;
  over seeds when there is one replicate), Holm-corrected across the rows compared in a column and
  metric. With fewer than two units (or differences that do not vary at all) there is no test:
  one run per cell cannot measure training noise, and a test over test videos that ignores it
  rejects far more often than its level says (``benchmarks/calibration.py`` measures both).
- **Headroom closed** = (row − baseline) / (positive control − baseline), only in cells where the
  positive control beats the baseline significantly (the same test); its interval comes from the
  same paired bootstrap.

The old test — a paired sign-flip permutation test over (seed, test video) pairs
(:func:`sign_flip_p`) — stays for the calibration benchmark, which reports its false-positive rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from benchkit.interfaces import RankInfo
from benchkit.metrics import expected_gain, higher_is_better, hit_probability, metric_info

ALPHA = 0.05
RESAMPLES = 2000
BATCH = 250  # bootstrap resamples whose multiplicities are held at once (rows × BATCH floats)


def contributions(ranks: RankInfo, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-row (contribution, weight) with Σ contribution / Σ weight = the metric: w_i · m_i and
    the protocol's weight w_i for the protocol's metrics, the row's value / n and 1 / n for the
    row-averaged oracle and bias metrics (``None`` when the ranks cannot give it)."""
    if metric in ranks.per_row:
        values = np.asarray(ranks.per_row[metric], dtype=np.float64)
        n = max(1, values.size)
        return values / n, np.full(values.size, 1.0 / n)
    name, _, k = metric.partition("@")
    if not k.isdigit():
        return None
    weights = np.asarray(ranks.weights, dtype=np.float64)
    if name == "recall":
        return weights * hit_probability(ranks, int(k)), weights
    if name == "ndcg":
        return weights * expected_gain(ranks, int(k)), weights
    return None


# ---------------------------------------------------------------------------------------------
# The old test (kept for the calibration benchmark): a sign flip over (seed, video) pairs

EXACT_UP_TO = 10  # pairs: 2^10 = 1,024 sign patterns, fewer than RESAMPLES
BATCH_ELEMENTS = 2**22  # resamples × pairs held at once (32 MB of float64)


def _random_bits(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """(rows, n) independent fair 0/1 draws, 64 per draw of the generator."""
    words = (rows * n + 63) // 64
    raw = rng.integers(0, 2**64 - 1, size=words, dtype=np.uint64, endpoint=True)
    return np.unpackbits(raw.view(np.uint8))[: rows * n].reshape(rows, n)


def _sign_flip_null(diff: np.ndarray, seed: int) -> tuple[np.ndarray, bool]:
    """Σ s_i d_i over sign patterns s: all 2^n of them for n ≤ EXACT_UP_TO (exact), else
    RESAMPLES random ones; with bits b (s = 1 − 2b) the sum is Σ d − 2 b·d, a matrix product."""
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
    smaller tail, counting the observed sum among the Monte Carlo patterns, as
    ``scipy.stats.permutation_test`` defines it. It treats every pair as independent evidence."""
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


# ---------------------------------------------------------------------------------------------
# Cells


@dataclass
class Replicate:
    """One replicate's runs of a cell: its test rows' identity (``key``: what two rows must share
    to be paired), and per seed the metric, the rows' contributions and weights, their uploaders."""

    key: str
    values: dict[int, float] = field(default_factory=dict)
    contrib: dict[int, np.ndarray] = field(default_factory=dict)
    weights: np.ndarray | None = None
    clusters: np.ndarray | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values())))


@dataclass
class Contrast:
    """A paired comparison: the mean difference over units, its 95% interval, the p-value, the
    number of units and what they are (``replicates`` or ``seeds``)."""

    effect: float
    ci: tuple[float, float]
    p: float
    units: int
    unit: str


@dataclass
class Cell:
    replicates: dict[int, Replicate] = field(default_factory=dict)
    control: bool = False  # a control or an oracle: never bold, never a "best method"
    ci: tuple[float, float] | None = None  # 95% interval of the value
    p_value: float | None = None  # Holm-adjusted within the column and metric
    p_raw: float | None = None
    compared_with: str | None = None
    difference: Contrast | None = None  # against ``compared_with``
    best: bool = False
    tied: bool = False  # its interval overlaps the best method's
    headroom: float | None = None  # (row − baseline) / (positive control − baseline)
    headroom_ci: tuple[float, float] | None = None
    failed: int = 0  # runs of the cell that failed
    draws: np.ndarray | None = field(default=None, repr=False)  # bootstrap values of the mean

    # -- the units of evidence ---------------------------------------------------------------

    @property
    def unit(self) -> str:
        return "replicates" if len(self.replicates) > 1 else "seeds"

    def units(self) -> dict[Any, tuple[str, float]]:
        """Top-level unit → (test rows' identity, value): the replicates when there are two or
        more (each the mean over its seeds), else the one replicate's seeds."""
        if len(self.replicates) > 1:
            return {r: (rep.key, rep.mean) for r, rep in self.replicates.items() if rep.values}
        out: dict[Any, tuple[str, float]] = {}
        for rep in self.replicates.values():
            out.update({("seed", s): (rep.key, v) for s, v in rep.values.items()})
        return out

    @property
    def n(self) -> int:
        """Finished runs."""
        return sum(len(rep.values) for rep in self.replicates.values())

    @property
    def n_replicates(self) -> int:
        return sum(1 for rep in self.replicates.values() if rep.values)

    @property
    def n_seeds(self) -> int:
        return max((len(rep.values) for rep in self.replicates.values()), default=0)

    @property
    def mean(self) -> float:
        values = [v for _, v in self.units().values()]
        return float(np.mean(values)) if values else float("nan")

    @property
    def std(self) -> float:
        """Standard deviation of the unit values (replicates, or seeds)."""
        values = [v for _, v in self.units().values()]
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


Summary = dict[tuple[str, tuple[str, ...], str], Cell]


def paired_test(terms: Iterable[tuple[Cell, float]], alpha: float = ALPHA) -> Contrast | None:
    """The paired t-test of Σ coef · cell over the units every cell shares on the same test rows
    (``None`` with fewer than two such units, or when the differences do not vary: a deterministic
    pair of rows on one world, whose seeds change nothing, has no noise to test against). Its
    interval is at level 1 − ``alpha``."""
    terms = list(terms)
    unit_maps = [cell.units() for cell, _ in terms]
    if not unit_maps:
        return None
    shared = set(unit_maps[0])
    for units in unit_maps[1:]:
        shared &= set(units)
    diffs = []
    for u in sorted(shared, key=str):
        keys = {units[u][0] for units in unit_maps}
        if len(keys) == 1:  # the same test rows in every cell of the contrast
            diffs.append(
                sum(coef * units[u][1] for units, (_, coef) in zip(unit_maps, terms, strict=True))
            )
    if len(diffs) < 2:
        return None
    d = np.asarray(diffs, dtype=np.float64)
    unit = "replicates" if not isinstance(next(iter(shared)), tuple) else "seeds"
    if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):
        if abs(float(d.mean())) > 1e-12:
            return None
        return Contrast(0.0, (0.0, 0.0), 1.0, d.size, unit)
    res = sps.ttest_1samp(d, 0.0)
    low, high = res.confidence_interval(1 - alpha)
    return Contrast(float(d.mean()), (float(low), float(high)), float(res.pvalue), d.size, unit)


# ---------------------------------------------------------------------------------------------
# The hierarchical bootstrap


def _seed_of(*parts: Any) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


def multiplicities(
    rng: np.random.Generator, clusters: np.ndarray | None, n: int, size: int
) -> np.ndarray:
    """(size, n) resampled multiplicities of n rows: the clusters drawn with replacement, then
    each drawn copy of a cluster's rows drawn with replacement (m copies of a cluster of k rows:
    one multinomial of m·k draws over its rows). Without clusters (or for rows of unknown
    cluster, −1) every row is its own cluster."""
    if clusters is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
    clusters = np.asarray(clusters)
    unknown = clusters < 0
    if unknown.any():
        clusters = clusters.copy()
        clusters[unknown] = clusters.max(initial=0) + 1 + np.arange(int(unknown.sum()))
    ids, inverse = np.unique(clusters, return_inverse=True)
    sizes = np.bincount(inverse)
    copies = rng.multinomial(ids.size, np.full(ids.size, 1.0 / ids.size), size=size)
    out = np.zeros((size, n))
    order = np.argsort(inverse, kind="stable")
    bounds = np.r_[0, np.cumsum(sizes)]
    for c in range(ids.size):
        rows = order[bounds[c] : bounds[c + 1]]
        k = rows.size
        if k == 1:
            out[:, rows[0]] = copies[:, c]
        else:
            out[:, rows] = rng.multinomial(copies[:, c] * k, np.full(k, 1.0 / k))
    return out


def _unit_vectors(cell: Cell, metric: str) -> dict[Any, tuple[str, np.ndarray, Replicate]] | None:
    """Unit → (rows' identity, contribution vector, its replicate) of a cell, or ``None`` when a
    run's contributions are unknown."""
    out: dict[Any, tuple[str, np.ndarray, Replicate]] = {}
    many = len(cell.replicates) > 1
    for r, rep in cell.replicates.items():
        if not rep.values:
            continue
        if set(rep.contrib) != set(rep.values) or rep.weights is None:
            return None
        if many:
            out[r] = (rep.key, np.mean([rep.contrib[s] for s in sorted(rep.values)], axis=0), rep)
        else:
            for s in rep.values:
                out[("seed", s)] = (rep.key, rep.contrib[s], rep)
    return out or None


def bootstrap(cells: dict[str, Cell], metric: str, resamples: int = RESAMPLES) -> None:
    """Set ``draws`` (the bootstrap values of the mean), ``ci`` of every cell of one column and
    metric. Rows on the same test rows share every resample (paired), so differences and ratios
    of their draws are paired too."""
    vectors = {row: _unit_vectors(cell, metric) for row, cell in cells.items()}
    groups: dict[tuple[Any, str], list[tuple[str, np.ndarray]]] = {}
    for row, units in vectors.items():
        for u, (key, vec, _) in (units or {}).items():
            groups.setdefault((u, key), []).append((row, vec))
    inner: dict[tuple[Any, str, str], np.ndarray] = {}
    for (u, key), members in groups.items():
        rep = next(vectors[row][u][2] for row, _ in members if vectors[row])  # type: ignore[index]
        assert rep.weights is not None
        contrib = np.stack([vec for _, vec in members], axis=1)
        weights = rep.weights
        # The seeds of one replicate rank the same test videos: they share every resample of
        # them. Replicates hold other test videos: their resamples are independent.
        seed_unit = isinstance(u, tuple)
        rng = np.random.default_rng(
            _seed_of(key, metric) if seed_unit else _seed_of(key, u, metric)
        )
        values = np.empty((resamples, contrib.shape[1]))
        for s in range(0, resamples, BATCH):
            k = multiplicities(rng, rep.clusters, weights.size, min(BATCH, resamples - s))
            den = k @ weights
            values[s : s + k.shape[0]] = (k @ contrib) / np.where(den > 0, den, 1.0)[:, None]
        for j, (row, _) in enumerate(members):
            inner[(u, key, row)] = values[:, j]
    for row, cell in cells.items():
        units = vectors[row]
        if not units:
            continue
        order = sorted(units, key=str)
        m = len(order)
        # Slot k of resample b reads inner draw b + k·stride: another draw of another replicate's
        # test videos (a prime stride), the same draw of the one test set that seeds share.
        stride = 0 if isinstance(order[0], tuple) else 7919
        top = np.random.default_rng(_seed_of("top", m, metric)).integers(0, m, (resamples, m))
        idx = np.arange(resamples)
        draws = np.zeros(resamples)
        for slot in range(m):
            picks = np.empty(resamples)
            for j, u in enumerate(order):
                chosen = top[:, slot] == j
                series = inner[(u, units[u][0], row)]
                picks[chosen] = series[(idx[chosen] + slot * stride) % resamples]
            draws += picks
        cell.draws = draws / m
        cell.ci = clipped(interval(cell.mean, cell.draws, m), metric_info(metric).bounds)


def clipped(ci: tuple[float, float], bounds: tuple[float, float] | None) -> tuple[float, float]:
    """A metric's interval within the values it can take (a t-interval of a recall near 1 would
    reach past 1: no world has such a recall)."""
    if bounds is None:
        return ci
    return max(ci[0], bounds[0]), min(ci[1], bounds[1])


def interval(
    value: float, draws: np.ndarray, units: int, robust: bool = False
) -> tuple[float, float]:
    """value ± q · SE, SE from bootstrap ``draws`` (× √(U/(U−1)) for U ≥ 2 top-level units), q the
    t quantile with U − 1 degrees of freedom (the normal one for a single unit). ``robust``: the SE
    of a ratio is the interquartile range / 1.349, so that a few wild resamples (a ratio near 0/0)
    do not blow it up."""
    se = float(np.std(draws, ddof=1)) if draws.size > 1 else 0.0
    if robust and draws.size > 1:
        q75, q25 = np.percentile(draws, [75, 25])
        se = min(se, float(q75 - q25) / 1.349)
    if units >= 2:
        se *= np.sqrt(units / (units - 1))
        q = float(sps.t.ppf(1 - ALPHA / 2, units - 1))
    else:
        q = float(sps.norm.ppf(1 - ALPHA / 2))
    return value - q * se, value + q * se


# ---------------------------------------------------------------------------------------------
# A grid's cells


def summarise(
    grid: Any,
    keys: list[str],
    results: dict[str, dict[str, Any]],
    jobs: list[Any] | None = None,
    failed: set[str] | None = None,
    resamples: int = RESAMPLES,
) -> Summary:
    """Group the finished runs of a grid into cells, then per column and metric: intervals, the
    best method and those tied with it, paired tests (Holm), headroom. ``jobs`` are the grid's
    jobs that ``keys`` belong to (default: all of them); ``failed`` the keys that failed."""
    summary: Summary = {}
    controls = set(getattr(grid, "control_rows", set()))
    for job, key in zip(grid.jobs if jobs is None else jobs, keys, strict=True):
        replicate = getattr(job, "replicate", 0)
        for metric in grid.metrics:
            cell = summary.setdefault((job.row, job.column, metric), Cell())
            cell.control = job.row in controls
            if failed and key in failed:
                cell.failed += 1
                continue
            if key not in results:
                continue
            res = results[key]
            if metric not in res["metrics"]:
                continue
            dataset = res["record"]["dataset"]
            rep = cell.replicates.setdefault(
                replicate, Replicate(str(dataset.get("eval_rows", dataset.get("fingerprint"))))
            )
            rep.values[job.seed] = float(res["metrics"][metric])
            parts = contributions(res["ranks"], metric)
            if parts is not None:
                rep.contrib[job.seed], rep.weights = parts
                rep.clusters = res["ranks"].clusters
    for column in grid.columns:
        for metric in grid.metrics:
            cells = {
                row: summary[(row, column, metric)]
                for row in grid.rows
                if (row, column, metric) in summary and summary[(row, column, metric)].n
            }
            if cells:
                _column(grid, cells, metric, resamples)
    return summary


def _column(grid: Any, cells: dict[str, Cell], metric: str, resamples: int) -> None:
    bootstrap(cells, metric, resamples)
    higher = higher_is_better(metric)
    methods = [row for row, cell in cells.items() if not cell.control]
    if methods:
        best = max(methods, key=lambda r: cells[r].mean if higher else -cells[r].mean)
        cells[best].best = True
        bci = cells[best].ci
        if bci is not None:
            for row in methods:
                ci = cells[row].ci
                if row != best and ci is not None and ci[0] <= bci[1] and bci[0] <= ci[1]:
                    cells[row].tied = True
    base = grid.controls.get("baseline")
    if base is not None and base not in cells:
        return  # nothing to compare with (its runs failed or are missing): no marks, no headroom
    ranked = sorted(cells, key=lambda r: cells[r].mean, reverse=higher)
    methods_family: list[Cell] = []
    controls_family: list[Cell] = []
    for row in ranked:
        if row == base:
            continue  # the baseline's own mark is the headroom test's (below)
        if base is not None:  # with controls: does the row differ from the baseline?
            other = base
        else:
            others = [r for r in ranked if r != row and not cells[r].control]
            other = others[0] if others else row
        if other == row:
            continue
        test = paired_test([(cells[row], 1.0), (cells[other], -1.0)])
        if test is None:
            continue
        cell = cells[row]
        cell.p_raw, cell.compared_with, cell.difference = test.p, other, test
        (controls_family if cell.control else methods_family).append(cell)
    # Holm across the compared methods of the column; the controls are a family of their own
    # (their tests say whether the instrument can see anything, not which method wins).
    for family in (methods_family, controls_family):
        adjusted = holm([1.0 if c.p_raw is None else c.p_raw for c in family])
        for cell, p in zip(family, adjusted, strict=True):
            cell.p_value = p
    if grid.controls:
        _headroom(grid, cells, metric)


def headroom_test(gap: Contrast | None, metric: str) -> tuple[bool, str]:
    """Whether ``gap`` — the paired test of the positive control minus the baseline in a cell —
    says the control beats the baseline significantly, and why not."""
    if gap is None:
        return False, "no test"
    better = gap.effect > 0 if higher_is_better(metric) else gap.effect < 0
    if gap.p >= ALPHA or not better:
        return False, "no headroom"
    return True, ""


def _headroom(grid: Any, cells: dict[str, Cell], metric: str) -> None:
    """The baseline's own mark (it is compared with the positive control: marked exactly when
    the control beats it significantly) and, where there is headroom, the share of it each row
    closes."""
    base_row, pos_row = grid.controls["baseline"], grid.controls["positive"]
    base, pos = cells.get(base_row), cells.get(pos_row)
    if base is None or pos is None:
        return
    gap = paired_test([(pos, 1.0), (base, -1.0)])
    ok, _ = headroom_test(gap, metric)
    if gap is not None:
        low, high = gap.ci
        base.p_raw, base.compared_with = gap.p, pos_row
        base.difference = Contrast(-gap.effect, (-high, -low), gap.p, gap.units, gap.unit)
        base.p_value = gap.p if ok else None
    if not ok:
        return
    span = pos.mean - base.mean
    for row, cell in cells.items():
        if cell.control or row == base_row:
            continue
        cell.headroom = (cell.mean - base.mean) / span
        if cell.draws is not None and base.draws is not None and pos.draws is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = (cell.draws - base.draws) / (pos.draws - base.draws)
            ratio = ratio[np.isfinite(ratio)]
            if ratio.size > 1:
                cell.headroom_ci = interval(cell.headroom, ratio, len(cell.units()), robust=True)


def design(summary: Summary) -> dict[str, int]:
    """The replication of a summary's cells: most replicates and seeds per replicate of a cell."""
    cells = [c for c in summary.values() if c.n]
    return {
        "replicates": max((c.n_replicates for c in cells), default=0),
        "seeds": max((c.n_seeds for c in cells), default=0),
        "clustered": int(
            any(
                rep.clusters is not None
                for c in cells
                for rep in c.replicates.values()
                if rep.values
            )
        ),
    }
