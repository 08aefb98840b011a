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
    "--preset",
    default="small",
    show_default=True,
    help="Synthetic-world size: tiny, small or paper.",
)
@click.option(
    "--world-seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the synthetic world.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=1234,
    show_default=True,
    help="Seed of initialisation and batching.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Cap on training epochs (default: the backbone's); early stopping still applies.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Stop after this many epochs without a better validation score.",
)
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
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or log lines.")
def run(
    backbone: str,
    debias: str,
    preset: str,
    world_seed: int,
    seed: int,
    epochs: int | None,
    patience: int,
    protocol: str,
    split: str,
    sets: tuple[str, ...],
    device: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Train one method on the synthetic world and evaluate it."""
    from benchkit.api import run as run_method

    overrides = parse_set(sets)
    result = run_method(
        backbone,
        debias,
        preset=preset,
        world_seed=world_seed,
        seed=seed,
        epochs=epochs,
        patience=patience,
        protocol=protocol,
        split=split,
        overrides=overrides,
        device=device,
        quiet=quiet,
        log=_log(quiet),
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
        return
    ks = sorted({int(k.split("@")[1]) for k in result.metrics})
    names = sorted({k.split("@")[0] for k in result.metrics})
    rows = [[k, *(result.metrics.get(f"{n}@{k}", float("nan")) for n in names)] for k in ks]
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
    click.echo(
        tabulate(
            rows,
            headers=["K", *(n.upper() if n == "ndcg" else n.capitalize() for n in names)],
            floatfmt=".4f",
            tablefmt="github",
        )
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
