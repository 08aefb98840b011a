"""Run a grid and write what it makes: the table in Markdown, LaTeX and CSV, and a figure grid's
PNG, PDF and caption, all under ``out`` beside the results store (what ``benchkit table3``,
``fig3``, ``fig4``, ``experiment`` and ``claims`` do, callable from Python)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchkit.experiments.driver import GridRun, run_grid
from benchkit.experiments.grid import Grid, load_grid, paper_table3
from benchkit.files import write_text
from benchkit.spec import RunSpec


def write_outputs(grid: Grid, run: GridRun, out: str | Path, paper: bool = False) -> list[Path]:
    """The table in every format (and the figure of a figure grid), under ``out``."""
    from benchkit.report.tables import render

    numbers = paper_table3() if paper else None
    folder = Path(out)
    written = []
    for fmt, ext in (("md", "md"), ("latex", "tex"), ("csv", "csv")):
        path = folder / f"{grid.name}.{ext}"
        write_text(path, render(grid, run.summary, fmt, numbers))
        written.append(path)
    if grid.kind == "figure":
        from benchkit.report.figures import line_figure

        written += line_figure(grid, run.summary, folder)
    return written


def run_and_write(
    source: str | Path,
    base: RunSpec,
    out: str,
    *,
    replicates: int | None = None,
    seeds: int | None = None,
    tune_trials: int | None = None,
    paper: bool = False,
    executor: str = "auto",
    jobs: int | None = None,
    address: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] | None = None,
    fmt: str = "md",
    only_stored: bool = False,
) -> tuple[GridRun, dict[str, Any]]:
    """Load the grid ``source`` (a built-in name or a TOML file), run what the store at ``out``
    lacks, write its outputs; returns the run and ``{"files": [...], "printed": table}``.
    ``only_stored``: run and write nothing, summarise what the store holds."""
    from benchkit.report.tables import render

    grid = load_grid(source, seeds=seeds, replicates=replicates)
    if tune_trials:
        grid.tune = {**grid.tune, "trials": tune_trials}
    run = run_grid(
        grid,
        base,
        out,
        executor=executor,
        jobs=jobs,
        address=address,
        quiet=quiet,
        log=log,
        only_stored=only_stored,
    )
    files = [] if only_stored else write_outputs(run.grid, run, out, paper)
    printed = render(run.grid, run.summary, fmt, paper_table3() if paper else None)
    return run, {"files": files, "printed": printed}
