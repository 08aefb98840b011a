"""Hostile plugins at run time: a strategy that writes into the data it was given, exits, raises,
interrupts, hands back the wrong shapes or kills its worker. Each fails its own row, named, in one
line; no other row's numbers change by a bit; the grid goes on and exits non-zero; Ctrl-C at any
moment is one line and leaves the store consistent (issue 30, items 1, 2 and 6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchkit.cli import cli

TINY = ["--preset", "tiny", "--epochs", "1", "-q"]

HOSTILE = """
    import os
    import signal
    import sys

    import numpy as np
    import torch

    from benchkit import hookimpl
    from benchkit.interfaces import DatasetProvider, LossTerm, Strategy, Weights


    class WriteArray(Strategy):
        name = "write_array"

        def prepare(self, dataset, ctx):
            t = dataset.splits["train"]
            dataset.video_music[t] = dataset.video_music[t][::-1]


    class SetItem(Strategy):
        name = "set_item"

        def prepare(self, dataset, ctx):
            dataset.splits["train"] = dataset.splits["train"][:5]


    class SetAttr(Strategy):
        name = "set_attr"

        def prepare(self, dataset, ctx):
            dataset.video_music = dataset.video_music[::-1].copy()


    class Unlock(Strategy):
        name = "unlock"

        def prepare(self, dataset, ctx):
            a = dataset.video_music
            a.setflags(write=True)
            a[:] = a[::-1].copy()


    class ThroughTensor(Strategy):
        name = "through_tensor"

        def prepare(self, dataset, ctx):
            t = torch.from_numpy(dataset.video_music)
            t[:] = t.flip(0).clone()


    class Declared(WriteArray):
        name = "declared"
        writes_dataset = True


    class Exits(Strategy):
        name = "exits"

        def extra_loss(self, batch, out):
            sys.exit(0)


    class Interrupts(Strategy):
        name = "interrupts"

        def prepare(self, dataset, ctx):
            raise KeyboardInterrupt


    class Raises(Strategy):
        name = "raises"

        def weights(self, batch):
            return self._helper()

        def _helper(self):
            raise RuntimeError("boom")


    class WrongWeights(Strategy):
        name = "wrong_weights"

        def weights(self, batch):
            return Weights(anchor=torch.ones(batch.size, 1))


    class WrongTerm(Strategy):
        name = "wrong_term"

        def extra_loss(self, batch, out):
            return {"x": LossTerm(out.scores.diagonal()[:, None])}


    class Killer(Strategy):
        name = "killer"

        def prepare(self, dataset, ctx):
            os.kill(os.getpid(), signal.SIGKILL)


    class CtrlC(Strategy):
        name = "ctrl_c"

        def prepare(self, dataset, ctx):
            os.killpg(os.getpgid(0), signal.SIGINT)  # the terminal's Ctrl-C: the whole group


    class Detector(DatasetProvider):
        name = "detector"

        def detect(self, path):
            raise OSError("cannot look")

        def load(self, **options):
            raise AssertionError


    STRATEGIES = [WriteArray, SetItem, SetAttr, Unlock, ThroughTensor, Declared, Exits,
                  Interrupts, Raises, WrongWeights, WrongTerm, Killer, CtrlC]


    @hookimpl
    def register_strategies(register):
        for cls in STRATEGIES:
            register(cls)
"""

DETECTOR = """
    from hostile_mod import Detector
    from benchkit import hookimpl


    @hookimpl
    def register_datasets(register):
        register(Detector())
"""


@pytest.fixture
def hostile(install_plugin):
    install_plugin("hostile", {"hostile": "hostile_mod"}, {"hostile_mod": HOSTILE})


def grid_file(path: Path, rows: list[tuple[str, str, dict[str, float]]]) -> Path:
    text = 'name = "g"\nkind = "table"\nmetrics = ["recall@25"]\ntest_sets = ["given"]\n'
    for label, debias, sets in rows:
        text += f'\n[[rows]]\nlabel = "{label}"\nbackbone = "cmvbr"\ndebias = "{debias}"\n'
        if sets:
            text += "set = { " + ", ".join(f"{k} = {v}" for k, v in sets.items()) + " }\n"
    path.write_text(text)
    return path


def run_local(path: Path, out: Path, executor: str = "local"):
    """The grid at ``path`` on the tiny world, one epoch a run (``process``: one worker)."""
    from benchkit.experiments.driver import run_grid
    from benchkit.experiments.grid import load_grid
    from benchkit.spec import RunSpec

    spec = RunSpec(preset="tiny", epochs=1)
    return run_grid(load_grid(path), spec, str(out), executor=executor, jobs=1, quiet=True)


MUTATIONS = {
    "write_array": "assignment destination is read-only; the dataset's arrays are shared",
    "set_item": "'mappingproxy' object does not support item assignment",
    "set_attr": "dataset.video_music cannot be set",
    "unlock": "changed the dataset it shares with other runs (video_music)",
    "through_tensor": "changed the dataset it shares with other runs (video_music)",
}


def test_a_strategy_that_mutates_the_dataset_changes_no_other_row(tmp_path, hostile):
    """Recall 0.3133 against 0.2783: a strategy's prepare reversed the training labels in place
    and every later row of the grid trained on them. Now its row fails, named, and the rows after
    it are bitwise those of a grid without it."""
    clean = run_local(
        grid_file(tmp_path / "clean.toml", [("a", "none", {}), ("b", "none", {"margin": 0.2})]),
        tmp_path / "clean",
    )
    rows = [("a", "none", {})]
    rows += [(f"bad {name}", name, {}) for name in MUTATIONS]
    rows += [("declared", "declared", {}), ("b", "none", {"margin": 0.2})]
    hostile_run = run_local(grid_file(tmp_path / "hostile.toml", rows), tmp_path / "hostile")
    assert len(hostile_run.failures) == len(MUTATIONS)
    errors = sorted(hostile_run.failures.values())
    for name, message in MUTATIONS.items():
        assert any(name in e and message in e for e in errors), (name, errors)
    assert any("strategy 'write_array' of plugin 'hostile', in prepare" in e for e in errors)
    for key in clean.keys:  # a and b: the same keys in both grids
        mine, theirs = clean.results[key], hostile_run.results[key]
        assert mine["metrics"] == theirs["metrics"]  # bitwise: float equality
        np.testing.assert_array_equal(mine["ranks"].n_greater, theirs["ranks"].n_greater)
        np.testing.assert_array_equal(mine["ranks"].n_equal, theirs["ranks"].n_equal)
    declared = [k for k in hostile_run.keys if k in hostile_run.results]
    assert len(declared) == 3  # a, declared (wrote its own copy), b


def test_sys_exit_in_a_strategy_fails_its_row_and_the_grid_exits_non_zero(tmp_path, hostile):
    """sys.exit(0) inside a strategy's loss used to end the grid with exit code 0, no table and
    no failure recorded."""
    rows = [("exits", "exits", {}), ("interrupts", "interrupts", {}), ("fine", "none", {})]
    path = grid_file(tmp_path / "g.toml", rows)
    res = CliRunner().invoke(cli, ["experiment", str(path), *TINY, "--out", str(tmp_path / "o")])
    assert res.exit_code == 1, res.output
    assert "2 run(s) of g failed" in res.output and "Traceback" not in res.output
    assert "| fine " in res.output
    listed = CliRunner().invoke(cli, ["results", "--out", str(tmp_path / "o"), "--failures"])
    assert "strategy 'exits' of plugin 'hostile', in extra_loss" in listed.output
    assert "called sys.exit(0)" in listed.output
    assert "strategy 'interrupts' of plugin 'hostile', in prepare" in listed.output
    assert "raised KeyboardInterrupt" in listed.output


@pytest.mark.parametrize(
    ("debias", "message"),
    [
        ("raises", "strategy 'raises' of plugin 'hostile', in weights (hostile_mod.py:"),
        ("exits", "strategy 'exits' of plugin 'hostile', in extra_loss (hostile_mod.py:"),
        ("wrong_weights", "in weights: returned weights of shape (1024, 1); expected (1024,)"),
        ("wrong_term", "anchor term 'x' has shape (1024, 1); expected (1024,): one value per pair"),
    ],
)
def test_a_faulty_plugin_in_run_is_one_line(hostile, debias, message):
    """A plugin's exception or wrong shapes in `benchkit run` used to print a traceback."""
    res = CliRunner().invoke(cli, ["run", "--backbone", "cmvbr", "--debias", debias, *TINY])
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output
    assert res.output.count("\n") == 1


def test_debug_shows_the_traceback(hostile, monkeypatch):
    monkeypatch.setenv("BENCHKIT_DEBUG", "0")
    args = ["run", "--backbone", "cmvbr", "--debias", "raises", *TINY]
    res = CliRunner().invoke(cli, ["--debug", *args])
    assert res.exit_code == 1
    assert "Traceback" in res.output and 'raise RuntimeError("boom")' in res.output
    assert res.output.rstrip().splitlines()[-1].startswith("Error: strategy 'raises'")
    monkeypatch.setenv("BENCHKIT_DEBUG", "1")
    assert "Traceback" in CliRunner().invoke(cli, args).output


def test_a_dataset_provider_whose_detect_raises_is_named(tmp_path, install_plugin):
    """`DatasetProvider.detect` raising used to surface as a traceback."""
    install_plugin(
        "detect",
        {"detect": "detect_mod"},
        {"hostile_mod": HOSTILE, "detect_mod": DETECTOR},
    )
    res = CliRunner().invoke(cli, ["run", "--data", str(tmp_path), "-q"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "dataset provider 'detector' of plugin 'detect', in detect" in res.output
    assert "raised OSError: cannot look" in res.output


def test_a_killed_worker_fails_its_row_and_a_new_worker_goes_on(tmp_path, hostile):
    """kill -9 of a process worker ended the grid with BrokenProcessPool and recorded nothing."""
    rows = [("killed", "killer", {}), ("a", "none", {}), ("b", "none", {"margin": 0.2})]
    path = grid_file(tmp_path / "g.toml", rows)
    run = run_local(path, tmp_path / "o", executor="process")
    assert len(run.results) == 2 and len(run.failures) == 1
    (error,) = run.failures.values()
    assert "the worker process running it was killed by SIGKILL" in error


def test_a_worker_over_its_memory_budget_is_replaced_and_the_rows_stay_the_same(
    tmp_path, monkeypatch
):
    """Over a paper-preset Table 3 two long-lived workers grew past 10 GB each (beside the
    driver's 4.5 GB copy of the data) and the OOM killer took two runs. Now the driver drops its
    copy once the grid is planned, and a worker holding more than BENCHKIT_WORKER_MEMORY after a
    run is replaced before the next: each run is recorded, with the numbers of a kept worker."""
    from benchkit.experiments.driver import run_grid
    from benchkit.experiments.grid import load_grid
    from benchkit.sources import DATASETS
    from benchkit.spec import RunSpec

    path = grid_file(tmp_path / "g.toml", [("a", "none", {}), ("b", "none", {"margin": 0.2})])

    def grid(out: str) -> tuple[object, list[str]]:
        lines: list[str] = []
        spec = RunSpec(preset="tiny", epochs=1)
        run = run_grid(
            load_grid(path),
            spec,
            str(tmp_path / out),
            executor="process",
            jobs=1,
            quiet=True,
            log=lines.append,
        )
        return run, lines

    kept, kept_log = grid("kept")
    assert not DATASETS._items  # planned, then handed to the workers
    monkeypatch.setenv("BENCHKIT_WORKER_MEMORY", "0.001")  # 1 MiB: every worker is over it
    replaced, replaced_log = grid("replaced")
    assert not any("replaced after a run" in line for line in kept_log)
    assert any("2 workers replaced after a run" in line for line in replaced_log)
    assert not replaced.failures and len(replaced.results) == 2
    for key, result in kept.results.items():
        assert replaced.results[key]["record"]["metrics"] == result["record"]["metrics"]


def test_the_worker_memory_budget_reads_gib_and_refuses_nonsense(monkeypatch):
    from benchkit.errors import ConfigError
    from benchkit.options import worker_memory

    monkeypatch.delenv("BENCHKIT_WORKER_MEMORY", raising=False)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert worker_memory(2) == max(2**31, total // 3)
    monkeypatch.setenv("BENCHKIT_WORKER_MEMORY", "6")
    assert worker_memory(2) == 6 * 2**30
    for bad in ("six", "0", "-1"):
        monkeypatch.setenv("BENCHKIT_WORKER_MEMORY", bad)
        with pytest.raises(ConfigError, match="BENCHKIT_WORKER_MEMORY"):
            worker_memory(2)


def _ctrl_c_as_in_a_terminal() -> None:
    """A suite started in the background (`cmd &` in a script) inherits SIGINT ignored, and so
    would its children: give them a terminal's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def benchkit_process(args: list[str], tmp_path: Path, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", "from benchkit.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        preexec_fn=_ctrl_c_as_in_a_terminal,
        **popen,  # type: ignore[arg-type]
    )


def test_ctrl_c_while_the_plugins_load_is_one_line(tmp_path):
    """Ctrl-C in the first seconds printed a 60-line KeyboardInterrupt. Here it lands, every
    time, while torch is being imported (an audit hook sends it) by a run (`--help` and `list`
    no longer import torch)."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        def hook(event, args):
            if event == "import" and args[0] == "torch":
                os.kill(os.getpid(), signal.SIGINT)
        sys.addaudithook(hook)
        from benchkit.cli import main
        sys.argv = ["benchkit", "run", "--preset", "tiny", "--epochs", "1", "-q"]
        main()
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    assert res.returncode == 130, res.stderr
    assert res.stderr == "Error: interrupted\n" and res.stdout == ""


def test_ctrl_c_during_a_grid_is_one_line_and_the_store_stays_consistent(tmp_path, hostile):
    """The terminal's Ctrl-C reaches the driver and its workers at once: workers leave it to the
    driver, which stops them and says how to resume; the runs finished before are intact."""
    from benchkit.experiments.store import Store

    rows = [("first", "none", {}), ("stop", "ctrl_c", {}), ("never", "none", {"margin": 0.2})]
    path = grid_file(tmp_path / "g.toml", rows)
    args = ["experiment", str(path), *TINY, "--out", "o", "--executor", "process", "--jobs", "1"]
    proc = benchkit_process(args, tmp_path, start_new_session=True)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "Error: interrupted; the runs finished so far are kept in o: run the same command again "
        "to resume"
    ]
    left = subprocess.run(
        ["ps", "-o", "pid=,args=", "-g", str(proc.pid)], capture_output=True, text=True
    ).stdout
    workers = [line for line in left.splitlines() if "spawn_main" in line]
    assert not workers, left  # no worker left behind
    store = Store(tmp_path / "o", read_only=True)
    frame = store.frame("g")
    assert list(frame["row_label"]) == ["first"] and not store.damaged


RAY_UNREACHABLE = ["--executor", "ray", "--address", "127.0.0.1:1"]


def test_an_unreachable_ray_address_fails_within_the_stated_time(tmp_path):
    """`--executor ray --address 127.0.0.1:1` used to retry forever with no message of ours."""
    pytest.importorskip("ray")
    path = grid_file(tmp_path / "g.toml", [("a", "none", {})])
    res = CliRunner().invoke(
        cli,
        [*["experiment", str(path), *TINY, "--out", str(tmp_path / "o")], *RAY_UNREACHABLE],
        env={"BENCHKIT_RAY_TIMEOUT": "3"},
    )
    assert res.exit_code == 2, res.output
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in res.output
    assert "within 3 s" in res.output and "Traceback" not in res.output


def test_a_plugin_keyboard_interrupt_in_a_worker_process_is_its_fault(tmp_path, hostile):
    path = grid_file(tmp_path / "g.toml", [("i", "interrupts", {}), ("e", "exits", {})])
    run = run_local(path, tmp_path / "o", executor="process")
    errors = sorted(run.failures.values())
    assert len(errors) == 2, errors
    assert "called sys.exit(0)" in errors[0] and "raised KeyboardInterrupt" in errors[1]
