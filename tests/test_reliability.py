"""Hostile plugins, careless input, corrupt files: the command line answers in one line, never with
a traceback, and never lets one bad part take the others down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchkit.cli import cli
from benchkit.plugins import load_plugins

TINY = ["--preset", "tiny", "--epochs", "1", "-q"]


def write_dist(
    root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]
) -> Path:
    """A distribution as pip leaves it: modules and a .dist-info with entry points."""
    root.mkdir(parents=True, exist_ok=True)
    for mod, source in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[benchkit]\n{eps}\n")
    return root


def benchkit(args: list[str], site: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """The console script in a fresh process, with an extra site folder on the path."""
    environ = {**os.environ, **env}
    if site is not None:
        environ["PYTHONPATH"] = f"{site}{os.pathsep}{environ.get('PYTHONPATH', '')}"
    return subprocess.run(
        [sys.executable, "-c", "from benchkit.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )


HIJACKER = """
    from benchkit import hookimpl
    from benchkit_plugins.backbones.random_scorer import Chance

    class Impostor(Chance):
        name = "cmvae"
        description = "not CMVAE"

    @hookimpl
    def register_backbones(register):
        register(Impostor)
"""


def test_a_plugin_cannot_take_a_built_in_name(tmp_path):
    site = write_dist(tmp_path / "site", "evil", {"aaa": "evil_mod"}, {"evil_mod": HIJACKER})
    res = benchkit(["plugins"], site)
    assert res.returncode == 0
    failed = res.stdout.split("failed to load:")[1]
    assert "aaa (evil 1.0)" in failed and "backbone name 'cmvae'" in failed
    listed = res.stdout.split("failed to load:")[0]
    assert "cmvae" in listed and "backbone cmvae" in listed  # the built-in still owns it
    ran = benchkit(["run", "--backbone", "cmvae", *TINY, "--json"], site)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["hparams"]["backbone"]["variant"] == "paper"


def test_an_entry_point_named_like_a_built_in_is_refused_alone(tmp_path):
    site = write_dist(tmp_path / "site", "evil", {"cmvae": "evil_mod"}, {"evil_mod": HIJACKER})
    res = benchkit(["plugins"], site)
    failed = res.stdout.split("failed to load:")[1]
    assert "cmvae (evil 1.0): entry-point name 'cmvae' is already taken by benchkit" in failed
    ran = benchkit(["run", "--backbone", "cmvae", *TINY], site)
    assert ran.returncode == 0, ran.stderr


def test_a_plugin_that_exits_at_import_is_contained(tmp_path):
    site = write_dist(
        tmp_path / "site",
        "quitter",
        {"quitter": "quit_mod"},
        {"quit_mod": "import sys\nsys.exit(3)"},
    )
    res = benchkit(["list", "backbones"], site)
    assert res.returncode == 0 and "cmvae" in res.stdout
    res = benchkit(["plugins"], site)
    assert "quitter (quitter 1.0): SystemExit: 3" in res.stdout


def test_a_plugin_cannot_replace_a_command(tmp_path):
    source = """
        import click
        from benchkit import hookimpl

        @click.command(name="run")
        def run():
            print("hijacked")

        @hookimpl
        def register_commands(cli):
            cli.add_command(run)
    """
    site = write_dist(tmp_path / "site", "cmd", {"cmd": "cmd_mod"}, {"cmd_mod": source})
    res = benchkit(["run", *TINY, "--json"], site)
    assert res.returncode == 0 and "hijacked" not in res.stdout
    json.loads(res.stdout)
    assert "tried to replace the command(s) run" in benchkit(["plugins"], site).stdout


def test_a_plugin_printing_at_import_leaves_json_pure(tmp_path):
    source = 'print("hello from a chatty plugin")\n'
    site = write_dist(tmp_path / "site", "chatty", {"chatty": "chatty_mod"}, {"chatty_mod": source})
    res = benchkit(["run", *TINY, "--json"], site)
    assert res.returncode == 0
    json.loads(res.stdout)  # nothing but the JSON object
    assert "hello from a chatty plugin" in res.stderr


def test_every_installed_plugin_declares_its_hyperparameters_ranges(plugins):
    from benchkit.testing import check_hparams

    kinds = (plugins.backbones, plugins.strategies, plugins.protocols)
    for registry in kinds:
        for name in registry.names():
            obj = registry.get(name)
            if hasattr(obj, "defaults"):
                check_hparams(obj)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["lr=-1"], "hyperparameter 'lr' must be > 0"),
        (["latent_dim=0"], "hyperparameter 'latent_dim' must be ≥ 1"),
        (["batch_size=0"], "hyperparameter 'batch_size' must be ≥ 2"),
        (["dropout=2"], "hyperparameter 'dropout' must be in [0, 1)"),
        (["margin=-5"], "hyperparameter 'margin' must be ≥ 0"),
        (["variant=best"], "hyperparameter 'variant' must be one of paper, reference"),
        (["protocol.tie=random"], "hyperparameter 'tie' must be one of"),
    ],
)
def test_bad_hyperparameters_fail_in_one_line(sets, message):
    args = ["run", "--preset", "tiny", "-q"]
    for item in sets:
        args += ["--set", item]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert res.output.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--world", "taste_strength="], "taste_strength takes a finite number"),
        (["--world", "n_music=2.5"], "n_music takes an integer"),
        (["--world", "split=[0.5,0.5,0.5]"], "split must be positive fractions summing to 1"),
        (["--world", "popularity_range=[5,1]"], "popularity_range must be [low, high]"),
        (["--world", "taste_strength=1e308"], "beyond any sensible scale"),
        (["--world", "n_music=2000000000"], "synthetic world too large"),
        (["--world", "n_uploaders=99999999999999999999"], "beyond any sensible scale"),
        (["--device", "meta"], "unknown device 'meta'"),
        (["--threads", "1177902"], "1177902 is not in the range 1<=x<=1024"),
    ],
)
def test_hostile_options_fail_in_one_line(tmp_path, args, message):
    # found by tests/test_fuzz.py: a traceback, a silent NaN, a segfault, a memory error
    res = CliRunner().invoke(
        cli,
        ["run", "--preset", "tiny", "-b", "random", "-q", *args],
        env={"BENCHKIT_CACHE": str(tmp_path)},
    )
    assert res.exit_code in (1, 2) and message in res.output, res.output
    assert "Traceback" not in res.output


def test_a_huge_seed_fails_in_one_line():
    res = CliRunner().invoke(cli, ["run", "--preset", "tiny", "--seed", "99999999999999999999"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_loading_without_entry_points_still_has_the_essentials():
    ps = load_plugins(entry_points=False)
    assert "none" in ps.strategies and "local" in ps.executors


# -- keys that never mix different numbers ----------------------------------------------------


def test_threads_enter_the_key(tmp_path):
    """OMP_NUM_THREADS=1 and 2 used to give different numbers under one key."""
    keys = {}
    for n in ("1", "2"):
        res = benchkit(["run", *TINY, "--backbone", "cmvbr", "--json"], OMP_NUM_THREADS=n)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        keys[n] = (out["key"], out["training"]["threads"])
    assert keys["1"][1] == 1 and keys["2"][1] == 2 and keys["1"][0] != keys["2"][0]


# -- the store ------------------------------------------------------------------------------


GRIDS = Path(__file__).parent / "grids"


def test_a_run_shared_by_two_grids_belongs_to_both(tmp_path):
    from benchkit.experiments.driver import run_grid
    from benchkit.experiments.grid import load_grid
    from benchkit.experiments.store import Store
    from benchkit.spec import RunSpec

    a = tmp_path / "a.toml"
    text = (GRIDS / "tiny_figure.toml").read_text()
    a.write_text(text)
    b = tmp_path / "b.toml"
    b.write_text(text.replace('name = "tiny_figure"', 'name = "other_figure"'))
    spec = RunSpec(preset="tiny", epochs=1)
    first = run_grid(load_grid(a), spec, str(tmp_path / "out"), quiet=True)
    second = run_grid(load_grid(b), spec, str(tmp_path / "out"), quiet=True)
    assert second.ran == 0 and second.skipped == first.ran
    store = Store(tmp_path / "out", read_only=True)
    assert len(store.frame("tiny_figure")) == len(store.frame("other_figure")) == first.ran


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is an empty file, not a results store"),
        (b"this is not sqlite at all" * 100, "is not a readable results store"),
        ("sqlite-truncated", "is not a readable results store"),
        ("sqlite-foreign", "an SQLite file of something else"),
    ],
)
def test_a_bad_store_is_refused_in_one_line_before_anything_trains(tmp_path, content, message):
    import sqlite3

    out = tmp_path / "out"
    out.mkdir()
    path = out / "results.sqlite"
    if content == "sqlite-foreign":
        with sqlite3.connect(path) as con:
            con.execute("CREATE TABLE photos (id INTEGER)")
    elif content == "sqlite-truncated":
        with sqlite3.connect(path) as con:
            con.execute("CREATE TABLE runs (key TEXT, x BLOB)")
            con.executemany(
                "INSERT INTO runs VALUES (?, ?)", [(str(i), b"x" * 5000) for i in range(50)]
            )
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    res = CliRunner().invoke(
        cli, ["experiment", str(GRIDS / "tiny_figure.toml"), *TINY, "--out", str(out)]
    )
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert path.read_bytes() == before  # never reset


def test_a_read_only_store_can_be_read(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli, ["experiment", str(GRIDS / "tiny_figure.toml"), *TINY, "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    for p in [out, *out.iterdir()]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        res = CliRunner().invoke(cli, ["results", "--out", str(out)])
        assert res.exit_code == 0 and "tiny_figure" in res.output
    finally:
        for p in [out, *out.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_outputs_stay_inside_out_and_bad_outs_are_named(tmp_path):
    evil = tmp_path / "evil.toml"
    evil.write_text(
        (GRIDS / "tiny_figure.toml").read_text().replace('"tiny_figure"', '"../../evil"')
    )
    res = CliRunner().invoke(cli, ["experiment", str(evil), *TINY, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "must be a file name" in res.output
    assert not list(tmp_path.parent.glob("evil.*"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    res = CliRunner().invoke(
        cli, ["experiment", str(GRIDS / "tiny_figure.toml"), *TINY, "--out", str(a_file)]
    )
    assert res.exit_code == 1 and "is a file, not a folder" in res.output


def test_export_creates_its_folder_and_flattens_the_record(tmp_path):
    import pandas as pd

    out = tmp_path / "out"
    assert (
        CliRunner()
        .invoke(cli, ["experiment", str(GRIDS / "tiny_figure.toml"), *TINY, "--out", str(out)])
        .exit_code
        == 0
    )
    target = tmp_path / "new" / "deeper" / "runs.csv"
    res = CliRunner().invoke(cli, ["results", "--out", str(out), "--export", str(target)])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(target)
    assert "hp.kl_distill.weight" in frame and frame["hp.kl_distill.weight"].dtype.kind == "f"
    assert "training.epochs_run" in frame and "spec.seed" in frame


# -- a failed run is recorded and the grid goes on --------------------------------------------


def test_a_failed_run_is_recorded_and_the_grid_goes_on(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(
        'name = "g"\nkind = "table"\nmetrics = ["recall@25"]\ntest_sets = ["given"]\n'
        '[[rows]]\nlabel = "diverges"\nbackbone = "cmvae"\ndebias = "none"\n'
        "set = { lr = 1e30 }\n"
        '[[rows]]\nlabel = "fine"\nbackbone = "cmvae"\ndebias = "none"\n'
    )
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["experiment", str(grid), *TINY, "--out", str(out)])
    assert res.exit_code == 1 and "1 run(s) of g failed" in res.output
    assert "| diverges |" in res.output and "failed" in res.output
    assert "Traceback" not in res.output
    listed = CliRunner().invoke(cli, ["results", "--out", str(out), "--failures"])
    assert "diverged" in listed.output


# -- bad grids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rows = 5", "rows must be a non-empty list of tables"),
        ('metrics = "recall@25"', "metrics must be a non-empty list of strings"),
        ('test_sets = "diverse"', "test_sets must be a non-empty list of strings"),
        ("metrics = []", "metrics must be a non-empty list of strings"),
        ("rows = []", "rows must be a non-empty list of tables"),
    ],
)
def test_bad_table_grids(tmp_path, text, message):
    from benchkit.errors import ConfigError
    from benchkit.experiments.grid import load_grid

    base = {
        "rows": '[[rows]]\nlabel = "a"\nbackbone = "cmvae"\ndebias = "none"',
        "metrics": 'metrics = ["recall@25"]',
        "test_sets": 'test_sets = ["given"]',
    }
    key = text.split(" ")[0]
    base[key] = text
    body = 'name = "g"\nkind = "table"\n' + base["metrics"] + "\n" + base["test_sets"] + "\n"
    body += base["rows"] + "\n"
    path = tmp_path / "g.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_grid(path)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        ('x = { values = ["a", 1], set = "kl_distill.weight" }', "x.values must be a non-empty"),
        ('x = { values = [0.5], test_set = "ratio:{y}" }', "may only use {x}"),
    ],
)
def test_bad_figure_grids(tmp_path, x, message):
    from benchkit.errors import ConfigError
    from benchkit.experiments.grid import load_grid

    path = tmp_path / "f.toml"
    path.write_text(
        f'name = "f"\nkind = "figure"\nmetrics = ["recall@25"]\n{x}\n'
        '[[series]]\nlabel = "a"\nbackbone = "cmvae"\ndebias = "none"\nset = { margin = 0.1 }\n'
    )
    with pytest.raises(ConfigError, match=message):
        load_grid(path)
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_grid(path)
    path.write_text(
        'name = "f"\nkind = "table"\nmetrics = ["recall@25"]\n[[rows]]\nlabel = "a"\n'
        'backbone = "cmvae"\ndebias = "none"\nset = "lr=0.1"\n'
    )
    with pytest.raises(ConfigError, match="set must be a table"):
        load_grid(path)


# -- bad data ---------------------------------------------------------------------------------


def test_bad_data_files_are_named(tmp_path, tiny, plugins):
    from benchkit.data.io import open_dataset
    from benchkit.data.reference import write_reference
    from benchkit.data.tables import write_tables
    from benchkit.errors import DataError

    tab = write_tables(tiny, tmp_path / "tab")
    (tab / "music_ids.txt").write_bytes(b"\xff\xfe\n" * tiny.n_music)
    with pytest.raises(DataError, match="not UTF-8 text"):
        open_dataset(plugins, tab)

    ref = write_reference(tiny, tmp_path / "ref")
    d = ref / "data_matching"
    header = d / "visual_features_resnet_V.npy"
    raw = bytearray(header.read_bytes())
    text = raw[:128].decode("latin1")
    rows = str(tiny.n_videos)
    raw[:128] = text.replace(f"({rows}, ", f"({rows}000000, ").ljust(128)[:128].encode("latin1")
    header.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="header promises an array of shape"):
        open_dataset(plugins, ref)

    ref = write_reference(tiny, tmp_path / "ref2")
    (ref / "data_matching" / "benchkit" / "genre_names.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        open_dataset(plugins, ref)

    ref = write_reference(tiny, tmp_path / "ref3")
    (ref / "data_matching" / "benchkit" / "video_uploader.npy").unlink()
    np_save = __import__("numpy").save
    np_save(ref / "data_matching" / "user_prior_mean.npy", __import__("numpy").ones(3))
    with pytest.raises(DataError, match="holds 3 numbers"):
        open_dataset(plugins, ref)

    ref = write_reference(tiny, tmp_path / "ref4")
    np_save(ref / "data_pgc" / "train.npy", __import__("numpy").arange(7))
    with pytest.raises(DataError, match="expected rows of \\[video, music\\] pairs"):
        open_dataset(plugins, ref)

    ref = write_reference(tiny, tmp_path / "ref5")
    folder = ref / "data_matching" / "music_features.npy"
    folder.unlink()
    folder.mkdir()
    with pytest.raises(DataError, match="is not a file"):
        open_dataset(plugins, ref)


def test_pgc_of_another_width_is_refused_at_load(tmp_path, tiny, plugins):
    from benchkit.data.io import open_dataset
    from benchkit.data.reference import write_reference
    from benchkit.errors import DataError

    ref = write_reference(tiny, tmp_path / "ref")
    import numpy as np

    np.save(
        ref / "data_pgc" / "mv_video_resnet_features.npy",
        np.ones((tiny.pgc.video_features.shape[0], 7), np.float32),
    )
    with pytest.raises(DataError, match="PGC video features have 7 dimensions"):
        open_dataset(plugins, ref)
    res = CliRunner().invoke(cli, ["data", "validate", str(ref)])
    assert res.exit_code == 1


def test_matching_on_real_data_names_the_way_to_ask(tiny, plugins):
    import numpy as np

    from benchkit.api import run
    from benchkit.errors import DataError

    bare = tiny.with_splits(tiny.splits)
    bare.truth = None
    with pytest.raises(DataError, match="--test-set matching:COLUMN"):
        run("cmvae", dataset=bare, test_set="matching", plugins=plugins)
    out = run("cmvae", dataset=bare, test_set="matching:views", epochs=1, plugins=plugins)
    assert out.metrics["recall@25"] > 0
    bad = tiny.with_splits(tiny.splits)
    bad.video_columns = {**tiny.video_columns, "views": np.full(tiny.n_videos, np.nan)}
    with pytest.raises(DataError, match="NaN or inf"):
        run("cmvae", dataset=bad, test_set="matching", plugins=plugins)


# -- damaged caches are rebuilt -------------------------------------------------------------


def test_damaged_caches_are_rebuilt(tmp_path, monkeypatch, plugins):
    from benchkit.api import run
    from benchkit.data.synth import make_world
    from benchkit.sources import DATASETS
    from benchkit.teacher import _MEMO

    monkeypatch.setenv("BENCHKIT_CACHE", str(tmp_path))
    world = make_world("tiny", seed=0)
    npz = next((tmp_path / "synth").glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:1000])  # truncated
    said: list[str] = []
    again = make_world("tiny", seed=0, log=said.append)
    assert again.fingerprint == world.fingerprint and "damaged" in said[0]
    DATASETS.clear()
    over = {"kl_distill.teacher_steps": 20}
    run("cmvae", "kl_distill", preset="tiny", epochs=1, overrides=over, plugins=plugins)
    record = next(p for p in (tmp_path / "teachers").glob("*.json") if ".eval-" not in p.name)
    record.write_text("")
    _MEMO.clear()
    out = run("cmvae", "kl_distill", preset="tiny", epochs=1, overrides=over, plugins=plugins)
    assert out.training["strategies"]["kl_distill"]["teacher"]["pgc_val_recall@25"] > 0
    assert record.read_text()  # rewritten
