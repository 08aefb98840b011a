"""Two rows compared, paired within replicate: how a plugin author asks "is my method better than
CMVAE?" without writing statistics.

The rows come from one results store, or from two stores of the same protocol and replicate
design (the same worlds, or the same redraws of a dataset's split). In every column both rows
share, each metric's difference A − B is taken per replicate (the same worlds and test videos),
averaged over the replicate's seeds, and tested by the paired t-test over replicates of
:mod:`benchkit.experiments.stats` (over seeds with one replicate; no test with one run).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from benchkit.errors import ConfigError
from benchkit.experiments.stats import Cell, Replicate, paired_test
from benchkit.experiments.store import Store
from benchkit.metrics import metric_label


def _runs(store: Store, row: str, grid: str | None) -> pd.DataFrame:
    frame = store.frame(grid)
    if frame.empty or "row_label" not in frame:
        raise ConfigError(f"{store.folder}: no runs{f' of grid {grid}' if grid else ''}")
    mine = frame[frame["row_label"] == row]
    if mine.empty:
        labels = sorted(str(r) for r in frame["row_label"].dropna().unique())
        raise ConfigError(
            f"{store.folder}: no row {row!r}{f' in grid {grid}' if grid else ''}; rows: "
            f"{', '.join(labels[:12])}{' …' if len(labels) > 12 else ''}"
        )
    grids = sorted(mine["grid"].dropna().unique())
    if grid is None and len(grids) > 1:
        raise ConfigError(
            f"{store.folder}: row {row!r} is in several grids ({', '.join(grids)}); name one "
            f"with --grid"
        )
    return mine


def _cells(runs: pd.DataFrame, metrics: list[str]) -> dict[tuple[str, str], Cell]:
    """(column, metric) → a cell of replicates (by world seed) and seeds."""
    cells: dict[tuple[str, str], Cell] = {}
    for _, run in runs.iterrows():
        world = run.get("dataset.world_seed")
        key = run.get("dataset.eval_rows") or run.get("dataset_fingerprint")
        for metric in metrics:
            value = run.get(metric)
            if value is None or pd.isna(value):
                continue
            cell = cells.setdefault((run["column_key"], metric), Cell())
            replicate = int(world) if world is not None and not pd.isna(world) else 0
            rep = cell.replicates.setdefault(replicate, Replicate(str(key)))
            rep.values[int(run["seed"])] = float(value)
    return cells


def _design(runs: pd.DataFrame) -> tuple[str, tuple[Any, ...]]:
    kinds = runs.get("dataset.replication", pd.Series(dtype=object)).dropna().unique()
    worlds = runs.get("dataset.world_seed", pd.Series(dtype=object)).dropna().unique()
    return (str(kinds[0]) if len(kinds) else "world"), tuple(sorted(int(w) for w in worlds))


def compare(
    out: str,
    row_a: str,
    row_b: str,
    *,
    grid: str | None = None,
    out_b: str | None = None,
    grid_b: str | None = None,
    metrics: list[str] | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Per column and metric: A's and B's means, the paired difference A − B, its 95% interval,
    the p-value, how many units the test paired and which (``replicates`` or ``seeds``)."""
    store_a = Store(out, read_only=True)
    store_b = store_a if out_b is None else Store(out_b, read_only=True)
    a = _runs(store_a, row_a, grid)
    b = _runs(store_b, row_b, grid_b if grid_b is not None else (grid if out_b is None else None))
    hashes = set(a["protocol_hash"]) | set(b["protocol_hash"])
    if len(hashes) > 1:
        raise ConfigError(
            f"rows {row_a!r} and {row_b!r} were evaluated under different protocols "
            f"({', '.join(sorted(hashes))}); a comparison needs one"
        )
    design_a, design_b = _design(a), _design(b)
    if out_b is not None and design_a != design_b:
        raise ConfigError(
            f"the two stores hold different replicate designs ({design_a[0]} replicates "
            f"{list(design_a[1])} against {design_b[0]} {list(design_b[1])}); rows can "
            f"only be paired on the same worlds or splits"
        )
    known = {c for c in set(a.columns) & set(b.columns) if "@" in c}
    wanted = sorted(known) if metrics is None else metrics
    missing = [m for m in wanted if m not in known]
    if missing:
        raise ConfigError(
            f"metric(s) {', '.join(missing)} not in both rows; they share {', '.join(sorted(known))}"
        )
    cells_a, cells_b = _cells(a, wanted), _cells(b, wanted)
    shared = sorted(set(cells_a) & set(cells_b))
    if columns:
        shared = [k for k in shared if k[0] in columns]
    if not shared:
        raise ConfigError(
            f"rows {row_a!r} and {row_b!r} share no column"
            + (f" among {', '.join(columns)}" if columns else "")
        )
    lines = []
    for column, metric in shared:
        ca, cb = cells_a[(column, metric)], cells_b[(column, metric)]
        test = paired_test([(ca, 1.0), (cb, -1.0)])
        lines.append(
            {
                "column": column,
                "metric": metric,
                "a": ca.mean,
                "b": cb.mean,
                "difference": ca.mean - cb.mean if test is None else test.effect,
                "ci_low": None if test is None else test.ci[0],
                "ci_high": None if test is None else test.ci[1],
                "p": None if test is None else test.p,
                "units": 0 if test is None else test.units,
                "test": "none: one run per row (no training noise to test against)"
                if test is None
                else f"paired t-test over {test.units} {test.unit}",
            }
        )
    return pd.DataFrame(lines)


def render_comparison(frame: pd.DataFrame, row_a: str, row_b: str) -> str:
    from tabulate import tabulate

    rows = []
    for _, r in frame.iterrows():
        ci = (
            ""
            if r["ci_low"] is None or pd.isna(r["ci_low"])
            else (f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]")
        )
        p = "" if r["p"] is None or pd.isna(r["p"]) else f"{r['p']:.3g}"
        rows.append(
            [
                r["column"],
                metric_label(r["metric"]),
                f"{r['a']:.4f}",
                f"{r['b']:.4f}",
                f"{r['difference']:+.4f}",
                ci,
                p,
            ]
        )
    tests = sorted(set(frame["test"]))
    table = tabulate(
        rows,
        headers=["column", "metric", row_a, row_b, "A − B", "95% interval", "p"],
        tablefmt="github",
        disable_numparse=True,
    )
    return f"{table}\n\nA = {row_a}, B = {row_b}; test: {'; '.join(tests)}."
