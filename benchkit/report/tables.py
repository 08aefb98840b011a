"""Tables of a grid's results, laid out like the paper's.

A table grid renders as one block of rows per test set, with a column per (setting, metric); a
figure grid renders its values as a table too (a row per series, a column per (x, metric), x in
ascending order, as the figure draws it). A cell reads the mean over seeds (± the standard deviation
when there are several); the best row of each column is bold; ``*`` marks a row whose difference
from the row it is compared with is significant after Holm's correction (:mod:`benchkit.experiments
.stats`); ``[42%]`` is the headroom it closes, when the grid names controls; ``†k`` counts failed
seeds; the paper's number follows in parentheses when asked for. The footer states n, the test, the
correction and where the confidence intervals are (the CSV). LaTeX is booktabs, escaped, numbers
right-aligned, paper notation in math mode.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from tabulate import tabulate

from benchkit.experiments.grid import Grid
from benchkit.experiments.stats import EXACT_UP_TO, RESAMPLES, Cell, Summary

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
LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
# Paper notation, as math in LaTeX (longest first).
LATEX_NOTATION = (
    ("D_s ∪ D_t", r"$D_s \cup D_t$"),
    ("T_diverse", r"$\mathcal{T}_{\mathrm{diverse}}$"),
    ("T_matching", r"$\mathcal{T}_{\mathrm{matching}}$"),
    ("T_random", r"$\mathcal{T}_{\mathrm{random}}$"),
    ("D_s", r"$D_s$"),
    ("±", r"$\pm$"),
    ("−", "-"),
    ("–", "--"),
    ("†", r"$^\dagger$"),
)


def metric_label(metric: str) -> str:
    name, _, k = metric.partition("@")
    return f"{SHORT.get(name, name)}@{k}" if k else SHORT.get(name, name)


def latex_text(text: str) -> str:
    """Escape LaTeX's specials, then write the paper's notation as math."""
    placeholders = {}
    for i, (plain, tex) in enumerate(LATEX_NOTATION):
        token = f"\x00{i}\x00"
        text = text.replace(plain, token)
        placeholders[token] = tex
    text = "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)
    for token, tex in placeholders.items():
        text = text.replace(token, tex)
    return text


def _cell_text(cell: Cell | None, fmt: str, paper: float | None) -> str:
    if cell is None or (cell.n == 0 and not cell.failed):
        return "–" if fmt != "latex" else "--"
    if cell.n == 0:
        return "failed"
    latex = fmt == "latex"
    pm = r" $\pm$ " if latex else " ± "
    number = f"{cell.mean:.4f}" + (f"{pm}{cell.std:.4f}" if cell.n > 1 else "")
    if cell.best:
        number = rf"\textbf{{{number}}}" if latex else f"**{number}**"
    text = number
    if cell.p_value is not None and cell.p_value < ALPHA:
        text += "$^{*}$" if latex else "*"
    if cell.failed:
        text += rf"$^\dagger${cell.failed}" if latex else f" †{cell.failed}"
    if cell.headroom is not None:
        text += (
            rf" [{cell.headroom:.0%}]".replace("%", r"\%") if latex else f" [{cell.headroom:.0%}]"
        )
    if paper is not None:
        text += f" ({paper:.4f})"
    return text


def long_frame(grid: Grid, summary: Summary, paper: dict[str, Any] | None = None) -> pd.DataFrame:
    """One line per (row, column, metric): mean, std, seeds, 95% CI, p-values (raw and Holm), the
    (seed, video) pairs tested, best, headroom closed, failures, the paper's number."""
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
            "ci95_low": None if cell.ci is None else cell.ci[0],
            "ci95_high": None if cell.ci is None else cell.ci[1],
            "p_value": cell.p_raw,
            "p_holm": cell.p_value,
            "pairs": cell.pairs,
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


def _layout(
    grid: Grid, summary: Summary, fmt: str, paper: dict[str, Any] | None
) -> tuple[list[str], list[list[str]], int]:
    """(headers, rows, number of label columns) of a grid's table."""
    if grid.kind == "table":
        settings = list(dict.fromkeys(c[1] for c in grid.columns))
        test_sets = list(dict.fromkeys(c[0] for c in grid.columns))
        headers = [
            "",
            "",
            *(
                # "auto" (each method's own setting) names nothing a reader needs
                metric_label(m) if s == "auto" else f"{SETTING_NAMES.get(s, s)} {metric_label(m)}"
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
        return headers, rows, 2
    ordered = [c for _, c in sorted(zip(grid.x_values, grid.columns, strict=True))]
    headers = [
        "",
        *(f"{grid.x_short}={c[0]} {metric_label(m)}" for m in grid.metrics for c in ordered),
    ]
    rows = [
        [
            row,
            *(
                _cell_text(summary.get((row, c, m)), fmt, None)
                for m in grid.metrics
                for c in ordered
            ),
        ]
        for row in grid.rows
    ]
    return headers, rows, 1


def footer(grid: Grid, summary: Summary, paper: dict[str, Any] | None = None) -> str:
    """What the table's marks mean, with n and the statistical method."""
    seeds = sorted({c.n for c in summary.values() if c.n})
    n_text = "/".join(map(str, seeds)) or "0"
    pairs = sorted({c.pairs for c in summary.values() if c.pairs})
    against = (
        f"the row differs from {grid.controls['baseline']}"
        if grid.controls
        else "the row differs from the best other row of its column"
    )
    parts = [
        f"n = {n_text} seed(s) per cell"
        + ("; mean ± std over seeds" if any(s > 1 for s in seeds) else ""),
        "bold: best of its column",
        f"*: {against}, paired sign-flip permutation test over (seed, test video) pairs "
        f"({', '.join(f'{p:,}' for p in pairs[:3]) or 'no'} pairs; exact up to "
        f"{EXACT_UP_TO}, else {RESAMPLES:,} random sign patterns), Holm-corrected across the rows "
        f"compared in a column, p < {ALPHA}",
        f"95% bootstrap intervals over (seed, video) pairs ({RESAMPLES:,} resamples) are in the "
        f"CSV",
    ]
    if grid.tune:
        parts.append(
            f"every row tuned on its validation split with the same budget: "
            f"{grid.tune['trials']} trials ({grid.tune.get('sampler', 'tpe')}, "
            f"{grid.tune.get('metric', 'recall@25')})"
        )
    if paper is not None:
        parts.append("in parentheses: the paper's number")
    if any(c.failed for c in summary.values()):
        parts.append("†k: k seed(s) of the cell failed (benchkit results --failures lists them)")
    if grid.controls:
        parts.append(
            f"in brackets: headroom closed = (row − {grid.controls['baseline']}) / "
            f"({grid.controls['positive']} − {grid.controls['baseline']})"
        )
    return "; ".join(parts)


def render(
    grid: Grid, summary: Summary, fmt: str = "md", paper: dict[str, Any] | None = None
) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    if fmt == "csv":
        buf = io.StringIO()
        long_frame(grid, summary, paper).to_csv(buf, index=False)
        return buf.getvalue()
    headers, rows, labels = _layout(grid, summary, fmt, paper)
    note = footer(grid, summary, paper)
    if fmt == "md":
        table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
        return f"**{grid.title}**\n\n{table}\n\n_{note}_\n"
    return _latex(grid.title, headers, rows, labels, note)


def _latex(title: str, headers: list[str], rows: list[list[str]], labels: int, note: str) -> str:
    """A booktabs table: label columns left, numbers right; a midrule before each block."""
    spec = "l" * labels + "r" * (len(headers) - labels)
    head = " & ".join(latex_text(h) for h in headers)
    body: list[str] = []
    for row in rows:
        is_block = labels == 2 and row[0] and not any(row[2:]) and not row[1]
        cells = [latex_text(c) for c in row[:labels]] + row[labels:]
        if is_block:
            if body:
                body.append(r"\midrule")
            body.append(rf"\multicolumn{{{len(headers)}}}{{l}}{{{latex_text(row[0])}}} \\")
        else:
            body.append(" & ".join(cells) + r" \\")
    return (
        f"% {latex_text(title)}\n"
        f"% needs \\usepackage{{booktabs}}\n"
        f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{head} \\\\\n\\midrule\n"
        + "\n".join(body)
        + f"\n\\bottomrule\n\\end{{tabular}}\n% {latex_text(note)}\n"
    )


def training_time(frame: pd.DataFrame) -> pd.DataFrame:
    """Per grid row (and setting/test set): how many runs, the mean epoch of the best validation
    score against the mean epochs run (what early stopping spent after the best), seconds per
    epoch, and the run time summed over the row's runs (training, validation and the final
    evaluation: each run's wall time). Where time goes, and how much patience costs."""
    frame = frame.assign(  # runs outside any grid: named by their method
        row_label=frame["row_label"].fillna(frame["backbone"] + "+" + frame["debias"]),
        column_key=frame["column_key"].fillna(""),
    )
    for column in ("best_epoch", "epochs_run", "seconds_per_epoch", "wall_seconds"):
        if f"training.{column}" not in frame:  # a store of runs that all predate the field
            frame[f"training.{column}"] = float("nan")
    grouped = frame.groupby(["row_label", "column_key"], sort=False)
    out = pd.DataFrame(
        {
            "runs": grouped.size(),
            "best epoch": grouped["training.best_epoch"].mean().round(1),
            "epochs run": grouped["training.epochs_run"].mean().round(1),
            "s/epoch": grouped["training.seconds_per_epoch"].mean().round(2),
            "wall min": (grouped["training.wall_seconds"].sum() / 60).round(2),
        }
    ).reset_index()
    return out.rename(columns={"row_label": "row", "column_key": "column"})
