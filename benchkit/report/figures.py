"""Line figures of a figure grid (Figs. 3 and 4, the bias figure): one panel per metric — per
metric and test set when the grid crosses its x with test sets (Fig. 4: their levels differ) —
and, when the grid names its controls, one per test set for the headroom the series close. Each
series has its own marker and line style (overlapping series stay visible: they are offset a
little along x); bars are the 95% intervals of :mod:`benchkit.experiments.stats`.
A point at x = 0 on a log axis (Fig. 4's weight 0) is drawn one decade left of the smallest other
value, its tick labelled 0. Written as PNG and PDF, sized for a paper column, with a caption file
written for the figure."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchkit.experiments.grid import Grid
from benchkit.experiments.stats import Cell, Summary
from benchkit.files import atomic_file, write_text
from benchkit.metrics import better_sign, metric_label, needs_truth
from benchkit.report.tables import describe_design, shown_metrics, test_set_name

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")
STYLES = ("-", "--", "-.", ":")
MATH = (
    ("D_s ∪ D_t", r"$D_s \cup D_t$"),
    ("(D_s)", r"($D_s$)"),
    ("T_diverse", r"$\mathcal{T}_{\mathrm{diverse}}$"),
    ("T_matching", r"$\mathcal{T}_{\mathrm{matching}}$"),
    ("T_random", r"$\mathcal{T}_{\mathrm{random}}$"),
)


def mathtext(label: str) -> str:
    """Paper notation as mathtext: D_s → $D_s$, T_diverse → $\\mathcal{T}_{diverse}$."""
    for plain, tex in MATH:
        label = label.replace(plain, tex)
    return label


def curves_figure(runs: list[tuple[str, list[dict[str, float]]]], path: Path | str) -> Path:
    """Learning curves: the training loss and the validation score per epoch, one line per run
    (``runs``: a label and the run's history), written to ``path`` (.png or .pdf). The legend
    sits under the panels, in as many columns as its longest label allows, and the figure grows
    to hold it: it never covers a curve or runs off the page, however many runs."""
    target = Path(path)
    width, panel_height, row_height = 6.8, 2.6, 0.14  # inches; a legend row at fontsize 6
    labels = [mathtext(label) for label, _ in runs]
    longest = max((len(label) for label, _ in runs), default=1)
    ncol = max(1, min(4, int(width // (0.45 + 0.04 * longest))))
    legend_height = 0.2 + row_height * math.ceil(len(runs) / ncol)
    fig, axes = plt.subplots(1, 2, figsize=(width, panel_height + legend_height))
    styles = itertools.cycle(itertools.product(STYLES, MARKERS))
    for label, (_, history) in zip(labels, runs, strict=True):
        style, marker = next(styles)
        epochs = [h["epoch"] for h in history]
        for ax, key in zip(axes, ("loss", "val"), strict=True):
            ys = [h.get(key, float("nan")) for h in history]
            ax.plot(epochs, ys, linestyle=style, marker=marker, markersize=3, label=label)
    for ax, name in zip(axes, ("training loss", "validation score"), strict=True):
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, names = axes[1].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, legend_height / (panel_height + legend_height), 1, 1))
    with atomic_file(target) as tmp:
        fig.savefig(tmp, dpi=200, format=target.suffix[1:] or "png")
    plt.close(fig)
    return target


def dodge(x: float, i: int, n: int, values: list[float], log: bool) -> float:
    """Where series ``i`` of ``n`` draws its point at ``x``: moved by 0.8% of the axis's span so
    that overlapping series stay visible — in decades on a log axis (a shift in x's own units
    would throw the small values of a log sweep far off their place)."""
    low, high = min(values), max(values)
    span = (math.log10(high / low) if log else high - low) if high > low else 1.0
    shift = (i - (n - 1) / 2) * 0.008 * span
    return x * 10**shift if log else x + shift


def plotted_x(grid: Grid) -> dict[float, float]:
    """Where each x value is drawn: itself, except 0 on a log axis (a decade left of the rest)."""
    positive = [x for x in grid.x_values if x > 0]
    zero_at = min(positive) / 10 if positive else 1.0
    return {x: (zero_at if grid.x_log and x <= 0 else x) for x in grid.x_values}


def optimum(
    grid: Grid, summary: Summary, row: str, metric: str, panel: tuple[str, ...] = ()
) -> tuple[float, bool] | None:
    """(the x of a series' best mean for ``metric``, whether it is interior) or ``None``."""
    points = [
        (x, cell.mean)
        for x, column in grid.points(panel)
        if (cell := summary.get((row, column, metric))) is not None and cell.n
    ]
    if len(points) < 2:
        return None
    sign = better_sign(metric)
    best = max(points, key=lambda p: sign * p[1])[0]
    xs = sorted(x for x, _ in points)
    return best, xs[0] < best < xs[-1]


Panel = tuple[str, tuple[str, ...], bool]  # metric, test-set panel of the grid, headroom?


def _panels(grid: Grid, summary: Summary) -> list[Panel]:
    metrics, _ = shown_metrics(grid, summary)
    out: list[Panel] = [(m, p, False) for p in grid.panels() for m in metrics]
    if grid.controls and metrics:
        target = next((m for m in metrics if needs_truth(m)), metrics[0])
        for p in grid.panels():
            if any(
                c.headroom is not None
                for (_, column, m), c in summary.items()
                if m == target and column[1:] == p
            ):
                out.append((target, p, True))
    return out


def _errors(cell: Cell) -> tuple[float, float]:
    if cell.ci is None:
        return 0.0, 0.0
    return max(0.0, cell.mean - cell.ci[0]), max(0.0, cell.ci[1] - cell.mean)


def line_figure(grid: Grid, summary: Summary, out: Path | str) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    panels = _panels(grid, summary)
    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.5 * nrows + 0.7), squeeze=False)
    where = plotted_x(grid)
    positions = sorted(set(where.values()))
    style_of = dict(zip(grid.rows, itertools.cycle(itertools.product(STYLES, MARKERS))))
    baseline = grid.controls.get("baseline")
    handles: dict[str, Any] = {}
    for ax, (metric, panel, headroom) in zip(axes.flat, panels, strict=False):
        rows = [
            r for r in grid.rows if not headroom or (r not in grid.control_rows and r != baseline)
        ]
        for i, row in enumerate(rows):
            style, marker = style_of[row]
            xs, ys, lo, hi = [], [], [], []
            for x, column in grid.points(panel):
                cell = summary.get((row, column, metric))
                if cell is None or cell.n == 0:
                    continue
                if headroom:
                    if cell.headroom is None:
                        continue
                    y = cell.headroom
                    low, high = cell.headroom_ci or (y, y)
                    err = (max(0.0, y - low), max(0.0, high - y))
                else:
                    y, err = cell.mean, _errors(cell)
                xs.append(dodge(where[x], i, len(rows), positions, grid.x_log))
                ys.append(y)
                lo.append(err[0])
                hi.append(err[1])
            if xs:
                handles[row] = ax.errorbar(
                    xs,
                    ys,
                    yerr=[lo, hi] if any(lo) or any(hi) else None,
                    marker=marker,
                    linestyle=style,
                    markersize=4,
                    linewidth=1.2,
                    capsize=2,
                    label=mathtext(row),
                )
        if grid.x_log:
            ax.set_xscale("log")
            if any(x <= 0 for x in grid.x_values):
                ax.set_xticks(positions)
                zero = where[min(grid.x_values)]
                ax.set_xticklabels(["0" if t == zero else f"{t:g}" for t in positions], rotation=45)
                ax.minorticks_off()
        ax.set_xlabel(grid.x_label, fontsize=7)
        label = metric_label(metric)
        ax.set_ylabel(f"headroom closed ({label})" if headroom else label, fontsize=8)
        title = mathtext(test_set_name(panel[0])) if panel else ""
        if headroom:
            ax.axhline(0.0, color="0.5", linewidth=0.8)
            ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle=":")
            title = "headroom closed" + (f", {title}" if title else "")
        if title:
            ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.legend(
        list(handles.values()),
        [mathtext(r) for r in handles],
        loc="lower center",
        ncol=min(4, max(1, len(handles))),
        fontsize=6,
        frameon=False,
    )
    legend_rows = math.ceil(len(handles) / 4)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * legend_rows, 1, 1))
    paths = [out / f"{grid.name}.png", out / f"{grid.name}.pdf"]
    for p in paths:
        with atomic_file(p) as tmp:
            fig.savefig(tmp, dpi=200, format=p.suffix[1:])
    plt.close(fig)
    caption = out / f"{grid.name}.caption.txt"
    write_text(caption, figure_caption(grid, summary, panels) + "\n")
    return [*paths, caption]


def figure_caption(grid: Grid, summary: Summary, panels: list[Panel] | None = None) -> str:
    """A caption written for the figure: what each panel shows, what a point and a bar are, the
    controls, and where each series peaks, per metric (and test set)."""
    panels = panels if panels is not None else _panels(grid, summary)
    metrics = list(dict.fromkeys(m for m, _, h in panels if not h))
    sets = [test_set_name(p[0]) for p in grid.panels() if p]
    text = [
        f"{grid.title}.",
        f"Panels: {', '.join(metric_label(m) for m in metrics)} against {grid.x_label}"
        + (f", on {' and '.join(sets)}" if sets else "")
        + ".",
        f"Points: the mean over {describe_design(grid, summary)}; bars: 95% intervals.",
    ]
    controls = [r for r in grid.rows if r in grid.control_rows]
    if controls:
        text.append(f"Controls (not methods): {', '.join(controls)}.")
    if grid.controls:
        base, pos = grid.controls["baseline"], grid.controls["positive"]
        text.append(f"{pos} is {base} trained on the choices made without the uploaders' taste.")
    if any(h for _, _, h in panels):
        target = next(m for m, _, h in panels if h)
        base, pos = grid.controls["baseline"], grid.controls["positive"]
        text.append(
            f"Headroom closed ({metric_label(target)}) = (series − {base}) / ({pos} − {base}), "
            f"drawn where {pos} beats {base} significantly."
        )
    if grid.x_log and any(x <= 0 for x in grid.x_values):
        text.append("The leftmost point is x = 0.")
    peaks = []
    for row in grid.rows:
        if row in grid.control_rows or row == grid.controls.get("baseline"):
            continue
        for panel in grid.panels():
            found = [
                (m, best)
                for m in metrics
                if (best := optimum(grid, summary, row, m, panel)) is not None
            ]
            if found:
                where = f" on {test_set_name(panel[0])}" if panel else ""
                parts = ", ".join(
                    f"{metric_label(m)} at {x:g}{' (interior)' if interior else ' (an end)'}"
                    for m, (x, interior) in found
                )
                peaks.append(f"{row}{where}: {parts}")
    if peaks:
        text.append("Best x per series and metric — " + "; ".join(peaks) + ".")
    return " ".join(text)
