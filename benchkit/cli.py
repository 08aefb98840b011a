"""The ``benchkit`` command line.

Errors a user can cause are printed as one ``Error: ...`` line without a traceback; unknown plugin
names and bad options exit with code 2, other user errors with 1.
"""

from __future__ import annotations

import json
from typing import Any

import click
from tabulate import tabulate

from benchkit import __version__
from benchkit.errors import BenchkitError
from benchkit.spec import click_options, spec_from_options


class UserError(click.ClickException):
    """A :class:`BenchkitError` as click shows it: ``Error: <message>``, with the error's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        setattr(self, "exit_code", exit_code)  # noqa: B010 (a class attribute in click)


class BenchkitGroup(click.Group):
    """Turns :class:`BenchkitError` into a one-line message and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BenchkitError as exc:
            raise UserError(str(exc), exc.exit_code) from None


def _log(quiet: bool) -> Any:
    return (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))


@click.group(cls=BenchkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="benchkit")
def cli() -> None:
    """benchkit: benchmark debiased cross-modal (video → music) matching."""


def _metric_table(metrics: dict[str, float]) -> str:
    """Rows = K; columns = the protocol's metrics, then the oracle/bias ones."""
    ks = sorted({int(k.split("@")[1]) for k in metrics})
    names = sorted(
        {k.split("@")[0] for k in metrics}, key=lambda n: (n not in ("recall", "ndcg"), n)
    )
    rows = [[k, *(metrics.get(f"{n}@{k}", float("nan")) for n in names)] for k in ks]
    heads = {"recall": "Recall", "ndcg": "NDCG"}
    return tabulate(
        rows, headers=["K", *(heads.get(n, n) for n in names)], floatfmt=".4f", tablefmt="github"
    )


def _apply(f: Any, options: list[Any]) -> Any:
    for option in reversed(options):
        f = option(f)
    return f


@cli.command()
@click_options("method", "source", "split", "training", "evaluation")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or log lines.")
def run(as_json: bool, quiet: bool, **options: Any) -> None:
    """Train one method and evaluate it (on the synthetic world unless --data is given)."""
    from benchkit.api import execute, plan_run

    spec = spec_from_options(options)
    plan = plan_run(spec, log=_log(quiet))
    result = execute(plan, quiet=quiet, log=_log(quiet))
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
        return
    tr = result.training
    click.echo(f"method   {spec.backbone} + {spec.debias}")
    click.echo(f"dataset  {result.dataset['name']}  (fingerprint {result.dataset['fingerprint']})")
    click.echo(
        f"protocol {result.protocol['name']}  (hash {result.protocol['hash']}), "
        f"split {result.split}, seed {result.seed}"
    )
    click.echo(
        f"training {tr['epochs_run']} epochs, best {tr['best_epoch']} "
        f"(val {tr['best_val']:.4f}); {tr['seconds_per_epoch']:.2f} s/epoch, "
        f"{tr['pairs_per_second']:,.0f} pairs/s on {result.environment['device']} "
        f"({tr['precision']}, {tr['threads']} threads)"
    )
    click.echo(_metric_table(result.metrics))


@cli.group()
def data() -> None:
    """Make, describe and validate datasets."""


@data.command()
@click_options("source", exclude=("data", "pgc", "normalise_weights"))
@click.option("--out", type=click.Path(), required=True, help="Folder to write (must not exist).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["reference", "tables"]),
    default="reference",
    show_default=True,
    help="DebCM release layout or generic tables.",
)
@click.option("--quiet", "-q", is_flag=True, help="No log lines.")
def synth(out: str, fmt: str, quiet: bool, **options: Any) -> None:
    """Write the synthetic world to disk (--world KNOB=VALUE changes its knobs)."""
    from benchkit.data.reference import write_reference
    from benchkit.data.tables import write_tables

    ds = _dataset(options, quiet)
    path = write_reference(ds, out) if fmt == "reference" else write_tables(ds, out)
    click.echo(
        f"wrote {ds.name} ({ds.n_videos:,} videos, {ds.n_music:,} music) to {path} "
        f"in the {fmt} format"
    )


def _dataset(options: dict[str, Any], quiet: bool = True) -> Any:
    from benchkit.api import load_dataset

    return load_dataset(spec_from_options(options), log=_log(quiet))


@data.command()
@click_options("source", exclude=("features",))
@click_options("split", exclude=("split",))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def describe(as_json: bool, **options: Any) -> None:
    """Table 2's statistics of a dataset (the synthetic world unless --data is given)."""
    d = _dataset(options).describe()
    if as_json:
        click.echo(json.dumps(d, sort_keys=True))
        return
    click.echo(f"{d['name']}  (fingerprint {d['fingerprint']})")
    click.echo(
        tabulate(
            [
                [
                    f"{d['music']:,}",
                    f"{d['videos']:,}",
                    f"{d['videos_per_music_mean']:.1f} ± {d['videos_per_music_std']:.1f}",
                    f"{d['videos_per_music_min']} / {d['videos_per_music_max']}",
                ]
            ],
            headers=["#Music", "#Video", "avg ± std #v/#m", "min/max #v/#m"],
            tablefmt="github",
        )
    )
    if "genres" in d:
        click.echo(
            tabulate(
                [list(d["genres"].values())],
                headers=[f"#{g}" for g in d["genres"]],
                tablefmt="github",
            )
        )
    extra = [["uploaders", f"{d['uploaders']:,}"]]
    if "uploader_entropy_mean" in d:
        extra.append(
            [
                "uploader genre-history entropy (nats)",
                f"{d['uploader_entropy_mean']:.2f} ± {d['uploader_entropy_std']:.2f}",
            ]
        )
    extra.append(["splits", ", ".join(f"{k} {v:,}" for k, v in d["splits"].items())])
    if "test_uploaders" in d:
        extra.append(
            [
                "test set",
                f"{d['test_uploaders']:,} uploaders, the largest "
                f"{d['test_largest_uploader_share']:.1%} of the videos",
            ]
        )
    if "test_true_taste_entropy" in d:
        extra.append(
            [
                "true-taste entropy (nats)",
                f"test set {d['test_true_taste_entropy']:.2f}, a random split "
                f"{d['random_split_true_taste_entropy']:.2f}",
            ]
        )
    extra.append(["PGC pairs", f"{d['pgc_pairs']:,}"])
    click.echo(tabulate(extra, tablefmt="plain"))


@data.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--pgc", "pgc_path", type=click.Path(exists=True), default=None)
@click.option("--normalise-weights", is_flag=True)
def validate(path: str, pgc_path: str | None, normalise_weights: bool) -> None:
    """Load a dataset with every check; print what was found, or the first problem."""
    ds = _dataset({"data": path, "pgc": pgc_path, "normalise_weights": normalise_weights})
    parts = [
        f"{ds.n_videos:,} videos",
        f"{ds.n_music:,} music",
        ", ".join(f"{k} {v.size:,}" for k, v in ds.splits.items()),
    ]
    if ds.pgc is not None:
        parts.append(f"{ds.pgc.pairs.shape[0]:,} PGC pairs")
    click.echo(f"OK: {ds.name}: " + "; ".join(parts))


def grid_options(f: Any) -> Any:
    """Options shared by table3, fig3, fig4 and experiment: the data source and each run's
    training recipe (from RunSpec), seeds, outputs and the executor."""
    f = click_options("source", "training", exclude=("seed",))(f)
    return _apply(
        f,
        [
            click.option(
                "--seeds",
                type=click.IntRange(min=1),
                default=None,
                help="Seeds per cell (mean ± std and paired tests over them); default: the "
                "grid's own (1 unless it says).",
            ),
            click.option(
                "--out",
                default="benchkit-results",
                show_default=True,
                help="Folder for the results store and the outputs.",
            ),
            click.option(
                "--format",
                "fmt",
                type=click.Choice(["md", "latex", "csv"]),
                default="md",
                show_default=True,
                help="Table format printed (all three are written).",
            ),
            click.option(
                "--executor",
                default="local",
                show_default=True,
                help="Where runs execute: local, process, ray, or a plugin's executor.",
            ),
            click.option(
                "--jobs",
                type=click.IntRange(min=1),
                default=1,
                show_default=True,
                help="Workers of the process or Ray executor.",
            ),
            click.option("--address", default=None, help="Ray cluster address (ray executor)."),
            click.option("--quiet", "-q", is_flag=True, help="No progress bar or log lines."),
        ],
    )


def _grid_command(source: str, opts: dict[str, Any], paper: bool = False) -> None:
    from pathlib import Path

    from benchkit.experiments.driver import run_grid
    from benchkit.experiments.grid import load_grid, paper_table3
    from benchkit.files import write_text
    from benchkit.report.tables import render

    grid = load_grid(source, seeds=opts["seeds"])
    quiet = opts["quiet"]
    run = run_grid(
        grid,
        spec_from_options(opts),
        opts["out"],
        executor=opts["executor"],
        jobs=opts["jobs"],
        address=opts["address"],
        quiet=quiet,
        log=_log(quiet),
    )
    numbers = paper_table3() if paper else None
    out = Path(opts["out"])
    written = []
    for fmt, ext in (("md", "md"), ("latex", "tex"), ("csv", "csv")):
        path = out / f"{grid.name}.{ext}"
        write_text(path, render(grid, run.summary, fmt, numbers))
        written.append(path)
    if grid.kind == "figure":
        from benchkit.report.figures import line_figure

        written += line_figure(grid, run.summary, out)
    click.echo(render(grid, run.summary, opts["fmt"], numbers))
    if not quiet:
        click.echo(
            f"{run.ran} runs trained, {run.skipped} taken from the store, "
            f"{run.seconds:.0f} s; wrote {', '.join(str(p) for p in written)}",
            err=True,
        )
    if run.failures:
        from benchkit.experiments.driver import RunFailed

        first = next(iter(run.failures.values()))
        raise RunFailed(
            f"{len(run.failures)} run(s) of {grid.name} failed and are marked in the table "
            f"(the first: {first}); `benchkit results --out {opts['out']} --failures` lists them"
        )


@cli.command()
@grid_options
@click.option("--paper", is_flag=True, help="Show the paper's numbers beside ours.")
def table3(paper: bool, **opts: Any) -> None:
    """Regenerate Table 3 (every method × D_s, D_s ∪ D_t × T_diverse, T_matching)."""
    _grid_command("table3", opts, paper)


@cli.command()
@grid_options
def fig3(**opts: Any) -> None:
    """Regenerate Fig. 3 (DebCM vs DecRS under the genre-ratio intervention)."""
    _grid_command("fig3", opts)


@cli.command()
@grid_options
def fig4(**opts: Any) -> None:
    """Regenerate Fig. 4 (the weight of the teacher loss)."""
    _grid_command("fig4", opts)


@cli.command()
@click.argument("grid_file", metavar="GRID")
@grid_options
def experiment(grid_file: str, **opts: Any) -> None:
    """Run a grid: a TOML file, or a built-in grid by name (table3, fig3, fig4, headroom, bias).

    Copy a built-in one from benchkit/experiments/grids/ to start your own.
    """
    _grid_command(grid_file, opts)


@cli.command()
@click.option("--out", default="benchkit-results", show_default=True, help="The results folder.")
@click.option("--grid", default=None, help="Only the runs of this grid.")
@click.option(
    "--export",
    "export",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write every run, its record flattened, to a .csv or .parquet file.",
)
@click.option("--failures", is_flag=True, help="List the runs that failed, with their errors.")
def results(out: str, grid: str | None, export: str | None, failures: bool) -> None:
    """List the runs in a results store, export them (CSV, Parquet), or list its failures."""
    from benchkit.experiments.store import Store

    store = Store(out, read_only=True)
    if failures:
        rows = store.failed_runs(grid)
        if not rows:
            click.echo("no failed runs")
            return
        click.echo(tabulate(rows, headers=["grid", "row", "column", "error"], tablefmt="github"))
        return
    frame = store.frame(grid)
    if export:
        write_frame(frame, export)
        click.echo(f"wrote {len(frame)} runs to {export}")
        return
    if frame.empty:
        click.echo("no runs")
        return
    cols = ["grid", "row_label", "column_key", "seed", "debias", "setting"]
    cols += [c for c in ("recall@15", "ndcg@15", "recall@25", "ndcg@25") if c in frame]
    click.echo(
        tabulate(frame[cols].values.tolist(), headers=cols, tablefmt="github", floatfmt=".4f")
    )


def write_frame(frame: Any, path: str) -> None:
    """A table to .csv or .parquet, atomically, creating the folder if it is missing."""
    from pathlib import Path

    from benchkit.files import atomic_file

    target = Path(path)
    if target.suffix not in (".csv", ".parquet"):
        raise click.BadParameter("export to a .csv or .parquet file", param_hint="--export")
    try:
        with atomic_file(target) as tmp:
            if target.suffix == ".parquet":
                frame.to_parquet(tmp, index=False)
            else:
                frame.to_csv(tmp, index=False)
    except ImportError:
        raise BenchkitError("Parquet needs pyarrow: pip install 'benchkit[parquet]'") from None


@cli.command(name="list")
@click.argument(
    "kind", type=click.Choice(["backbones", "strategies", "datasets", "protocols", "metrics"])
)
def list_(kind: str) -> None:
    """List the installed backbones, strategies, datasets, protocols or metrics."""
    from benchkit.interfaces import StackAlias
    from benchkit.plugins import get_plugins

    registry = get_plugins().registry(kind)
    rows = []
    for entry in registry.entries():
        text = entry.description
        if isinstance(entry.obj, StackAlias):
            text = f"= {' + '.join(entry.obj.members)}" + (f": {text}" if text else "")
        rows.append([entry.name, entry.plugin, text])
    click.echo(tabulate(rows, headers=["name", "plugin", "description"], tablefmt="plain"))


@cli.command()
def plugins() -> None:
    """Installed plugins, their versions and what each registered; plugins that failed to load."""
    from benchkit.plugins import get_plugins

    ps = get_plugins()
    rows = []
    for info in sorted(ps.info.values(), key=lambda i: i.name):
        what = ", ".join(f"{kind} {name}" for kind, name in info.registered) or "-"
        rows.append([info.name, info.distribution, info.version, what])
    click.echo(
        tabulate(
            rows, headers=["plugin", "distribution", "version", "registered"], tablefmt="plain"
        )
    )
    if ps.failures:
        click.echo("\nfailed to load:")
        for f in ps.failures:
            click.echo(f"  {f.name} ({f.distribution} {f.version}): {f.error}")


def main() -> None:
    """Console-script entry: add plugins' commands, then run."""
    try:
        from benchkit.plugins import get_plugins

        get_plugins().add_commands(cli)
    except BenchkitError as exc:  # a broken plugin set must still let `benchkit plugins` speak
        click.echo(f"Warning: {exc}", err=True)
    cli(prog_name="benchkit")


if __name__ == "__main__":  # pragma: no cover
    main()
