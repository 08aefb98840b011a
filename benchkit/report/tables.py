"""Tables of a grid's results, laid out like the paper's.

A table grid renders as one block of rows per test set, with a column per (setting, metric); a
figure grid renders its values as a table too (a row per series, a column per (x, metric)). Cells
read ``mean ± std`` over seeds; the best row of each column is bold; ``*`` marks a row whose
difference from the best other row of its column is significant (paired sign-flip test over seeds
and test videos, p < 0.05; see :mod:`benchkit.experiments.stats`). With the paper's numbers, each
cell adds them in parentheses.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from tabulate import tabulate

from benchkit.experiments.grid import Grid
from benchkit.experiments.stats import Cell, Summary

FORMATS = ("md", "latex", "csv")
SETTING_NAMES = {"ugc": "D_s", "ugc+pgc": "D_s ∪ D_t", "auto": "auto"}
TEST_SET_NAMES = {
    "diverse": "T_diverse",
    "matching": "T_matching",
    "given": "test",
    "random": "T_random",
}
SHORT = {"recall": "Recall", "ndcg": "NDCG"}
ALPHA = 0.05


def metric_label(metric: str) -> str:
    name, _, k = metric.partition("@")
    return f"{SHORT.get(name, name)}@{k}" if k else SHORT.get(name, name)


def _cell_text(cell: Cell | None, fmt: str, paper: float | None) -> str:
    if cell is None or (cell.n == 0 and not cell.failed):
        return "–"
    if cell.n == 0:
        return "failed"
    text = f"{cell.mean:.4f}" + (f" ± {cell.std:.4f}" if cell.n > 1 else "")
    if cell.failed:
        text += f" †{cell.failed}"
    if cell.p_value is not None and cell.p_value < ALPHA:
        text += "*"
    if cell.best:
        text = f"**{text}**" if fmt == "md" else f"\\textbf{{{text}}}"
    if cell.headroom is not None:
        text += f" [{cell.headroom:.0%}]"
    if paper is not None:
        text += f" ({paper:.4f})"
    return text


def long_frame(grid: Grid, summary: Summary, paper: dict[str, Any] | None = None) -> pd.DataFrame:
    """One line per (row, column, metric): mean, std, seeds, p-value, best, the paper's number."""
    lines = []
    for (row, column, metric), cell in summary.items():
        line = {
            "grid": grid.name,
            "row": row,
            "column": "/".join(column),
            "metric": metric,
            "mean": cell.mean,
            "std": cell.std,
            "seeds": cell.n,
            "p_value": cell.p_value,
            "compared_with": cell.compared_with,
            "best": cell.best,
            "headroom_closed": cell.headroom,
            "failed_seeds": cell.failed,
        }
        if paper is not None:
            line["paper"] = _paper_value(paper, grid, row, column, metric)
        lines.append(line)
    return pd.DataFrame(lines)


def _paper_value(
    paper: dict[str, Any] | None, grid: Grid, row: str, column: tuple[str, ...], metric: str
) -> float | None:
    if paper is None or len(column) != 2 or metric not in grid.metrics:
        return None
    values = paper.get(column[0], {}).get(column[1], {}).get(row)
    order = ["recall@15", "ndcg@15", "recall@25", "ndcg@25"]
    return None if values is None or metric not in order else float(values[order.index(metric)])


def render(
    grid: Grid, summary: Summary, fmt: str = "md", paper: dict[str, Any] | None = None
) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    if fmt == "csv":
        buf = io.StringIO()
        long_frame(grid, summary, paper).to_csv(buf, index=False)
        return buf.getvalue()
    tablefmt = "github" if fmt == "md" else "latex_raw"
    if grid.kind == "table":
        settings = list(dict.fromkeys(c[1] for c in grid.columns))
        test_sets = list(dict.fromkeys(c[0] for c in grid.columns))
        headers = [
            "",
            "",
            *(
                f"{SETTING_NAMES.get(s, s)} {metric_label(m)}"
                for s in settings
                for m in grid.metrics
            ),
        ]
        rows: list[list[str]] = []
        for t in test_sets:
            rows.append([TEST_SET_NAMES.get(t, t), "", *([""] * (len(headers) - 2))])
            for row in grid.rows:
                cells = [
                    _cell_text(
                        summary.get((row, (t, s), m)),
                        fmt,
                        _paper_value(paper, grid, row, (t, s), m),
                    )
                    for s in settings
                    for m in grid.metrics
                ]
                rows.append([grid.groups.get(row, ""), row, *cells])
    else:
        headers = [
            "",
            *(
                f"{grid.x_short}={c[0]} {metric_label(m)}"
                for m in grid.metrics
                for c in grid.columns
            ),
        ]
        rows = [
            [
                row,
                *(
                    _cell_text(summary.get((row, c, m)), fmt, None)
                    for m in grid.metrics
                    for c in grid.columns
                ),
            ]
            for row in grid.rows
        ]
    table = tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)
    against = (
        f"differs from {grid.controls['baseline']}"
        if grid.controls
        else "differs from the best other row"
    )
    note = (
        f"mean ± std over seeds; bold: best of its column; *: {against} "
        f"(paired sign-flip test over seeds and test videos, p < {ALPHA})"
    )
    if paper is not None:
        note += "; in parentheses: the paper's number"
    if any(c.failed for c in summary.values()):
        note += "; †k: k seed(s) of the cell failed (their errors: benchkit results --failures)"
    if grid.controls:
        note += (
            f"; in brackets: headroom closed = (row − {grid.controls['baseline']}) / "
            f"({grid.controls['positive']} − {grid.controls['baseline']})"
        )
    if fmt == "md":
        return f"**{grid.title}**\n\n{table}\n\n_{note}_\n"
    return f"% {grid.title}\n% {note}\n{table}\n"
