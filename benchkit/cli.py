"""The ``benchkit`` command line.

Errors a user can cause are printed as one ``Error: ...`` line without a traceback; unknown plugin
names and bad options exit with code 2, other user errors with 1.

Starting is kept light: this module imports click and the option declarations only. torch, pandas,
plotting and the plugins are imported by the commands that use them; plugins' own commands are
added when one of them is asked for, and ``--help`` and ``benchkit list`` read what the plugins
registered from the catalogue (:mod:`benchkit.catalogue`) instead of importing them.
"""

from __future__ import annotations

import json
from typing import Any

import click

from benchkit import catalogue
from benchkit.contracts.kinds import KIND_NAMES
from benchkit.errors import BenchkitError
from benchkit.experiments.grid import MAX_REPLICATES, MAX_SEEDS, REPORT_WORLD_SEED
from benchkit.spec import RunSpec, click_options, spec_from_options
from benchkit.version import __version__


def tabulate(*args: Any, **kwargs: Any) -> str:
    from tabulate import tabulate as render

    return str(render(*args, **kwargs))


class UserError(click.ClickException):
    """A :class:`BenchkitError` as click shows it: ``Error: <message>``, with the error's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        setattr(self, "exit_code", exit_code)  # noqa: B010 (a class attribute in click)


class BenchkitGroup(click.Group):
    """Turns :class:`BenchkitError` into a one-line message and the error's exit code — a Ctrl-C
    or an unexpected exception into one line too (the traceback under ``--debug``) — and adds
    the plugins' commands only when they are needed: to run one, or to list them in ``--help``
    (from the catalogue, when it knows them)."""

    plugins_added = False
    plugin_commands: tuple[str, ...] = ()

    def invoke(self, ctx: click.Context) -> Any:
        from benchkit.interrupts import debug, watch_interrupts

        try:
            with watch_interrupts():  # a plugin's KeyboardInterrupt is told from a Ctrl-C
                return super().invoke(ctx)
        except BenchkitError as exc:
            trace = getattr(exc, "trace", "")
            if debug() and trace:
                click.echo(trace, err=True, nl=False)
            raise UserError(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise UserError("interrupted", 130) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (Exception, SystemExit) as exc:
            if debug():
                raise
            raise UserError(unexpected(exc)) from None

    def add_plugin_commands(self) -> dict[str, Any]:
        """Load the plugins, let them add their commands, and remember what they registered (the
        catalogue, rewritten); a broken plugin set must still let ``benchkit plugins`` speak."""
        from benchkit.plugins import get_plugins

        plugins = get_plugins()
        if not self.plugins_added:
            self.plugins_added = True
            before = set(self.commands)
            try:
                plugins.add_commands(self)
            except BenchkitError as exc:
                click.echo(f"Warning: {exc}", err=True)
            self.plugin_commands = tuple(sorted(set(self.commands) - before))
        added = [(n, self.commands[n].get_short_help_str(limit=300)) for n in self.plugin_commands]
        found = catalogue.describe(plugins, added)
        catalogue.write(found)
        return found

    def catalogue(self) -> dict[str, Any]:
        """What the installed plugins register: remembered, or loaded now."""
        return (None if self.plugins_added else catalogue.read()) or self.add_plugin_commands()

    def _listed_plugin_commands(self) -> dict[str, str]:
        """Plugins' commands (name → short help) not added yet, as the catalogue knows them."""
        if self.plugins_added:
            return {}
        if not catalogue.third_party(catalogue.entry_points()):
            return {}  # benchkit's own plugins add no commands
        return {name: text for name, text in self.catalogue()["commands"]}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and not self.plugins_added:
            self.add_plugin_commands()
            found = super().get_command(ctx, cmd_name)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._listed_plugin_commands()})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed = self._listed_plugin_commands()
        names = [n for n in self.list_commands(ctx) if n in listed or not self.commands[n].hidden]
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = [
            (n, listed[n] if n in listed else self.commands[n].get_short_help_str(limit))
            for n in names
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def unexpected(exc: BaseException) -> str:
    """An exception benchkit did not expect, in one line, with where to see more."""
    import traceback

    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"unexpected {type(exc).__name__}{where}"
        + (f": {text}" if text else "")
        + " (rerun with benchkit --debug, or BENCHKIT_DEBUG=1, for the traceback)"
    )


def _log(quiet: bool) -> Any:
    return (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))


@click.group(cls=BenchkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="benchkit")
@click.option(
    "--debug", is_flag=True, help="Show the traceback of an error (as BENCHKIT_DEBUG=1 does)."
)
def cli(debug: bool) -> None:
    """benchkit: benchmark debiased cross-modal (video → music) matching."""
    if debug:
        import os

        os.environ["BENCHKIT_DEBUG"] = "1"  # worker processes inherit it


def _apply(f: Any, options: list[Any]) -> Any:
    for option in reversed(options):
        f = option(f)
    return f


@cli.command(short_help="Train one method and evaluate it.")
@click_options("method", "source", "split", "training", "evaluation")
@click.option(
    "--save",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the trained model package to this folder (benchkit recommend reads it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or log lines.")
def run(save: str | None, as_json: bool, quiet: bool, **options: Any) -> None:
    """Train one method and evaluate it (on the synthetic world unless --data is given)."""
    from benchkit.api import execute, plan_run

    spec = spec_from_options(options)
    if save is not None:
        from benchkit.model_card import check_target

        check_target(save)  # before any data is made or any epoch trained
    plan = plan_run(spec, log=_log(quiet))
    result = execute(plan, quiet=quiet, log=_log(quiet), save=save)
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
        return
    from benchkit.report.run_text import run_report

    click.echo(run_report(result, f"{spec.backbone} + {spec.debias}"))


@cli.command(short_help="Tune hyperparameters on validation; score once on test.")
@click_options("method", "source", "split", "training", "evaluation", exclude=("split",))
@click.option(
    "--trials", type=click.IntRange(min=1), default=20, show_default=True, help="Trials to finish."
)
@click.option(
    "--sampler",
    type=click.Choice(["tpe", "random", "grid"]),
    default="tpe",
    show_default=True,
    help="How the next trial is chosen.",
)
@click.option(
    "--space",
    "space_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A TOML search space (default: the plugins' own).",
)
@click.option(
    "--metric",
    default="recall@25",
    show_default=True,
    help="The validation metric to optimise (in its declared direction).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=None,
    help="Stop starting trials after this many seconds.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Trials in parallel (processes sharing the cores).",
)
@click.option(
    "--out",
    default="benchkit-results",
    show_default=True,
    help="Folder of the study (tune.sqlite), beside the results store.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines.")
def tune(
    trials: int,
    sampler: str,
    space_file: str | None,
    metric: str,
    timeout: float | None,
    jobs: int,
    out: str,
    quiet: bool,
    **options: Any,
) -> None:
    """Search hyperparameters on the validation split, then score the best once on the test split."""
    from benchkit.tune import read_space
    from benchkit.tune import tune as run_tune

    spec = spec_from_options(options)
    space = None if space_file is None else read_space(space_file)
    res = run_tune(
        spec,
        trials=trials,
        sampler=sampler,
        space=space,
        metric=metric,
        timeout=timeout,
        jobs=jobs,
        out=out,
        log=_log(quiet),
    )
    counts = res.trials
    click.echo(
        f"best {metric} on validation: {res.value:.4f} ({counts['complete']} trials, "
        f"{counts['pruned']} pruned, {counts['failed']} failed)"
    )
    click.echo(f"best parameters: {res.set_line()}")
    if res.test is not None:
        from benchkit.report.run_text import blocks, metric_table

        click.echo(f"with them, on {res.test.split}:")
        for heading, metrics in blocks(res.test):
            click.echo(f"{heading}\n{metric_table(metrics)}")


@cli.command(short_help="Recommend music for new videos with a saved model.")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--videos",
    required=True,
    type=click.Path(exists=True),
    help="Video features: a .npy matrix or a .parquet table.",
)
@click.option(
    "--video-ids",
    type=click.Path(exists=True),
    default=None,
    help="Ids of the .npy rows, one per line.",
)
@click.option(
    "--music-pool",
    type=click.Path(exists=True),
    default=None,
    help="Music features to rank (default: the model's own pool).",
)
@click.option(
    "--music-ids",
    type=click.Path(exists=True),
    default=None,
    help="Ids of the pool's rows, one per line.",
)
@click.option(
    "--music-genres",
    type=click.Path(exists=True),
    default=None,
    help="A .npy of one genre id per pool row (Calibration needs them).",
)
@click.option(
    "--uploaders",
    type=click.Path(exists=True),
    default=None,
    help="A CSV of video_id, uploader_id (the training data's uploader ids; empty: a new "
    "uploader): their histories serve per-uploader strategies.",
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=25,
    show_default=True,
    help="How many music per video.",
)
@click.option(
    "--rerank-pool",
    type=click.IntRange(min=1),
    default=None,
    help="Candidates a re-ranker sees (default: the whole pool up to 50,000, else 5,000).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write .csv, .parquet or .jsonl (default: CSV on stdout).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
def recommend(
    model: str,
    videos: str,
    video_ids: str | None,
    music_pool: str | None,
    music_ids: str | None,
    music_genres: str | None,
    uploaders: str | None,
    k: int,
    rerank_pool: int | None,
    out: str | None,
    device: str,
) -> None:
    """Recommend the top-K music for new videos with a saved model (paper §4.5)."""
    import numpy as np
    import pandas as pd

    from benchkit.data.npyio import load_npy
    from benchkit.model import load

    rec = load(model, device=device)
    from benchkit.frames import read_rows, write_frame

    features, row_ids = read_rows(videos, "videos", video_ids)
    pool = None
    if music_pool is not None:
        pool_features, pool_ids = read_rows(music_pool, "music pool", music_ids)
        genre = None if music_genres is None else load_npy(music_genres, "music genres").reshape(-1)
        pool = rec.music_pool(pool_features, genre, pool_ids, what=music_pool)
    upl = None
    if uploaders is not None:
        upl = _uploader_column(uploaders, row_ids)
    ids, scores = rec.recommend(features, k=k, uploaders=upl, pool=pool, rerank_pool=rerank_pool)
    frame = pd.DataFrame(
        {
            "video_id": np.repeat(row_ids, ids.shape[1]),
            "rank": np.tile(np.arange(1, ids.shape[1] + 1), ids.shape[0]),
            "music_id": ids.reshape(-1),
            "score": scores.reshape(-1),
        }
    )
    if out is None:
        click.echo(frame.to_csv(index=False), nl=False)
    else:
        write_frame(frame, out)
        click.echo(
            f"wrote {ids.shape[1]} music for each of {ids.shape[0]:,} videos to {out}", err=True
        )


def _uploader_column(path: str, row_ids: Any) -> list[str | None]:
    """The uploader id of each video row, from a CSV of video_id, uploader_id (the ids the
    training data used); ``None`` for a video the CSV leaves out or gives no uploader."""
    import pandas as pd

    from benchkit.errors import DataError

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read it as CSV ({exc})") from None
    missing = {"video_id", "uploader_id"} - set(table.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    lookup = dict(zip(table["video_id"], table["uploader_id"], strict=True))
    return [lookup.get(str(v)) or None for v in row_ids]


@cli.command(short_help="Write the latent codes of videos or music.")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--videos",
    type=click.Path(exists=True),
    default=None,
    help="Video features to embed: a .npy matrix or a .parquet table.",
)
@click.option(
    "--music",
    type=click.Path(exists=True),
    default=None,
    help="Music features to embed: a .npy matrix or a .parquet table.",
)
@click.option(
    "--ids", type=click.Path(exists=True), default=None, help="Ids of the .npy rows, one per line."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="A .npy matrix of the codes (rows in input order), or a .csv, .parquet or .jsonl table "
    "of each row's id and code.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
def embed(
    model: str, videos: str | None, music: str | None, ids: str | None, out: str, device: str
) -> None:
    """Write the latent codes of videos or music (one row each) with a saved model."""

    from benchkit.frames import read_rows, write_codes
    from benchkit.model import load

    if (videos is None) == (music is None):
        raise click.UsageError("give exactly one of --videos and --music")
    source, what = (videos, "videos") if videos else (music, "music")
    rec = load(model, device=device)
    features, row_ids = read_rows(source, what, ids)  # type: ignore[arg-type]
    codes = rec.embed_videos(features) if videos else rec.embed_music(features)
    write_codes(codes, row_ids, "video_id" if videos else "music_id", out)
    click.echo(f"wrote {codes.shape[0]:,} codes of {codes.shape[1]} dimensions to {out}", err=True)


@cli.group()
def data() -> None:
    """Make, describe and validate datasets."""


@data.command(short_help="Write the synthetic world to disk.")
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


@data.command(short_help="Table 2's statistics of a dataset.")
@click_options("source", exclude=("features",))
@click_options("split", exclude=("split",))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def describe(as_json: bool, **options: Any) -> None:
    """Table 2's statistics of a dataset (the synthetic world unless --data is given)."""
    from benchkit.data.describe import describe

    d = describe(_dataset(options))
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


@data.command(short_help="Load a dataset with every check.")
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
    training recipe (from RunSpec), replicates and seeds, outputs, the executor, tuning."""
    f = claims_options(f)
    return click.option(
        "--tune",
        "tune_trials",
        type=click.IntRange(min=1),
        default=None,
        help="Tune every row on the validation split of a tuning world with this many trials "
        "first (the same budget for all; studies resume from --out).",
    )(f)


def claims_options(f: Any) -> Any:
    """:func:`grid_options` but tuning (claims read the shipped grids as they are)."""
    f = click_options("source", "training", exclude=("seed", "world_seed"))(f)
    return _apply(
        f,
        [
            click.option(
                "--replicates",
                type=click.IntRange(min=1, max=MAX_REPLICATES),
                default=None,
                help="Replicates per cell: fresh worlds (on data from disk, fresh validation/test "
                "partitions), each with its own split, negatives, truth, teacher and training "
                "seed; intervals and tests are over them. Default: the grid's own (1 unless it "
                "says).",
            ),
            click.option(
                "--world-seed",
                "world_seed",
                type=click.IntRange(min=0, max=2**32 - 1 - MAX_REPLICATES),
                default=REPORT_WORLD_SEED,
                show_default=True,
                help=f"World seed of the first replicate (replicate r uses this + r). Seeds from "
                f"{REPORT_WORLD_SEED} up are reporting worlds; those below are for tuning.",
            ),
            click.option(
                "--seeds",
                type=click.IntRange(min=1, max=MAX_SEEDS),
                default=None,
                help="Training seeds within each replicate; default: the grid's own (1 unless "
                "it says).",
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
                default="auto",
                show_default=True,
                help="Where runs execute: local, process, ray, or a plugin's executor; auto: "
                "process (one run per core, up to 4) on a CPU with several cores, else local.",
            ),
            click.option(
                "--jobs",
                type=click.IntRange(min=1),
                default=None,
                help="Workers of the process or Ray executor [default: the cores, up to 4, "
                "for auto; else 1].",
            ),
            click.option("--address", default=None, help="Ray cluster address (ray executor)."),
            click.option("--quiet", "-q", is_flag=True, help="No progress bar or log lines."),
        ],
    )


def _grid_command(sources: str | list[str], opts: dict[str, Any], paper: bool = False) -> None:
    """Run one grid (or several, one after the other), write and print its outputs."""
    from benchkit.experiments.driver import RunFailed
    from benchkit.experiments.report import run_and_write

    failures = 0
    for source in [sources] if isinstance(sources, str) else sources:
        run, written = run_and_write(
            source,
            spec_from_options(opts),
            opts["out"],
            replicates=opts["replicates"],
            seeds=opts["seeds"],
            tune_trials=opts["tune_trials"],
            paper=paper,
            executor=opts["executor"],
            jobs=opts["jobs"],
            address=opts["address"],
            quiet=opts["quiet"],
            log=_log(opts["quiet"]),
            fmt=opts["fmt"],
        )
        click.echo(written["printed"])
        if not opts["quiet"]:
            click.echo(
                f"{run.ran} runs trained, {run.skipped} taken from the store, "
                f"{run.seconds:.0f} s; wrote {', '.join(str(p) for p in written['files'])}",
                err=True,
            )
        if run.failures:
            failures += len(run.failures)
            first = next(iter(run.failures.values()))
            click.echo(
                f"{len(run.failures)} run(s) of {run.grid.name} failed and are marked in the "
                f"table (the first: {first})",
                err=True,
            )
    if failures:
        raise RunFailed(
            f"{failures} run(s) failed; `benchkit results --out {opts['out']} --failures` "
            f"lists them"
        )


@cli.command(short_help="Regenerate the paper's Table 3.")
@grid_options
@click.option("--paper", is_flag=True, help="Show the paper's numbers beside ours.")
def table3(paper: bool, **opts: Any) -> None:
    """Regenerate Table 3 (every method × D_s, D_s ∪ D_t × T_diverse, T_matching)."""
    _grid_command("table3", opts, paper)


@cli.command(short_help="Regenerate the paper's Fig. 3 (and its confounder-side twin).")
@grid_options
def fig3(**opts: Any) -> None:
    """Regenerate Fig. 3 (DebCM vs DecRS under the genre-ratio intervention), then fig3_taste:
    the same question with the test uploaders' taste shifted instead of the music (worlds with
    truth only: it redraws test choices from the world's choice model)."""
    if opts["data"] is not None:
        _log(opts["quiet"])("fig3_taste left out: it needs a world's choice model, --data has none")
        _grid_command("fig3", opts)
    else:
        _grid_command(["fig3", "fig3_taste"], opts)


@cli.command(short_help="Regenerate the paper's Fig. 4 (teacher-loss weight).")
@grid_options
def fig4(**opts: Any) -> None:
    """Regenerate Fig. 4 (the weight of the teacher loss)."""
    _grid_command("fig4", opts)


@cli.command(short_help="Run any grid (a TOML file or a built-in name); list or copy them.")
@click.argument("grid_file", metavar="GRID", required=False)
@click.option("--list", "list_grids", is_flag=True, help="List the built-in grids.")
@click.option(
    "--copy",
    "copy_name",
    metavar="NAME",
    default=None,
    help="Write the built-in grid NAME to ./NAME.toml, to edit and run as your own.",
)
@grid_options
def experiment(grid_file: str | None, list_grids: bool, copy_name: str | None, **opts: Any) -> None:
    """Run a grid: a TOML file, or a built-in grid by name (benchkit experiment --list names them).

    Start your own from a built-in one: benchkit experiment --copy headroom writes headroom.toml.
    """
    from benchkit.experiments.grid import builtin_grids

    if list_grids:
        click.echo(tabulate(builtin_grids(), headers=["grid", "title"], tablefmt="plain"))
        click.echo("\nrun one: benchkit experiment NAME; copy one to edit: --copy NAME")
        return
    if copy_name is not None:
        from pathlib import Path

        from benchkit.experiments.grid import copy_builtin

        target = copy_builtin(copy_name, Path.cwd())
        click.echo(f"wrote {target}; edit it, then: benchkit experiment {target}")
        return
    if grid_file is None:
        raise click.UsageError("give a GRID (a TOML file or a built-in name), --list or --copy")
    _grid_command(grid_file, opts)


@cli.command(short_help="Compare two rows, paired within replicate.")
@click.argument("row_a")
@click.argument("row_b")
@click.option("--out", default="benchkit-results", show_default=True, help="The results folder.")
@click.option("--grid", default=None, help="The grid the rows belong to (when in several).")
@click.option(
    "--out-b", default=None, help="Another results folder holding ROW_B (the same design)."
)
@click.option("--grid-b", default=None, help="The grid of ROW_B in --out-b.")
@click.option("--metric", "metrics", multiple=True, help="Only these metrics (repeatable).")
@click.option(
    "--column", "columns", multiple=True, help="Only these columns, e.g. diverse/ugc (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
def compare(
    row_a: str,
    row_b: str,
    out: str,
    grid: str | None,
    out_b: str | None,
    grid_b: str | None,
    metrics: tuple[str, ...],
    columns: tuple[str, ...],
    as_json: bool,
) -> None:
    """Is ROW_A better than ROW_B? Their paired difference per column and metric, its 95%
    interval and p-value (a paired t-test over the replicates both rows ran on)."""
    from benchkit.experiments.compare import compare as run_compare
    from benchkit.experiments.compare import render_comparison

    frame = run_compare(
        out,
        row_a,
        row_b,
        grid=grid,
        out_b=out_b,
        grid_b=grid_b,
        metrics=list(metrics) or None,
        columns=list(columns) or None,
    )
    if as_json:
        click.echo(frame.to_json(orient="records", lines=True), nl=False)
        return
    click.echo(render_comparison(frame, row_a, row_b))


@cli.command(short_help="Answer the paper's claims, each with its control.")
@claims_options
@click.option(
    "--no-run", is_flag=True, help="Run nothing: answer from what the store at --out holds."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def claims(no_run: bool, as_json: bool, **opts: Any) -> None:
    """Run (or resume, into --out) Table 3, Fig. 3 and Fig. 4 with --replicates each (3 unless
    given), then answer each claim of the paper — holds, fails or inconclusive — on the observed
    Recall@25 and on the truth (cf-Recall@25), with the effect, its 95% interval, and the
    positive control's gain in the same cells."""
    from benchkit.experiments import claims as c

    ev = c.gather(
        spec_from_options(opts),
        opts["out"],
        replicates=opts["replicates"],
        seeds=opts["seeds"],
        run=not no_run,
        executor=opts["executor"],
        jobs=opts["jobs"],
        address=opts["address"],
        quiet=opts["quiet"],
        log=_log(opts["quiet"]),
    )
    findings = c.answer(ev)
    if as_json:
        click.echo(json.dumps(c.as_json(findings), sort_keys=True))
        return
    click.echo(c.report(findings, truth=ev.has_metric(c.TRUTH)))


@cli.command(short_help="List, export or plot stored runs; list failures.")
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
@click.option(
    "--curves",
    type=click.Path(dir_okay=False),
    default=None,
    help="Plot the learning curves (loss, validation score per epoch) to a .png or .pdf.",
)
@click.option(
    "--row",
    "rows",
    multiple=True,
    help="With --curves: only runs of the row labelled exactly this (repeatable).",
)
@click.option(
    "--timing",
    is_flag=True,
    help="Per row: runs, epochs to the best validation score, epochs run, seconds, GFLOP; per "
    "grid: its share of the machine's peak.",
)
def results(
    out: str,
    grid: str | None,
    export: str | None,
    failures: bool,
    curves: str | None,
    rows: tuple[str, ...],
    timing: bool,
) -> None:
    """List the runs in a results store, export them, plot their learning curves, list failures,
    or summarise the training time of each row (--timing)."""
    from pathlib import Path

    from benchkit.experiments.store import Store

    if curves:
        from pathlib import Path

        from benchkit.extras import require

        if Path(curves).suffix.lower() not in (".png", ".pdf"):
            raise click.BadParameter(f"{curves}: write a .png or .pdf file", param_hint="--curves")
        require("plots", "results --curves")
    store = Store(out, read_only=True)
    if curves:
        from benchkit.report.figures import curves_figure

        runs = [(label, h) for label, h in store.histories(grid, rows) if h]
        if not runs and rows:
            known = sorted({label for label in store.frame(grid).get("row_label", []) if label})
            raise BenchkitError(
                f"no runs of row(s) {', '.join(map(repr, rows))} with a training history; the "
                f"rows are: {', '.join(known) or 'none'} (--row matches a label exactly)"
            )
        if not runs:
            raise BenchkitError("no runs with a training history to plot (run a grid first)")
        click.echo(f"wrote {curves_figure(runs, curves)} ({len(runs)} runs)")
        return
    if failures:
        failed = store.failed_runs(grid)
        if not failed:
            click.echo("no failed runs")
            return
        click.echo(tabulate(failed, headers=["grid", "row", "column", "error"], tablefmt="github"))
        return
    frame = store.frame(grid)
    if export:
        from benchkit.frames import write_frame

        write_frame(frame, export)
        click.echo(f"wrote {len(frame)} runs to {export}")
        return
    if store.damaged:
        click.echo(
            f"{len(store.damaged)} damaged record(s) skipped; `benchkit results --failures` "
            f"lists them (a rerun of their grid runs them again)",
            err=True,
        )
    if frame.empty:
        click.echo("no runs")
        return
    if timing:
        from benchkit.flops import machine_peak
        from benchkit.report.tables import training_time, utilisation

        summary = training_time(frame)
        click.echo(tabulate(summary, headers="keys", tablefmt="github", showindex=False))
        total = summary["wall min"].sum()
        click.echo(f"\n{int(summary['runs'].sum())} runs, {total:.1f} min of run time in all")
        for line in utilisation(frame, machine_peak):
            click.echo(line)
        click.echo(
            "(peak: 2048² matmuls in the runs' training precision, measured now on this machine; "
            "a resumed grid's wall includes the pause; runs from before FLOPs were counted are "
            "left out)"
        )
        return
    cols = ["grid", "row_label", "column_key", "seed", "debias", "setting"]
    if "dataset.world_seed" in frame:  # the replicate's world (or, on data from disk, split)
        frame = frame.rename(columns={"dataset.world_seed": "world"})
        cols.insert(3, "world")
    cols += [c for c in ("recall@15", "ndcg@15", "recall@25", "ndcg@25") if c in frame]
    click.echo(
        tabulate(frame[cols].values.tolist(), headers=cols, tablefmt="github", floatfmt=".4f")
    )


@cli.group()
def init() -> None:
    """Start something of your own from benchkit's templates."""


@init.command(name="plugin", short_help="Write a new plugin package with its tests.")
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="The folder to write (new; default: ./NAME).",
)
def init_plugin(name: str, out: str | None) -> None:
    """Write the plugin package NAME — a backbone NAME and a strategy NAME_penalty, its tests,
    its pyproject.toml and the contract reference — ready to install and run."""
    from benchkit.scaffold import write_plugin

    kinds = cli.catalogue()["kinds"]
    taken = {row[0] for kind in ("backbones", "strategies") for row in kinds[kind]}
    path = write_plugin(name, out or name, taken)
    click.echo(f"wrote the plugin package {name} to {path}; next:")
    click.echo(f"  pip install -e {path}")
    click.echo(f"  pytest {path}")
    click.echo(f"  benchkit run --backbone {name} --debias {name}_penalty --preset tiny")


@cli.command(name="list", short_help="List installed backbones, strategies, and the rest.")
@click.argument(
    "kind",
    type=click.Choice(KIND_NAMES),
)
def list_(kind: str) -> None:
    """List the installed backbones, strategies, datasets, protocols, metrics or executors; the
    one used when none is named is marked."""
    rows = [list(row) for row in cli.catalogue()["kinds"][kind]]
    default = DEFAULTS.get(kind)
    if kind == "executors":
        rows.insert(0, ["auto", "benchkit.executors", AUTO_EXECUTOR])
    for row in rows:
        if row[0] == default:
            row[2] = f"{row[2]} (the default)" if row[2] else "the default"
    click.echo(tabulate(rows, headers=["name", "plugin", "description"], tablefmt="plain"))


# What a run or a grid uses when no name is given (the options' own defaults).
DEFAULTS = {
    "backbones": RunSpec.backbone,
    "strategies": RunSpec.debias,
    "protocols": RunSpec.protocol,
    "datasets": "synth",
    "executors": "auto",
}
AUTO_EXECUTOR = "process (one run per core, up to 4) on a CPU with several cores, else local"


@cli.command(short_help="Installed plugins and what each registered.")
def plugins() -> None:
    """Installed plugins, their versions and what each registered; plugins that failed to load."""
    from benchkit.plugins import get_plugins

    cli.add_plugin_commands()  # a plugin's broken command is one of its failures
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
    """Console-script entry (``benchkit``, ``python -m benchkit``): the plugins' commands are
    added when needed (:class:`BenchkitGroup`); a Ctrl-C at any moment is one line (exit 130)."""
    import sys

    from benchkit.interrupts import watch_interrupts

    try:
        with watch_interrupts():
            cli(prog_name="benchkit")
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
