"""Third-party plugins: the example package, the tutorial, the hook reference, grids."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchkit.experiments.driver import run_grid
from benchkit.experiments.grid import load_grid
from benchkit.hookspecs import reference_markdown
from benchkit.plugins import load_plugins
from benchkit.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import tutorial  # noqa: E402


def test_hook_reference_matches_the_specs():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    section = doc.split("<!-- hooks:start -->\n", 1)[1].split("<!-- hooks:end -->", 1)[0]
    assert section == reference_markdown()


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """``pip install ./plugins/example`` into a throw-away folder (no network: no build isolation)."""
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT / "plugins/example"),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return target


def _cli(site, *args):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-m", "benchkit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_installed_example_is_listed_and_runs(example_site):
    listed = _cli(example_site, "plugins")
    assert listed.returncode == 0
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("example "))
    assert "benchkit-example" in line and "0.1.0" in line
    assert "backbone infonce" in line and "strategy popularity_penalty" in line
    ran = _cli(
        example_site,
        "run",
        "--backbone",
        "infonce",
        "--debias",
        "popularity_penalty",
        "--preset",
        "tiny",
        "--epochs",
        "3",
        "-q",
        "--json",
    )
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out["method"]["backbone"] == "infonce" and out["metrics"]["recall@25"] > 25 / 101


def test_example_method_in_a_grid(example_site, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    importlib.invalidate_caches()
    plugins = load_plugins()
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(
        'name = "third_party"\nkind = "table"\nmetrics = ["recall@25"]\n'
        '[[rows]]\nlabel = "InfoNCE"\nbackbone = "infonce"\ndebias = "popularity_penalty"\n'
        "set = { epochs = 2 }\n"
        '[[rows]]\nlabel = "CMVAE"\nbackbone = "cmvae"\ndebias = "none"\nset = { epochs = 2 }\n'
    )
    run = run_grid(
        load_grid(grid_file),
        RunSpec(preset="tiny"),
        str(tmp_path / "out"),
        quiet=True,
        plugins=plugins,
    )
    assert run.ran == 2
    cell = run.summary[("InfoNCE", ("given", "auto"), "recall@25")]
    assert cell.n == 1 and cell.mean > 0


def test_tutorial_followed_literally(tmp_path):
    outputs = tutorial.follow(tmp_path, install_target=tmp_path / "site")
    plugins_listing, run_output = outputs[1], outputs[2]
    assert "mine" in plugins_listing and "backbone mine" in plugins_listing
    assert "mine + none" in run_output and "Recall" in run_output
    assert "1 passed" in outputs[-1]
