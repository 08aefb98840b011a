"""The README's command-line synopsis is the command line: same commands, same options.

A newcomer copies options from the README; an option renamed in code but not in the README (or
the other way round) is a bug this test catches."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from benchkit.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _synopsis() -> list[str]:
    """The synopsis block's commands, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## Command line", 1)[1].split("\n\n", 2)[1]
    commands: list[str] = []
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("benchkit "):
            commands.append(stripped)
        elif stripped:
            commands[-1] += " " + stripped
    return commands


def _command(path: list[str]) -> click.Command:
    ctx = click.Context(cli)
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group), path
        found = command.get_command(ctx, name)
        assert found is not None, f"README names `benchkit {' '.join(path)}`, which does not exist"
        command = found
    return command


def _options(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(n for n in (*param.opts, *param.secondary_opts) if n.startswith("--"))
    return names - {"--help"}


def _documented(line: str) -> tuple[list[list[str]], set[str]]:
    """(the command paths a synopsis line covers, the long options it documents)."""
    words = line.split()[1:]
    paths: list[list[str]] = [[words[0]]]
    if words[0] in ("data", "init"):  # groups: `data synth`, `init plugin`
        paths = [[words[0], words[1]]]
    elif len(words) > 2 and words[1] == "|":  # `fig3 | fig4 (…)`: the names before the options
        names = itertools.takewhile(lambda w: not w.startswith(("(", "[", "-")), words)
        paths = [[w] for w in names if re.fullmatch(r"[a-z0-9]+", w)]
    options = set(re.findall(r"--[a-z][a-z0-9-]*", line))
    inherited = re.search(r"the options of (\w+) but ([^\]\)]*)", line)
    if inherited:
        but = set(re.findall(r"--[a-z][a-z0-9-]*", inherited.group(2)))
        options = (options - but) | (_options(_command([inherited.group(1)])) - but)
    return paths, options


def test_every_command_is_in_the_synopsis():
    covered = {tuple(p) for line in _synopsis() for p in _documented(line)[0]}
    ctx = click.Context(cli)
    listed: set[tuple[str, ...]] = set()
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            listed.update((name, sub) for sub in command.list_commands(ctx))
        else:
            listed.add((name,))
    assert listed == covered


@pytest.mark.parametrize("line", _synopsis(), ids=lambda line: " ".join(line.split()[1:3]))
def test_synopsis_line_matches_the_command(line):
    paths, documented = _documented(line)
    for path in paths:
        actual = _options(_command(path))
        assert documented == actual, (
            f"benchkit {' '.join(path)}: README lacks {sorted(actual - documented)}, "
            f"names {sorted(documented - actual)} that do not exist"
        )


def test_short_aliases_exist():
    for line in _synopsis():
        for long_name, short in re.findall(r"(--[a-z-]+)\|(-[a-z])\b", line):
            command = _command(_documented(line)[0][0])
            option = next(p for p in command.params if long_name in getattr(p, "opts", ()))
            assert short in option.opts, (line, short)


def test_top_level_help_is_not_truncated():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    commands = result.output.split("Commands:", 1)[1]
    assert "..." not in commands


def test_every_environment_variable_is_documented():
    root = README.parent
    used = set()
    for folder in ("benchkit", "plugins", "tests"):
        for path in (root / folder).rglob("*.py"):
            used.update(re.findall(r"\bBENCHKIT_[A-Z_]*[A-Z]\b", path.read_text(encoding="utf-8")))
    table = set(
        re.findall(r"^\| `(BENCHKIT_[A-Z_]+)` \|", README.read_text(encoding="utf-8"), re.M)
    )
    used.discard("BENCHKIT_COMPLETE")  # click's completion switch is spelt _BENCHKIT_COMPLETE
    assert used <= table, f"README's environment table lacks {sorted(used - table)}"
