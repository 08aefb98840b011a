"""What a user without a clone gets from benchkit itself: a new plugin package that installs, runs
and tests itself, and the built-in grids to list and copy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from benchkit.cli import cli
from benchkit.experiments.grid import BUILTIN, load_grid


@pytest.fixture(scope="module")
def myplug(tmp_path_factory):
    """`benchkit init plugin myplug`, then its package installed into a throw-away folder."""
    root = tmp_path_factory.mktemp("init")
    res = CliRunner().invoke(cli, ["init", "plugin", "myplug", "--out", str(root / "myplug")])
    assert res.exit_code == 0, res.output
    assert "pip install -e" in res.output
    site = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(site), str(root / "myplug")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return root / "myplug", site


def _run(site, *args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=900, cwd=cwd
    )


def test_the_new_plugin_is_installed_under_its_own_names_and_runs(myplug):
    package, site = myplug
    assert (package / "src" / "benchkit_myplug" / "plugin.py").is_file()
    assert (package / "tests" / "test_myplug.py").is_file()
    assert (
        "### `Strategy.weights(batch: Batch) -> Weights | None`"
        in (package / "CONTRACT.md").read_text()
    )
    listed = _run(site, "-m", "benchkit", "plugins")
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("myplug "))
    assert "benchkit-myplug" in line and "backbone myplug, strategy myplug_penalty" in line
    ran = _run(
        site, "-m", "benchkit", "run", "-b", "myplug", "-d", "myplug_penalty", "--preset", "tiny"
    )
    assert ran.returncode == 0, ran.stderr
    assert "myplug + myplug_penalty" in ran.stdout
    args = ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"]
    collected = _run(site, *args, cwd=package)
    assert "3 tests collected" in collected.stdout, collected.stdout + collected.stderr


@pytest.mark.slow
def test_the_new_plugin_passes_its_own_tests(myplug):
    package, site = myplug
    done = _run(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=package)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("My-Plug", "use lower-case letters, digits and '_'"),
        ("cmvae", "'cmvae' is taken; choose another name"),
        ("ips", "'ips' is taken"),
    ],
)
def test_a_plugin_name_that_cannot_work_is_refused(tmp_path, name, message):
    res = CliRunner().invoke(cli, ["init", "plugin", name, "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and message in res.output
    assert not (tmp_path / "p").exists()


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "taken").mkdir()
    res = CliRunner().invoke(cli, ["init", "plugin", "fresh", "--out", str(tmp_path / "taken")])
    assert res.exit_code == 2 and "exists; name a new folder" in res.output


def test_built_in_grids_are_listed_and_copied(tmp_path, monkeypatch):
    res = CliRunner().invoke(cli, ["experiment", "--list"])
    assert res.exit_code == 0
    for name in BUILTIN:
        assert any(line.startswith(name + " ") for line in res.stdout.splitlines()), name
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["experiment", "--copy", "headroom"])
    assert res.exit_code == 0, res.output
    assert load_grid(tmp_path / "headroom.toml").jobs == load_grid("headroom").jobs
    res = CliRunner().invoke(cli, ["experiment", "--copy", "headroom"])
    assert res.exit_code == 2 and "exists" in res.output  # never overwritten
    res = CliRunner().invoke(cli, ["experiment", "--copy", "nosuch"])
    assert res.exit_code == 2 and "no built-in grid 'nosuch'" in res.output
    res = CliRunner().invoke(cli, ["experiment"])
    assert res.exit_code == 2 and "give a GRID" in res.output
