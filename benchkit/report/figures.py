"""Line figures of a figure grid (Figs. 3 and 4, the bias figure): one panel per metric — and,
when the grid names its controls, one more for the headroom each series closes — one line per
series, each with its own marker and line style (overlapping series stay visible: they are also
offset a little along x), error bars for the standard deviation over seeds. Written as PNG and
PDF, sized for a paper column; the caption goes in the tables, not on the figure."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchkit.experiments.grid import Grid
from benchkit.experiments.stats import Summary
from benchkit.files import atomic_file, write_text
from benchkit.report.tables import footer, metric_label

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")
STYLES = ("-", "--", "-.", ":")


def mathtext(label: str) -> str:
    """Paper notation as mathtext: D_s → $D_s$, D_s ∪ D_t → $D_s \\cup D_t$."""
    return label.replace("D_s ∪ D_t", r"$D_s \cup D_t$").replace("(D_s)", r"($D_s$)")


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


def line_figure(grid: Grid, summary: Summary, out: Path | str) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    panels: list[tuple[str, bool]] = [(m, False) for m in grid.metrics]
    if grid.controls:
        panels.append((grid.metrics[0], True))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 2.8), squeeze=False)
    ordered = sorted(zip(grid.x_values, grid.columns, strict=True), key=lambda vc: vc[0])
    for ax, (metric, headroom) in zip(axes[0], panels, strict=True):
        styles = itertools.cycle(itertools.product(STYLES, MARKERS))
        series = [r for r in grid.rows if not (headroom and r in grid.controls.values())]
        for i, row in enumerate(series):
            style, marker = next(styles)
            xs, ys, es, n = [], [], [], 0
            for x, column in ordered:
                cell = summary.get((row, column, metric))
                if cell is None or cell.n == 0 or (headroom and cell.headroom is None):
                    continue
                xs.append(dodge(x, i, len(series), grid.x_values, grid.x_log))
                ys.append(cell.headroom if headroom else cell.mean)
                es.append(0.0 if headroom else cell.std)
                n = max(n, cell.n)
            if xs:
                ax.errorbar(
                    xs,
                    ys,
                    yerr=es if any(es) else None,
                    marker=marker,
                    linestyle=style,
                    markersize=4,
                    linewidth=1.2,
                    capsize=2,
                    label=mathtext(row),
                )
        if grid.x_log:
            ax.set_xscale("log")
        ax.set_xlabel(grid.x_label, fontsize=8)
        ylabel = metric_label(metric)
        ax.set_ylabel(f"headroom closed ({ylabel})" if headroom else ylabel, fontsize=8)
        if headroom:
            ax.axhline(0.0, color="0.5", linewidth=0.8)
            ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle=":")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    seeds = max((c.n for c in summary.values()), default=0)
    axes[0][0].legend(fontsize=6, title=f"n = {seeds} seed(s); bars: ± 1 std", title_fontsize=6)
    fig.tight_layout()
    paths = [out / f"{grid.name}.png", out / f"{grid.name}.pdf"]
    for p in paths:
        with atomic_file(p) as tmp:
            fig.savefig(tmp, dpi=200, format=p.suffix[1:])
    plt.close(fig)
    caption = out / f"{grid.name}.caption.txt"
    panels_text = ", ".join(
        ("headroom closed" if headroom else metric_label(m)) for m, headroom in panels
    )
    write_text(
        caption,
        f"{grid.title}. Panels: {panels_text}, against {grid.x_label}. {footer(grid, summary)}.\n",
    )
    return [*paths, caption]
