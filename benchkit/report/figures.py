"""Line figures of a figure grid (Figs. 3 and 4): one panel per metric, one line per series,
error bars for the standard deviation over seeds. Written as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchkit.experiments.grid import Grid
from benchkit.experiments.stats import Summary
from benchkit.report.tables import metric_label


def line_figure(grid: Grid, summary: Summary, out: Path | str) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    panels = len(grid.metrics)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.8), squeeze=False)
    for ax, metric in zip(axes[0], grid.metrics, strict=True):
        for series in grid.rows:
            xs, ys, es = [], [], []
            for x, column in zip(grid.x_values, grid.columns, strict=True):
                cell = summary.get((series, column, metric))
                if cell is None or cell.n == 0:
                    continue
                xs.append(x)
                ys.append(cell.mean)
                es.append(cell.std)
            if xs:
                ax.errorbar(
                    xs, ys, yerr=es if any(es) else None, marker="o", capsize=3, label=series
                )
        if grid.x_log:
            ax.set_xscale("log")
        ax.set_xlabel(grid.x_label)
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(grid.title, fontsize=10)
    fig.tight_layout()
    paths = [out / f"{grid.name}.png", out / f"{grid.name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths
