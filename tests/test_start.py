"""A fast start: `benchkit --help` and `benchkit list …` import neither torch, pandas, plotting nor
the plugins (what they need of the plugins comes from the catalogue), and say the same as a full
load. Timings are measured by benchmarks/start.py, never asserted here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_reliability import write_dist  # a distribution as pip leaves it

HEAVY = ("torch", "pandas", "matplotlib", "numpy", "benchkit_plugins", "benchkit.interfaces")
PROBE = """
import sys
from benchkit.cli import main
sys.argv = ["benchkit", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY:" + ",".join(heavy))
"""


def benchkit(*args: str, cache: Path, site: Path | None = None) -> tuple[str, list[str]]:
    """(stdout without the probe line, the heavy modules the command imported)."""
    env = {**os.environ, "BENCHKIT_CACHE": str(cache)}
    if site is not None:
        env["PYTHONPATH"] = f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}"
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    out, _, heavy = done.stdout.rpartition("HEAVY:")
    return out, [m for m in heavy.strip().split(",") if m]


def test_help_imports_nothing_heavy(tmp_path):
    out, heavy = benchkit("--help", cache=tmp_path)
    assert "Commands:" in out and "recommend" in out
    assert heavy == []


@pytest.mark.parametrize("kind", ["backbones", "strategies", "protocols", "executors"])
def test_list_answers_from_the_catalogue_as_a_full_load_would(tmp_path, kind):
    first, heavy = benchkit("list", kind, cache=tmp_path)  # loads the plugins, writes it
    assert "cmvae" in first or "paper" in first or "local" in first or "none" in first
    again, heavy = benchkit("list", kind, cache=tmp_path)
    assert again == first
    assert heavy == []


def test_a_changed_plugin_is_loaded_again(tmp_path):
    source = """
        from benchkit import hookimpl
        from benchkit_plugins.backbones.random_scorer import Chance

        @hookimpl
        def register_backbones(register):
            register(type("Tick", (Chance,), {{"name": "tick", "description": "{}"}}))
    """
    site = write_dist(
        tmp_path / "site",
        "tick",
        {"tick": "tick_mod"},
        {"tick_mod": source.format("first version")},
    )
    module = site / "tick_mod.py"
    cache = tmp_path / "cache"
    assert "first version" in benchkit("list", "backbones", cache=cache, site=site)[0]
    assert benchkit("list", "backbones", cache=cache, site=site)[1] == []
    module.write_text(textwrap.dedent(source.format("second version, edited")))
    out, heavy = benchkit("list", "backbones", cache=cache, site=site)
    assert "second version, edited" in out and "first version" not in out
    assert "benchkit_plugins" in heavy  # the edit was noticed: the plugins were loaded again


GREET = """
    import click
    from benchkit import hookimpl

    @click.command(name="greet", short_help="Say hello from a plugin.")
    def greet():
        click.echo("hello from greet")

    @hookimpl
    def register_commands(cli):
        cli.add_command(greet)
"""


def test_a_plugin_command_is_listed_and_runs(tmp_path):
    site = write_dist(tmp_path / "site", "greet", {"greet": "greet_mod"}, {"greet_mod": GREET})
    cache = tmp_path / "cache"
    first, _ = benchkit("--help", cache=cache, site=site)
    assert "greet" in first and "Say hello from a plugin." in first
    again, heavy = benchkit("--help", cache=cache, site=site)
    assert again == first and heavy == []  # remembered: no plugin imported for --help
    ran, _ = benchkit("greet", cache=cache, site=site)
    assert "hello from greet" in ran


def test_python_dash_m_benchkit(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchkit", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "Usage: benchkit" in done.stdout


def test_the_shortcuts_stay_true(plugins):
    """What --help and the catalogue assume of benchkit itself."""
    own = [
        name
        for name, info in plugins.info.items()
        if info.distribution == "benchkit" and plugins.pm.get_plugin(name) is not None
    ]
    for name in own:  # benchkit's own plugins add no commands, so --help need not import them
        impls = plugins.pm.hook.register_commands.get_hookimpls()
        assert all(impl.plugin_name != name for impl in impls), name
