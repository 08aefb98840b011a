"""Tables of a grid's results.

A table grid renders one block per column (test set × data setting), a row per method and a
column per metric; a figure grid one block per metric, a row per series and a column per x value
(ascending, as the figure draws it). A cell reads ``mean [low, high]``, the 95% interval of
:mod:`benchkit.experiments.stats`; the best compared method of a column is bold and the methods
whose interval overlaps its are in italics (tied); controls and oracles are never ranked; ``*``
marks a difference from the row it is compared with that survives Holm's correction; ``†k``
counts failed runs; the paper's number follows in parentheses when asked for. Where the grid names
controls, a second block per column gives the headroom each method closes — only in cells where
the positive control beats the baseline significantly. Metrics the data cannot give (the truth,
on data from disk) are left out and the footer says so. The footer states the design (replicates,
seeds), the interval, the test and its unit.

LaTeX is booktabs with two header levels (setting over metric; test sets as blocks of rows);
CSV is one line per (row, column) with ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high`` and
the test and headroom columns of each metric.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import pandas as pd
from tabulate import tabulate

from benchkit.experiments.grid import REPORT_WORLD_SEED, Grid
from benchkit.experiments.stats import ALPHA, RESAMPLES, Cell, Summary, design
from benchkit.metrics import metric_label, needs_truth

FORMATS = ("md", "latex", "csv")
SETTING_NAMES = {"ugc": "D_s", "ugc+pgc": "D_s ∪ D_t", "auto": "auto"}
TEST_SET_NAMES = {
    "diverse": "T_diverse",
    "diverse:entropy": "T_diverse (entropy)",
    "matching": "T_matching",
    "given": "test",
    "random": "T_random",
    "resplit": "test (redrawn)",
}
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
PAPER_ORDER = ["recall@15", "ndcg@15", "recall@25", "ndcg@25"]


def test_set_name(test_set: str) -> str:
    if test_set.startswith("taste:"):
        return f"T_random, taste × {test_set.split(':', 1)[1]}"
    if test_set.startswith("ratio:"):
        return f"ratio {test_set.split(':', 1)[1]}"
    return TEST_SET_NAMES.get(test_set, test_set)


def column_name(grid: Grid, column: tuple[str, ...]) -> str:
    if grid.kind != "table":
        return f"{grid.x_short}={column[0]}" + (
            f" · {test_set_name(column[1])}" if len(column) > 1 else ""
        )
    test_set, setting = column
    if setting == "auto":  # each method's own setting: nothing a reader needs
        return test_set_name(test_set)
    return f"{test_set_name(test_set)} · {SETTING_NAMES.get(setting, setting)}"


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


def shown_metrics(grid: Grid, summary: Summary) -> tuple[list[str], list[str]]:
    """(metrics with values, metrics left out because no run could compute them)."""
    shown: list[str] = []
    missing: list[str] = []
    for metric in grid.metrics:
        has = any(c.n for (_, _, m), c in summary.items() if m == metric)
        (shown if has else missing).append(metric)
    return shown, missing


def _number(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "nan"


def cell_text(cell: Cell | None, fmt: str, paper: float | None = None) -> str:
    """``mean [low, high]`` with its marks (see the module docstring)."""
    latex = fmt == "latex"
    if cell is None or (cell.n == 0 and not cell.failed):
        return "--" if latex else "–"
    if cell.n == 0:
        return "failed"
    number = _number(cell.mean)
    if cell.best:
        number = rf"\textbf{{{number}}}" if latex else f"**{number}**"
    elif cell.tied:
        number = rf"\textit{{{number}}}" if latex else f"_{number}_"
    text = number
    if cell.ci is not None:
        low, high = (_number(v) for v in cell.ci)
        text += rf"\,{{\scriptsize[{low}, {high}]}}" if latex else f" [{low}, {high}]"
    if cell.p_value is not None and cell.p_value < ALPHA:
        text += "$^{*}$" if latex else "*"
    if cell.failed:
        text += rf"$^\dagger${cell.failed}" if latex else f" †{cell.failed}"
    if paper is not None:
        text += f" ({paper:.4f})"
    return text


def headroom_text(cell: Cell | None, fmt: str) -> str:
    dash = "--" if fmt == "latex" else "–"
    if cell is None or cell.headroom is None:
        return dash
    pct = r"\%" if fmt == "latex" else "%"
    text = f"{cell.headroom * 100:.0f}{pct}"
    if cell.headroom_ci is not None:
        low, high = (f"{v * 100:.0f}" for v in cell.headroom_ci)
        text += f" [{low}, {high}]"
    return text


def _paper_value(
    paper: dict[str, Any] | None, grid: Grid, row: str, column: tuple[str, ...], metric: str
) -> float | None:
    if paper is None or len(column) != 2 or metric not in PAPER_ORDER:
        return None
    values = paper.get(column[0], {}).get(column[1], {}).get(row)
    return None if values is None else float(values[PAPER_ORDER.index(metric)])


def _ordered_columns(grid: Grid) -> list[tuple[str, ...]]:
    if grid.kind == "table":
        return list(grid.columns)
    return [c for panel in grid.panels() for _, c in grid.points(panel)]


def blocks(
    grid: Grid, summary: Summary, fmt: str, paper: dict[str, Any] | None = None
) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of each block of the table (values, then headroom)."""
    metrics, _ = shown_metrics(grid, summary)
    out: list[tuple[str, list[str], list[list[str]]]] = []
    labels = [metric_label(m) for m in metrics]
    if grid.kind == "table":
        for column in grid.columns:
            title = column_name(grid, column)
            rows = [
                [
                    grid.groups.get(row, ""),
                    row,
                    *(
                        cell_text(
                            summary.get((row, column, m)),
                            fmt,
                            _paper_value(paper, grid, row, column, m),
                        )
                        for m in metrics
                    ),
                ]
                for row in grid.rows
                if any((row, column, m) in summary for m in metrics)
            ]
            out.append((title, ["", "", *labels], rows))
            if grid.controls:
                head = [
                    [
                        grid.groups.get(r, ""),
                        r,
                        *(headroom_text(summary.get((r, column, m)), fmt) for m in metrics),
                    ]
                    for r in grid.rows
                    if r not in grid.control_rows
                    and r != grid.controls["baseline"]
                    and any((r, column, m) in summary for m in metrics)
                ]
                if _any_headroom(head, 2):
                    out.append((f"headroom closed · {title}", ["", "", *labels], head))
        return out
    for panel in grid.panels():
        columns = [c for _, c in grid.points(panel)]
        where = f" · {test_set_name(panel[0])}" if panel else ""
        for metric, label in zip(metrics, labels, strict=True):
            heads = ["", *(f"{grid.x_short}={c[0]}" for c in columns)]
            rows = [
                [row, *(cell_text(summary.get((row, c, metric)), fmt) for c in columns)]
                for row in grid.rows
            ]
            out.append((label + where, heads, rows))
            if grid.controls:
                head = [
                    [r, *(headroom_text(summary.get((r, c, metric)), fmt) for c in columns)]
                    for r in grid.rows
                    if r not in grid.control_rows and r != grid.controls["baseline"]
                ]
                if _any_headroom(head, 1):
                    out.append((f"headroom closed · {label}{where}", heads, head))
    return out


def _any_headroom(rows: list[list[str]], labels: int) -> bool:
    """Whether a headroom block has a number to show (a block of dashes says nothing the footer
    does not)."""
    return any(text not in ("–", "--") for row in rows for text in row[labels:])


def describe_design(grid: Grid, summary: Summary) -> str:
    """The replication a table holds, in words."""
    d = design(summary)
    rep = grid.replication or {}
    r, s = d["replicates"], d["seeds"]
    seeds = f" × {s} training seeds" if s > 1 else ""
    if rep.get("kind") == "split":
        what = (
            f"{r} replicates: redraws of the data's validation/test partition (training videos "
            f"fixed), each with its own training seed{seeds}"
            if r > 1
            else f"one split of the data{seeds}"
        )
    else:
        first = rep.get("first_seed")
        if r > 1:
            where = "" if first is None else f" (world seeds {first}–{first + r - 1})"
            what = (
                f"{r} replicates: fresh worlds{where}, each with its own split, negatives, "
                f"truth, PGC teacher and training seed{seeds}"
            )
        else:
            what = "one world" + ("" if first is None else f" (world seed {first})") + seeds
    return what


def footer(grid: Grid, summary: Summary, paper: dict[str, Any] | None = None) -> str:
    """What the numbers and marks mean: the design, the interval, the test and its unit."""
    d = design(summary)
    r, s = d["replicates"], d["seeds"]
    levels = "uploaders, then videos" if d["clustered"] else "videos"
    if r > 1:
        unit, n_units = "replicates", r
    else:
        unit, n_units = "seeds", s
    parts = [f"n: {describe_design(grid, summary)}"]
    if n_units > 1:
        parts.append(
            f"[a, b]: 95% interval, mean ± t({n_units - 1}) × SE × √({n_units}/{n_units - 1}), "
            f"SE from a hierarchical bootstrap ({RESAMPLES:,} resamples of the {unit}, then of "
            f"the {levels} within each test set), within the metric's range"
        )
    else:
        parts.append(
            f"[a, b]: 95% interval over the test {levels} only ({RESAMPLES:,} bootstrap "
            f"resamples): one run per cell says nothing of the world's, the split's or the "
            f"training's noise (use --replicates)"
        )
    parts.append(
        "bold: the best method of its column; italics: tied with it (95% intervals overlap); "
        "controls and oracles are never ranked"
    )
    against = grid.controls.get("baseline") or "the best other method of its column"
    if n_units > 1:
        parts.append(
            f"*: differs from {against}: paired t-test over the {n_units} {unit} (the same "
            f"{'worlds' if unit == 'replicates' else 'world'} and test videos), Holm-corrected "
            f"across the methods of a column (the controls apart), p < {ALPHA}"
            + (
                f"; on {against}'s own row: {grid.controls['positive']} beats it (p < {ALPHA}), "
                f"i.e. there is headroom"
                if grid.controls.get("positive")
                else ""
            )
        )
    else:
        parts.append(
            "no significance marks: one run per cell cannot measure training noise, and a test "
            "over test videos that ignores it rejects far more often than 5% (use --replicates)"
        )
    if grid.controls:
        base, pos = grid.controls["baseline"], grid.controls["positive"]
        parts.append(
            f"headroom closed = (row − {base}) / ({pos} − {base}), with its 95% interval, only "
            f"where {pos} beats {base} significantly in that cell; –: it does not"
            + (" (no test with one run per cell)" if n_units < 2 else "")
        )
    _, missing = shown_metrics(grid, summary)
    truth = [metric_label(m) for m in missing if needs_truth(m)]
    if truth:
        parts.append(f"left out: {', '.join(truth)} (the data has no truth)")
    others = [metric_label(m) for m in missing if not needs_truth(m)]
    if others:
        parts.append(f"left out: {', '.join(others)} (no run could compute them)")
    rep = grid.replication or {}
    if rep.get("kind") == "world" and not rep.get("reporting", True):
        parts.append(
            f"caution: world seed {rep.get('first_seed')} is a tuning world (the defaults were "
            f"chosen on world seeds below {REPORT_WORLD_SEED})"
        )
    if grid.tune:
        parts.append(
            f"every row tuned on the validation split of a tuning world with the same budget: "
            f"{grid.tune['trials']} trials ({grid.tune.get('sampler', 'tpe')}, "
            f"{grid.tune.get('metric', 'recall@25')})"
        )
    if paper is not None:
        parts.append("in parentheses: the paper's number")
    if any(c.failed for c in summary.values()):
        parts.append("†k: k runs of the cell failed (benchkit results --failures lists them)")
    return "; ".join(parts)


def wide_frame(grid: Grid, summary: Summary, paper: dict[str, Any] | None = None) -> pd.DataFrame:
    """One line per (row, column): per metric its mean, 95% interval (``_ci_low``,
    ``_ci_high``), the test against ``_compared_with`` (``_p``, ``_p_holm``, ``_difference``),
    the headroom closed and its interval, and the paper's number when asked for."""
    metrics, _ = shown_metrics(grid, summary)
    d = design(summary)
    lines = []
    for row in grid.rows:
        for column in _ordered_columns(grid):
            cells = {m: summary.get((row, column, m)) for m in metrics}
            if not any(c is not None and (c.n or c.failed) for c in cells.values()):
                continue
            line: dict[str, Any] = {
                "grid": grid.name,
                "row": row,
                "group": grid.groups.get(row, ""),
                "control": row in grid.control_rows,
                "column": "/".join(column),
                "replicates": d["replicates"],
                "seeds": d["seeds"],
            }
            for m, cell in cells.items():
                c = cell or Cell()
                line[m] = c.mean if c.n else None
                line[f"{m}_ci_low"] = None if c.ci is None else c.ci[0]
                line[f"{m}_ci_high"] = None if c.ci is None else c.ci[1]
                line[f"{m}_runs"] = c.n
                line[f"{m}_failed"] = c.failed
                line[f"{m}_compared_with"] = c.compared_with
                line[f"{m}_difference"] = None if c.difference is None else c.difference.effect
                line[f"{m}_p"] = c.p_raw
                line[f"{m}_p_holm"] = c.p_value
                line[f"{m}_best"] = c.best
                line[f"{m}_tied"] = c.tied
                line[f"{m}_headroom"] = c.headroom
                line[f"{m}_headroom_ci_low"] = None if c.headroom_ci is None else c.headroom_ci[0]
                line[f"{m}_headroom_ci_high"] = None if c.headroom_ci is None else c.headroom_ci[1]
                if paper is not None:
                    line[f"{m}_paper"] = _paper_value(paper, grid, row, column, m)
            lines.append(line)
    return pd.DataFrame(lines)


def render(
    grid: Grid, summary: Summary, fmt: str = "md", paper: dict[str, Any] | None = None
) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    if fmt == "csv":
        buf = io.StringIO()
        wide_frame(grid, summary, paper).to_csv(buf, index=False)
        return buf.getvalue()
    note = footer(grid, summary, paper)
    if fmt == "md":
        parts = [f"**{grid.title}**"]
        for title, headers, rows in blocks(grid, summary, fmt, paper):
            table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
            parts.append(f"{title}\n\n{table}")
        return "\n\n".join(parts) + f"\n\n_{note}_\n"
    return _latex(grid, summary, paper, note)


def _latex(grid: Grid, summary: Summary, paper: dict[str, Any] | None, note: str) -> str:
    """booktabs: a table grid with two header levels (setting over metric) and a block of rows
    per test set; a figure grid with one block per metric; headroom in a tabular of its own."""
    metrics, _ = shown_metrics(grid, summary)
    out = [f"% {latex_text(grid.title)}", "% needs \\usepackage{booktabs}"]
    if grid.kind == "table":
        settings = list(dict.fromkeys(c[1] for c in grid.columns))
        test_sets = list(dict.fromkeys(c[0] for c in grid.columns))

        def body(text_of: Any, keep: Any) -> list[str]:
            lines: list[str] = []
            width = 2 + len(settings) * len(metrics)
            for t in test_sets:
                if lines:
                    lines.append(r"\midrule")
                lines.append(rf"\multicolumn{{{width}}}{{l}}{{{latex_text(test_set_name(t))}}} \\")
                for row in grid.rows:
                    if not keep(row) or not any(
                        (row, (t, s), m) in summary for s in settings for m in metrics
                    ):
                        continue
                    cells = [text_of(row, (t, s), m) for s in settings for m in metrics]
                    group = latex_text(grid.groups.get(row, ""))
                    lines.append(" & ".join([group, latex_text(row), *cells]) + r" \\")
            return lines

        head = _latex_head(settings, metrics)
        values = body(
            lambda r, c, m: cell_text(
                summary.get((r, c, m)), "latex", _paper_value(paper, grid, r, c, m)
            ),
            lambda r: True,
        )
        out += _tabular(2 + len(settings) * len(metrics), head, values)
        if grid.controls:
            base = grid.controls["baseline"]
            room = body(
                lambda r, c, m: headroom_text(summary.get((r, c, m)), "latex"),
                lambda r: r not in grid.control_rows and r != base,
            )
            out.append(
                f"% headroom closed = (row - {latex_text(base)}) / (positive control - baseline)"
            )
            out += _tabular(2 + len(settings) * len(metrics), head, room)
    else:
        for title, headers, rows in blocks(grid, summary, "latex", paper):
            head = [" & ".join(latex_text(h) for h in headers) + r" \\"]
            lines = [rf"\multicolumn{{{len(headers)}}}{{l}}{{{latex_text(title)}}} \\"]
            lines += [" & ".join([latex_text(r[0]), *r[1:]]) + r" \\" for r in rows]
            out += _tabular(len(headers), head, lines, labels=1)
    out.append(f"% {latex_text(note)}")
    return "\n".join(out) + "\n"


def _latex_head(settings: list[str], metrics: list[str]) -> list[str]:
    top = ["", ""] + [
        rf"\multicolumn{{{len(metrics)}}}{{c}}{{{latex_text(SETTING_NAMES.get(s, s))}}}"
        for s in settings
    ]
    rules = "".join(
        rf"\cmidrule(lr){{{3 + i * len(metrics)}-{2 + (i + 1) * len(metrics)}}}"
        for i in range(len(settings))
    )
    second = ["", ""] + [latex_text(metric_label(m)) for _ in settings for m in metrics]
    lines = [" & ".join(second) + r" \\"]
    if len(settings) > 1 or settings[0] != "auto":
        lines = [" & ".join(top) + r" \\", rules, *lines]
    return lines


def _tabular(width: int, head: list[str], body: list[str], labels: int = 2) -> list[str]:
    spec = "l" * labels + "r" * (width - labels)
    return [
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        *head,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]


def _run_flops(frame: pd.DataFrame) -> pd.Series:
    """Each run's counted FLOPs (``training.flops``; NaN for runs that predate the count)."""
    if "training.flops" not in frame:
        return pd.Series(float("nan"), index=frame.index)
    return frame["training.flops"].map(
        lambda text: json.loads(text)["total"] if isinstance(text, str) else float("nan")
    )


def training_time(frame: pd.DataFrame) -> pd.DataFrame:
    """Per grid row (and setting/test set): how many runs, the mean epoch of the best validation
    score against the mean epochs run (what early stopping spent after the best), seconds per
    epoch, the run time summed over the row's runs (training, validation and the final
    evaluation: each run's wall time), and the counted work: GFLOP per run and the GFLOP/s the
    row's runs reached. Where time goes, and how much patience costs."""
    frame = frame.assign(  # runs outside any grid: named by their method
        row_label=frame["row_label"].fillna(frame["backbone"] + "+" + frame["debias"]),
        column_key=frame["column_key"].fillna(""),
        flops=_run_flops(frame),
    )
    for column in ("best_epoch", "epochs_run", "seconds_per_epoch", "wall_seconds"):
        if f"training.{column}" not in frame:  # a store of runs that all predate the field
            frame[f"training.{column}"] = float("nan")
    grouped = frame.groupby(["row_label", "column_key"], sort=False)
    wall = grouped["training.wall_seconds"].sum()
    out = pd.DataFrame(
        {
            "runs": grouped.size(),
            "best epoch": grouped["training.best_epoch"].mean().round(1),
            "epochs run": grouped["training.epochs_run"].mean().round(1),
            "s/epoch": grouped["training.seconds_per_epoch"].mean().round(2),
            "wall min": (wall / 60).round(2),
            "GFLOP/run": (grouped["flops"].mean() / 1e9).round(1),
            "GFLOP/s": (grouped["flops"].sum(min_count=1) / wall / 1e9).round(2),
        }
    ).reset_index()
    return out.rename(columns={"row_label": "row", "column_key": "column"})


def utilisation(frame: pd.DataFrame, peak_of: Callable[[str], float]) -> list[str]:
    """Per grid, its counted work over its wall time (first run's start to last run's end) as a
    share of the machine's matmul peak in the precision its runs trained in (``peak_of``:
    precision → GFLOP/s), and how busy its workers were (run time over wall time)."""
    if "training.finished_at" not in frame:
        return []
    frame = frame.assign(
        flops=_run_flops(frame),
        end=frame["training.finished_at"],
        start=frame["training.finished_at"] - frame["training.wall_seconds"],
        precision=frame.get("training.precision", pd.Series("fp32", index=frame.index)),
    ).dropna(subset=["flops", "end"])
    lines = []
    for grid, runs in frame.groupby(frame["grid"].fillna("(no grid)"), sort=False):
        span = float(runs["end"].max() - runs["start"].min())
        if span <= 0:
            continue
        precision = str(runs["precision"].mode().iloc[0])
        flops, busy = float(runs["flops"].sum()), float(runs["training.wall_seconds"].sum())
        rate, peak = flops / span / 1e9, peak_of(precision)
        lines.append(
            f"{grid}: {flops / 1e12:,.2f} TFLOP counted in {len(runs)} runs over {span / 60:,.1f} "
            f"min of wall = {rate:,.2f} GFLOP/s, {100 * rate / peak:.1f}% of the machine's "
            f"{precision} matmul peak ({peak:,.1f} GFLOP/s, measured now); runs busy "
            f"{busy / span:.2f} workers on average"
        )
    return lines
