"""The statistics of a replicated grid: the hierarchical bootstrap, the paired test over
replicates, best and tied methods, headroom only where there is headroom."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from benchkit.experiments.grid import Grid, make_job
from benchkit.experiments.stats import (
    Cell,
    Replicate,
    bootstrap,
    holm,
    multiplicities,
    paired_test,
    summarise,
)
from benchkit.interfaces import RankInfo


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=12),
    seed=st.integers(0, 2**31),
)
def test_resampled_clusters_keep_their_rows_together(sizes, seed):
    """A resample draws clusters with replacement, then m·k rows within a cluster drawn m times:
    each cluster's rows hold a multiple of its size; unclustered rows always sum to n."""
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(seed)
    k = multiplicities(rng, clusters, clusters.size, 50)
    for c, size in enumerate(sizes):
        totals = k[:, clusters == c].sum(axis=1)
        assert np.all(totals % size == 0)
    assert np.allclose(k.sum(axis=1).mean(), clusters.size, rtol=0.5)
    flat = multiplicities(rng, None, clusters.size, 50)
    assert np.all(flat.sum(axis=1) == clusters.size)


def _cell(values: dict[int, np.ndarray], keys: dict[int, str] | None = None, clusters=None) -> Cell:
    """A cell whose replicate r has one run with per-row values ``values[r]`` (row-averaged)."""
    cell = Cell()
    for r, v in values.items():
        rep = Replicate((keys or {}).get(r, f"world{r}"))
        rep.values[0] = float(v.mean())
        rep.contrib[0] = v / v.size
        rep.weights = np.full(v.size, 1.0 / v.size)
        rep.clusters = clusters
        cell.replicates[r] = rep
    return cell


def test_the_interval_is_the_t_interval_over_replicates_when_replicates_hold_all_the_noise():
    """Rows of a replicate that are all alike leave the bootstrap only the replicates to resample:
    the interval is then the classical one, mean ± t(R − 1) · s / √R."""
    rng = np.random.default_rng(0)
    means = rng.normal(0.3, 0.02, 6)
    cell = _cell({r: np.full(40, m) for r, m in enumerate(means)})
    bootstrap({"a": cell}, "m")
    assert cell.ci is not None
    ref = sps.ttest_1samp(means, 0.0).confidence_interval(0.95)
    width = ref.high - ref.low
    assert cell.ci[0] == pytest.approx(ref.low, abs=0.1 * width)
    assert cell.ci[1] == pytest.approx(ref.high, abs=0.1 * width)


def test_an_interval_stays_within_the_values_its_metric_can_take():
    """Recall near 1 over few, scattered worlds: the t-interval reaches past 1 unless clipped; a
    metric without bounds (BiasAmp, a plugin's) keeps its symmetric interval."""
    means = [0.99, 0.80, 0.97, 0.70, 0.95]
    for metric, bounded in (("recall@25", True), ("bias_amp@25", False), ("mine@25", False)):
        cell = _cell({r: np.full(20, m) for r, m in enumerate(means)})
        bootstrap({"a": cell}, metric)
        assert cell.ci is not None
        assert (cell.ci[1] == 1.0) if bounded else (cell.ci[1] > 1.0)
        assert cell.ci[0] < cell.mean < cell.ci[1]


def test_one_world_with_clustered_videos_gets_an_interval_as_wide_as_its_clusters():
    """Videos of one uploader that all hit or all miss are one piece of evidence, not nine: the
    clustered interval is about √9 = 3 times the one that treats the videos as independent."""
    rng = np.random.default_rng(1)
    per_uploader = rng.random(60) < 0.4
    values = np.repeat(per_uploader, 9).astype(float)
    clusters = np.repeat(np.arange(60), 9)
    clustered, flat = _cell({0: values}, clusters=clusters), _cell({0: values})
    bootstrap({"a": clustered}, "m")
    bootstrap({"a": flat}, "m")
    assert clustered.ci is not None and flat.ci is not None
    ratio = (clustered.ci[1] - clustered.ci[0]) / (flat.ci[1] - flat.ci[0])
    assert 2.4 < ratio < 3.6


def test_the_paired_test_is_a_t_test_over_the_replicates_both_rows_share():
    rng = np.random.default_rng(2)
    a_means, b_means = rng.normal(0.3, 0.02, 5), rng.normal(0.29, 0.02, 5)
    a = _cell({r: np.full(10, m) for r, m in enumerate(a_means)})
    b = _cell({r: np.full(10, m) for r, m in enumerate(b_means)})
    test = paired_test([(a, 1.0), (b, -1.0)])
    ref = sps.ttest_1samp(a_means - b_means, 0.0)
    assert test is not None and test.units == 5 and test.unit == "replicates"
    assert test.p == pytest.approx(ref.pvalue)
    assert test.ci == pytest.approx(tuple(ref.confidence_interval(0.95)))
    # Another world in one replicate of b: that replicate is not paired.
    b_other = _cell({r: np.full(10, m) for r, m in enumerate(b_means)}, keys={4: "another world"})
    assert paired_test([(a, 1.0), (b_other, -1.0)]).units == 4  # type: ignore[union-attr]
    # One unit: no test. Differences that never vary (nothing random to test against): none.
    one = _cell({0: np.full(10, 0.3)})
    assert paired_test([(one, 1.0), (_cell({0: np.full(10, 0.2)}), -1.0)]) is None
    shifted = _cell({r: np.full(10, m + 0.01) for r, m in enumerate(a_means)})
    assert paired_test([(shifted, 1.0), (a, -1.0)]) is None
    same = paired_test([(a, 1.0), (a, -1.0)])
    assert same is not None and same.p == 1.0 and same.ci == (0.0, 0.0)


def test_with_one_replicate_the_seeds_are_the_units():
    cell_a, cell_b = Cell(), Cell()
    rng = np.random.default_rng(3)
    for cell, shift in ((cell_a, 0.01), (cell_b, 0.0)):
        rep = Replicate("world0")
        for s in range(4):
            v = np.full(20, 0.3 + shift + rng.normal(0, 0.005))
            rep.values[s], rep.contrib[s] = float(v.mean()), v / v.size
        rep.weights = np.full(20, 1 / 20)
        cell.replicates[0] = rep
    test = paired_test([(cell_a, 1.0), (cell_b, -1.0)])
    assert test is not None and test.unit == "seeds" and test.units == 4


def _grid_results(spec: dict[str, list[float]], n_rows: int = 30, noise: float = 0.01):
    """A one-column grid whose row r has, in replicate i, per-row values around spec[r][i]."""
    rng = np.random.default_rng(4)
    rows = list(spec)
    jobs, keys, results = [], [], {}
    for row in rows:
        for i, mean in enumerate(spec[row]):
            job = make_job(row, ("c",), replicate=i, seed=1234 + 1000 * i)
            key = f"{row}-{i}"
            values = np.clip(mean + rng.normal(0, noise, n_rows), 0, 1)
            ranks = RankInfo(
                n_greater=np.zeros(n_rows, dtype=np.int64),
                n_equal=np.zeros(n_rows, dtype=np.int64),
                weights=np.full(n_rows, 1 / n_rows),
                n_candidates=100,
                per_row={"cf_recall@25": values},
                clusters=np.arange(n_rows) // 3,
            )
            results[key] = {
                "metrics": {"cf_recall@25": float(values.mean())},
                "ranks": ranks,
                "record": {"dataset": {"eval_rows": f"world{i}"}},
            }
            jobs.append(job)
            keys.append(key)
    grid = Grid("g", "", "table", "paper", ["cf_recall@25"], jobs, rows, columns=[("c",)])
    grid.controls = {"baseline": "base", "positive": "pos"}
    grid.control_rows = {"pos", "oracle"}
    return grid, keys, results


def _summarised(spec: dict[str, list[float]]) -> dict[str, Cell]:
    """The cells of :func:`_grid_results`'s column, summarised, by row."""
    grid, keys, results = _grid_results(spec)
    summary = summarise(grid, keys, results)
    return {r: summary[(r, ("c",), "cf_recall@25")] for r in spec}


def test_controls_are_never_ranked_and_headroom_is_printed_only_where_there_is_headroom():
    spec = {
        "oracle": [0.9, 0.91, 0.92, 0.9, 0.91],
        "pos": [0.40, 0.41, 0.42, 0.40, 0.41],
        "base": [0.30, 0.31, 0.30, 0.29, 0.31],
        "half": [0.35, 0.36, 0.36, 0.34, 0.36],
        "also": [0.349, 0.361, 0.359, 0.341, 0.361],
    }
    cells = _summarised(spec)
    assert not cells["oracle"].best and not cells["pos"].best  # the highest, but controls
    assert cells["half"].best and cells["also"].tied and not cells["base"].tied
    assert cells["half"].headroom == pytest.approx(0.5, abs=0.06)
    assert cells["half"].headroom_ci is not None
    assert cells["half"].headroom_ci[0] < 0.5 < cells["half"].headroom_ci[1]
    assert cells["pos"].headroom is None and cells["base"].headroom is None
    # A positive control no better than the baseline: no headroom anywhere, whatever the ratio.
    spec["pos"] = [0.301, 0.309, 0.301, 0.292, 0.309]
    assert all(cell.headroom is None for cell in _summarised(spec).values())


def test_holm_counts_the_methods_only_and_the_baseline_is_marked_by_its_headroom():
    """The Holm family of a column is its compared methods against the baseline: the controls'
    tests (a far-off oracle, the positive control) do not widen it, and no test is counted twice.
    The baseline's own mark says whether the positive control beats it."""
    spec = {
        "oracle": [0.9, 0.91, 0.92, 0.9, 0.91],
        "pos": [0.40, 0.41, 0.42, 0.40, 0.41],
        "base": [0.30, 0.31, 0.30, 0.29, 0.31],
        "half": [0.35, 0.36, 0.36, 0.34, 0.36],
        "same": [0.30, 0.31, 0.30, 0.29, 0.31],
    }
    cells = _summarised(spec)
    methods = [cells["half"], cells["same"]]
    assert [c.p_value for c in methods] == pytest.approx(holm([c.p_raw for c in methods]))
    controls = [cells["oracle"], cells["pos"]]
    assert [c.p_value for c in controls] == pytest.approx(holm([c.p_raw for c in controls]))
    assert cells["base"].compared_with == "pos" and cells["base"].p_value is not None
    assert cells["base"].p_value < 0.05  # there is headroom: the baseline's row is starred
    spec["pos"] = [0.28, 0.29, 0.28, 0.27, 0.29]  # a control worse than the baseline
    base = _summarised(spec)["base"]
    assert base.p_raw is not None and base.p_raw < 0.05 and base.p_value is None  # no star
