"""Equal tuning: searched on validation only, resumable, every bad space named."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import benchkit.api
import benchkit.evaluate
from benchkit.cli import cli
from benchkit.errors import ConfigError
from benchkit.spec import RunSpec
from benchkit.tune import read_space, tune

pytest.importorskip("optuna")
SPEC = RunSpec(preset="tiny", epochs=2, threads=1, overrides={"latent_dim": 16})
COMPLETE = (
    "SELECT t.number, v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
    "WHERE t.state = 'COMPLETE'"
)


def test_the_test_split_is_scored_once_at_the_end(tmp_path, monkeypatch, plugins):
    scored: list[str] = []
    real = benchkit.evaluate.evaluate

    def counting(method, dataset, protocol, metrics, split="test", *args, **kwargs):
        scored.append(split)
        return real(method, dataset, protocol, metrics, split, *args, **kwargs)

    monkeypatch.setattr(benchkit.evaluate, "evaluate", counting)
    monkeypatch.setattr(benchkit.api, "evaluate", counting)
    res = tune(SPEC, trials=3, sampler="random", out=tmp_path, plugins=plugins)
    assert scored.count("test") == 1 and scored[-1] == "test"
    assert scored.count("val") >= 3 * 2  # every epoch of every trial selects on validation
    assert res.trials["complete"] + res.trials["pruned"] == 3
    assert set(res.params) == {"lr", "weight_decay", "dropout", "margin"}
    assert res.test is not None and res.test.split == "test"
    assert res.set_line().startswith("--set dropout=")


def test_a_killed_search_resumes_without_repeating_trials(tmp_path, plugins):
    code = (
        "from benchkit.spec import RunSpec; from benchkit.tune import tune; "
        "tune(RunSpec(preset='tiny', epochs=2, threads=1, overrides={'latent_dim': 16}), "
        f"trials=8, sampler='random', out={str(tmp_path)!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    db = tmp_path / "tune.sqlite"
    deadline, finished = time.time() + 300, 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    finished = con.execute(
                        "SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'"
                    ).fetchone()[0]
            except sqlite3.OperationalError:
                finished = 0
            if finished >= 2:
                break
        time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= finished < 8
    with sqlite3.connect(db) as con:
        before = con.execute(COMPLETE + " ORDER BY t.number").fetchall()
    res = tune(SPEC, trials=8, sampler="random", out=tmp_path, plugins=plugins, evaluate_test=False)
    assert res.trials["complete"] + res.trials["pruned"] == 8
    with sqlite3.connect(db) as con:
        after = dict(con.execute(COMPLETE).fetchall())
    for number, value in before:  # the finished trials are kept as they were, not rerun
        assert after[number] == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[space]\nsize = { log = [1e-4, 1e-2] }\n", "unknown parameter 'size'"),
        ("[space]\nlr = { log = [1e-2, 1e-4] }\n", "an empty or invalid range"),
        ("[space]\nlr = { log = [0.0, 1e-2] }\n", "an empty or invalid range"),
        ("[space]\nmargin = { uniform = [-1.0, 0.2] }\n", "'margin' must be ≥ 0"),
        ("[space]\nlr = { sometimes = [1, 2] }\n", "a search space is one of"),
        ("nothing = 1\n", "needs a [space] table"),
    ],
)
def test_bad_spaces_fail_in_one_line(tmp_path, plugins, text, message):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        tune(SPEC, trials=1, space=read_space(path), out=tmp_path, plugins=plugins)
    assert message in str(err.value)


def test_a_metric_the_protocol_does_not_report(tmp_path, plugins):
    with pytest.raises(ConfigError, match="metric 'map@25' is not one the protocol"):
        tune(SPEC, trials=1, metric="map@25", out=tmp_path, plugins=plugins)


def test_the_command_line_prints_a_ready_set_line(tmp_path):
    res = CliRunner().invoke(
        cli,
        [
            "tune",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--trials",
            "2",
            "--sampler",
            "random",
            "--set",
            "latent_dim=16",
            "--out",
            str(tmp_path),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "best parameters: --set dropout=" in res.output and "Recall" in res.output


def test_a_grid_gives_every_row_the_same_budget(tmp_path, plugins):
    from benchkit.experiments.driver import run_grid
    from benchkit.experiments.grid import load_grid
    from benchkit.report.tables import render

    grid_file = tmp_path / "g.toml"
    grid_file.write_text(
        'name = "g"\nkind = "table"\nmetrics = ["recall@25"]\ntest_sets = ["given"]\n'
        'tune = { trials = 2, sampler = "random" }\n'
        '[[rows]]\nlabel = "CMVAE"\nbackbone = "cmvae"\ndebias = "none"\nset = { latent_dim = 16 }\n'
        '[[rows]]\nlabel = "random"\nbackbone = "random"\ndebias = "none"\n'
    )
    grid = load_grid(grid_file)
    run = run_grid(
        grid, RunSpec(preset="tiny", epochs=1), str(tmp_path), quiet=True, plugins=plugins
    )
    assert (
        "tuned on the validation split of a tuning world with the same budget: 2 trials"
        in render(grid, run.summary)
    )
    tuned = {r["record"]["hparams"]["backbone"].get("lr") for r in run.results.values()}
    assert 1e-3 not in tuned  # CMVAE ran with its tuned learning rate, not the default
