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


class UserError(click.ClickException):
    """A :class:`BenchkitError` as click shows it: ``Error: <message>``, with the error's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]


class BenchkitGroup(click.Group):
    """Turns :class:`BenchkitError` into a one-line message and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BenchkitError as exc:
            raise UserError(str(exc), exc.exit_code) from None


def parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as JSON when they parse (numbers, true, [..]) else text."""
    out: dict[str, Any] = {}
    for item in values:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


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


def _source_options() -> list[Any]:
    """Where the data comes from: the synthetic world at a preset, or a dataset on disk."""
    return [
        click.option(
            "--preset",
            default="small",
            show_default=True,
            help="Synthetic-world size: tiny, small or paper.",
        ),
        click.option(
            "--world-seed",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Seed of the synthetic world (and of the test-set split).",
        ),
        click.option(
            "--data",
            "data_path",
            type=click.Path(exists=True),
            default=None,
            help="A dataset on disk (DebCM layout or tables) instead of the world.",
        ),
        click.option(
            "--pgc",
            "pgc_path",
            type=click.Path(exists=True),
            default=None,
            help="PGC clips (data_pgc/ or a tables pgc/ folder).",
        ),
    ]


def _training_options() -> list[Any]:
    """How each run trains: epoch cap, patience, device, precision, feature storage."""
    return [
        click.option(
            "--features",
            type=click.Choice(["float32", "float16"]),
            default="float32",
            show_default=True,
            help="Feature storage (float16 halves its memory).",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            default=None,
            help="Cap on training epochs (default: the card's); early stopping still applies.",
        ),
        click.option(
            "--patience",
            type=click.IntRange(min=1),
            default=10,
            show_default=True,
            help="Stop after this many epochs without a better validation score.",
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N]."),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "bf16"]),
            default="auto",
            show_default=True,
            help="Training precision: auto = bf16 autocast on CPUs with native "
            "bfloat16, else fp32 (evaluation always scores in float32).",
        ),
    ]


def training_options(f: Any) -> Any:
    return _apply(f, _training_options())


def _apply(f: Any, options: list[Any]) -> Any:
    for option in reversed(options):
        f = option(f)
    return f


def data_options(f: Any) -> Any:
    """The data source, the test set, and stored-weight normalisation."""
    return _apply(
        f,
        [
            *_source_options(),
            click.option(
                "--test-set",
                default="given",
                show_default=True,
                help="given, random, diverse (T_diverse), matching (T_matching), ratio:X.",
            ),
            click.option(
                "--normalise-weights",
                is_flag=True,
                help="Rescale stored evaluation weights that do not sum to 1.",
            ),
        ],
    )


@cli.command()
@click.option("--backbone", "-b", default="cmvae", show_default=True, help="Backbone plugin name.")
@click.option(
    "--debias",
    "-d",
    default="none",
    show_default=True,
    help="Strategy or stack, e.g. 'ips' or 'decrs+label_distill'.",
)
@click.option(
    "--setting",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "ugc", "ugc+pgc"]),
    help="Data setting: UGC only (D_s) or UGC with PGC (D_s ∪ D_t).",
)
@data_options
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=1234,
    show_default=True,
    help="Seed of initialisation and batching.",
)
@training_options
@click.option(
    "--protocol",
    "-p",
    default="paper",
    show_default=True,
    help="Evaluation protocol: paper (100 sampled negatives) or full (whole pool).",
)
@click.option("--split", default="test", show_default=True, help="Split to evaluate on.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a hyperparameter; 'strategy.key=value' for a strategy's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or log lines.")
def run(
    backbone: str,
    debias: str,
    setting: str,
    preset: str,
    world_seed: int,
    data_path: str | None,
    pgc_path: str | None,
    test_set: str,
    normalise_weights: bool,
    seed: int,
    epochs: int | None,
    patience: int,
    protocol: str,
    split: str,
    sets: tuple[str, ...],
    device: str,
    precision: str,
    features: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Train one method and evaluate it (on the synthetic world unless --data is given)."""
    from benchkit.api import run as run_method

    result = run_method(
        backbone,
        debias,
        preset=preset,
        world_seed=world_seed,
        data=data_path,
        pgc=pgc_path,
        test_set=test_set,
        normalise_weights=normalise_weights,
        setting=setting,
        seed=seed,
        epochs=epochs,
        patience=patience,
        protocol=protocol,
        split=split,
        overrides=parse_set(sets),
        precision=precision,
        features=features,
        device=device,
        quiet=quiet,
        log=_log(quiet),
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
        return
    tr = result.training
    click.echo(f"method   {backbone} + {debias}")
    click.echo(f"dataset  {result.dataset['name']}  (fingerprint {result.dataset['fingerprint']})")
    click.echo(
        f"protocol {result.protocol['name']}  (hash {result.protocol['hash']}), "
        f"split {result.split}, seed {result.seed}"
    )
    click.echo(
        f"training {tr['epochs_run']} epochs, best {tr['best_epoch']} "
        f"(val {tr['best_val']:.4f}); {tr['seconds_per_epoch']:.2f} s/epoch, "
        f"{tr['pairs_per_second']:,.0f} pairs/s on {result.environment['device']}"
    )
    click.echo(_metric_table(result.metrics))


@cli.group()
def data() -> None:
    """Make, describe and validate datasets."""


@data.command()
@click.option("--preset", default="small", show_default=True, help="tiny, small or paper.")
@click.option("--world-seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(), required=True, help="Folder to write (must not exist).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["reference", "tables"]),
    default="reference",
    show_default=True,
    help="DebCM release layout or generic tables.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KNOB=VALUE",
    help="Change a knob of the world, e.g. taste_strength=0.",
)
@click.option("--quiet", "-q", is_flag=True)
def synth(
    preset: str, world_seed: int, out: str, fmt: str, sets: tuple[str, ...], quiet: bool
) -> None:
    """Write the synthetic world to disk."""
    from benchkit.data.reference import write_reference
    from benchkit.data.synth import make_world
    from benchkit.data.tables import write_tables

    ds = make_world(preset, seed=world_seed, log=_log(quiet), **parse_set(sets))
    path = write_reference(ds, out) if fmt == "reference" else write_tables(ds, out)
    click.echo(
        f"wrote {ds.name} ({ds.n_videos:,} videos, {ds.n_music:,} music) to {path} "
        f"in the {fmt} format"
    )


def _open(
    path: str | None,
    pgc: str | None,
    preset: str,
    world_seed: int,
    test_set: str,
    normalise: bool,
    quiet: bool,
) -> Any:
    from benchkit.api import load_dataset
    from benchkit.plugins import get_plugins

    return load_dataset(
        get_plugins(),
        preset,
        world_seed,
        _log(quiet),
        path=path,
        pgc=pgc,
        test_set=test_set,
        normalise_weights=normalise,
    )


@data.command()
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def describe(
    preset: str,
    world_seed: int,
    data_path: str | None,
    pgc_path: str | None,
    test_set: str,
    normalise_weights: bool,
    as_json: bool,
) -> None:
    """Table 2's statistics of a dataset (the synthetic world unless --data is given)."""
    d = _open(data_path, pgc_path, preset, world_seed, test_set, normalise_weights, True).describe()
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
    extra.append(["PGC pairs", f"{d['pgc_pairs']:,}"])
    click.echo(tabulate(extra, tablefmt="plain"))


@data.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--pgc", "pgc_path", type=click.Path(exists=True), default=None)
@click.option("--normalise-weights", is_flag=True)
def validate(path: str, pgc_path: str | None, normalise_weights: bool) -> None:
    """Load a dataset with every check; print what was found, or the first problem."""
    ds = _open(path, pgc_path, "small", 0, "given", normalise_weights, True)
    parts = [
        f"{ds.n_videos:,} videos",
        f"{ds.n_music:,} music",
        ", ".join(f"{k} {v.size:,}" for k, v in ds.splits.items()),
    ]
    if ds.pgc is not None:
        parts.append(f"{ds.pgc.pairs.shape[0]:,} PGC pairs")
    click.echo(f"OK: {ds.name}: " + "; ".join(parts))


def grid_options(f: Any) -> Any:
    """Options shared by table3, fig3, fig4 and experiment."""
    return _apply(
        f,
        [
            *_source_options(),
            click.option(
                "--seeds",
                type=click.IntRange(min=1),
                default=1,
                show_default=True,
                help="Seeds per cell (mean ± std and paired tests over them).",
            ),
            *_training_options(),
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
                type=click.Choice(["local", "process", "ray"]),
                default="local",
                show_default=True,
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

    from benchkit.experiments.driver import Source, run_grid
    from benchkit.experiments.grid import load_grid, paper_table3
    from benchkit.report.tables import render

    grid = load_grid(source, seeds=opts["seeds"])
    quiet = opts["quiet"]
    run = run_grid(
        grid,
        Source(opts["preset"], opts["world_seed"], opts["data_path"], opts["pgc_path"]),
        opts["out"],
        epochs=opts["epochs"],
        patience=opts["patience"],
        executor=opts["executor"],
        jobs=opts["jobs"],
        address=opts["address"],
        device=opts["device"],
        precision=opts["precision"],
        features=opts["features"],
        quiet=quiet,
        log=_log(quiet),
    )
    numbers = paper_table3() if paper else None
    out = Path(opts["out"])
    written = []
    for fmt, ext in (("md", "md"), ("latex", "tex"), ("csv", "csv")):
        path = out / f"{grid.name}.{ext}"
        path.write_text(render(grid, run.summary, fmt, numbers))
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
@click.argument("grid_file", type=click.Path(exists=True))
@grid_options
def experiment(grid_file: str, **opts: Any) -> None:
    """Run a grid file (copy one of benchkit/experiments/grids/*.toml and edit it)."""
    _grid_command(grid_file, opts)


@cli.command()
@click.option("--out", default="benchkit-results", show_default=True, help="The results folder.")
@click.option("--grid", default=None, help="Only the runs of this grid.")
@click.option(
    "--export",
    "export",
    type=click.Path(),
    default=None,
    help="Write every run to a .csv or .parquet file.",
)
def results(out: str, grid: str | None, export: str | None) -> None:
    """List the runs in a results store, or export them (CSV, Parquet)."""
    from pathlib import Path

    from benchkit.errors import DataError
    from benchkit.experiments.store import Store

    if not (Path(out) / "results.sqlite").exists():
        raise DataError(f"no results store in {out} (run a grid with --out {out} first)")
    frame = Store(out).frame(grid)
    if export:
        if export.endswith(".parquet"):
            frame.to_parquet(export, index=False)
        elif export.endswith(".csv"):
            frame.to_csv(export, index=False)
        else:
            raise click.BadParameter("export to a .csv or .parquet file", param_hint="--export")
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
