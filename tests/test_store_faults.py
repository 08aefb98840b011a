"""The results store under faults: a write-ahead log a read-only open must see, older and newer
layouts, a runs table missing columns, damaged records, a full disk (issue 30, item 5). The runs
are the chance scorer's on the tiny world: no training, a second each."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchkit.cli import cli
from benchkit.experiments.store import Store

ROW = '\n[[rows]]\nlabel = "{label}"\nbackbone = "random"\ndebias = "none"\n'
ROW_SEEDED = ROW + "set = {{ epochs = {seed} }}\n"


@contextlib.contextmanager
def sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection committed and closed when the block ends (Python's sqlite3 connections sit
    in reference cycles: left open, one would checkpoint the store whenever it is collected)."""
    con = sqlite3.connect(path)
    try:
        with con:
            yield con
    finally:
        con.close()


def grid(path: Path, n: int) -> Path:
    """A table grid of ``n`` chance rows (each with its own hyperparameters, so its own run)."""
    text = 'name = "g"\nkind = "table"\nmetrics = ["recall@25"]\ntest_sets = ["given"]\n'
    text += ROW.format(label="a")
    for i in range(1, n):
        text += ROW_SEEDED.format(label=f"r{i}", seed=100 + i)
    path.write_text(text)
    return path


def experiment(tmp_path: Path, n: int, out: Path) -> object:
    args = ["experiment", str(grid(tmp_path / f"g{n}.toml", n)), "--preset", "tiny", "-q"]
    return CliRunner().invoke(cli, [*args, "--out", str(out), "--executor", "local"])


def results(out: Path, *more: str) -> object:
    return CliRunner().invoke(cli, ["results", "--out", str(out), *more])


def test_a_read_only_store_sees_runs_still_in_its_write_ahead_log(tmp_path, monkeypatch):
    """A store opened read-only while its write-ahead log was not yet checkpointed showed "no
    runs": in a folder benchkit cannot write, SQLite opens it immutable and skips the log."""
    out = tmp_path / "o"
    assert experiment(tmp_path, 1, out).exit_code == 0
    # A writer that dies with its runs in the log (a kill -9, a power cut):
    code = f"""
        import os, sqlite3
        db = {str(out / "results.sqlite")!r}
        keep = sqlite3.connect(db)  # while it is open, closing the writer does not checkpoint
        keep.execute("SELECT count(*) FROM runs").fetchall()
        con = sqlite3.connect(db)
        con.execute("INSERT INTO runs SELECT 'another' || key, backbone, debias, setting, "
                    "test_set, seed, protocol, protocol_hash, dataset_fingerprint, metrics, "
                    "record, ranks, created FROM runs")
        con.execute("INSERT INTO grid_runs SELECT grid, 'another' || key, 'b', column_key "
                    "FROM grid_runs")
        con.commit()
        os._exit(0)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True)
    assert (out / "results.sqlite-wal").stat().st_size > 0
    real_access = os.access
    monkeypatch.setattr(  # a folder the user cannot write (as root every folder is writable)
        "benchkit.experiments.store.os.access",
        lambda p, mode: False if mode == os.W_OK and Path(p) == out else real_access(p, mode),
    )
    wal = (out / "results.sqlite-wal").read_bytes()
    frame = Store(out, read_only=True).frame("g")
    assert sorted(frame["row_label"]) == ["a", "b"]
    listed = results(out)
    assert listed.exit_code == 0 and "| g      | b " in listed.output
    assert (out / "results.sqlite-wal").read_bytes() == wal  # nothing written there


def old_layout(path: Path) -> None:
    """Turn a store into benchkit 0.1's layout: one grid per run, kept in ``runs``."""
    with sqlite(path) as con:
        con.executescript(
            """
            CREATE TABLE old AS SELECT r.*, g.grid, g.row_label, g.column_key
                FROM runs r JOIN grid_runs g ON g.key = r.key;
            DROP TABLE runs; DROP TABLE grid_runs; DROP TABLE failures;
            ALTER TABLE old RENAME TO runs;
            PRAGMA user_version = 0;
            """
        )


def test_an_older_layout_is_read_through_an_upgrade_and_upgraded_when_written(tmp_path):
    """A store of the old layout gave "no such table: grid_runs" as a traceback."""
    out = tmp_path / "o"
    assert experiment(tmp_path, 2, out).exit_code == 0
    old_layout(out / "results.sqlite")
    before = (out / "results.sqlite").read_bytes()
    listed = results(out)
    assert listed.exit_code == 0, listed.output
    assert "| g      | a " in listed.output and "| g      | r1 " in listed.output
    assert (out / "results.sqlite").read_bytes() == before  # read-only: upgraded in a copy
    res = experiment(tmp_path, 3, out)
    assert res.exit_code == 0, res.output
    with sqlite(out / "results.sqlite") as con:
        assert con.execute("PRAGMA user_version").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (3,)  # 2 kept, 1 new
        assert con.execute("SELECT count(*) FROM grid_runs").fetchone() == (3,)


def test_a_newer_layout_is_refused_naming_both_versions(tmp_path):
    out = tmp_path / "o"
    assert experiment(tmp_path, 1, out).exit_code == 0
    with sqlite(out / "results.sqlite") as con:
        con.execute("PRAGMA user_version = 7")
    for res in (results(out), experiment(tmp_path, 1, out)):
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert "written by a newer benchkit (store layout 7" in res.output
        assert "layouts up to 2" in res.output


def test_a_runs_table_missing_columns_is_upgraded_before_anything_trains(tmp_path):
    """A runs table lacking columns passed the check and failed only when the first run was
    stored, after training."""
    out = tmp_path / "o"
    out.mkdir()
    with sqlite(out / "results.sqlite") as con:
        con.execute(
            "CREATE TABLE runs (key TEXT PRIMARY KEY, metrics TEXT, record TEXT, ranks BLOB, "
            "protocol_hash TEXT)"
        )
    res = experiment(tmp_path, 2, out)
    assert res.exit_code == 0, res.output
    assert len(Store(out, read_only=True).frame("g")) == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    with sqlite(bad / "results.sqlite") as con:
        con.execute("CREATE TABLE grid_runs (grid TEXT NOT NULL, key TEXT NOT NULL)")
    res = experiment(tmp_path, 1, bad)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "table 'grid_runs' lacks column 'row_label', which an upgrade cannot add" in res.output


def test_damaged_records_are_skipped_counted_listed_and_run_again(tmp_path):
    """A damaged record or ranks blob made every read of the store a traceback."""
    out = tmp_path / "o"
    assert experiment(tmp_path, 4, out).exit_code == 0
    with sqlite(out / "results.sqlite") as con:
        keys = dict(con.execute("SELECT row_label, key FROM grid_runs").fetchall())
        con.execute("UPDATE runs SET record = '{not json' WHERE key = ?", (keys["r1"],))
        con.execute("UPDATE runs SET ranks = x'504b0304dead' WHERE key = ?", (keys["r2"],))
        con.execute("UPDATE runs SET metrics = '[1, 2]' WHERE key = ?", (keys["r3"],))
    listed = results(out)
    assert listed.exit_code == 0 and "Traceback" not in listed.output
    assert "| g      | a " in listed.output and "| g      | r1 " not in listed.output
    assert "2 damaged record(s) skipped" in listed.output  # r1, r3: ranks are not listed here
    failures = results(out, "--failures").output
    for row in ("r1", "r2", "r3"):
        assert f"| g      | {row}    | given/auto | damaged record" in failures
    assert "JSONDecodeError" in failures and "a rerun of the grid runs it again" in failures
    store = Store(out, read_only=True)
    assert set(store.get(list(keys.values()))) == {keys["a"]}
    assert sorted(store.damaged) == sorted(keys[r] for r in ("r1", "r2", "r3"))
    again = ["experiment", str(tmp_path / "g4.toml"), "--preset", "tiny", "--out", str(out)]
    res = CliRunner().invoke(cli, [*again, "--executor", "local"])
    assert res.exit_code == 0 and "3 runs trained, 1 taken from the store" in res.output
    assert "damaged" not in results(out).output


def test_a_full_disk_is_one_line_and_the_store_keeps_its_runs(tmp_path):
    """A full disk raised an sqlite I/O traceback. Here the file-size limit of the process is the
    store's size, so that the first write that grows a file fails as on a full disk."""
    out = tmp_path / "o"
    assert experiment(tmp_path, 1, out).exit_code == 0
    before = Store(out, read_only=True).frame("g")
    size = (out / "results.sqlite").stat().st_size
    code = f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({size}, {size}))
        from benchkit.cli import main
        sys.argv = ["benchkit", "experiment", {str(grid(tmp_path / "big.toml", 6))!r}, "--preset",
                    "tiny", "-q", "--out", {str(out)!r}, "--executor", "local"]
        main()
    """
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith("Error: cannot write the results store")
    assert "it keeps every run stored before" in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    with sqlite(out / "results.sqlite") as con:
        assert con.execute("PRAGMA quick_check").fetchone() == ("ok",)
    after = Store(out, read_only=True).frame("g")
    assert set(before["key"]) <= set(after["key"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--curves", "c.txt"], "c.txt: write a .png or .pdf file"),
        (["--export", "runs.xlsx"], "write a .csv, .parquet or .jsonl file"),
    ],
)
def test_bad_output_names_of_results_are_one_line(tmp_path, args, message):
    """`--curves c.txt` raised matplotlib's ValueError as a traceback."""
    out = tmp_path / "o"
    assert experiment(tmp_path, 1, out).exit_code == 0
    res = results(out, *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_tune_out_onto_a_file_is_one_line(tmp_path):
    """`tune --out FILE` raised FileExistsError as a traceback."""
    pytest.importorskip("optuna")
    target = tmp_path / "a-file"
    target.write_text("x")
    res = CliRunner().invoke(
        cli, ["tune", "--preset", "tiny", "--trials", "1", "--epochs", "1", "--out", str(target)]
    )
    assert res.exit_code == 1 and "is a file, not a folder" in res.output
    assert "Traceback" not in res.output


def test_a_table_written_on_a_full_disk_is_one_line_and_the_old_one_stays(tmp_path):
    from benchkit.errors import DataError
    from benchkit.files import write_text

    target = tmp_path / "table.md"
    write_text(target, "old")
    pid = os.fork()
    if pid == 0:  # a child with a file-size limit below what it writes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))
        try:
            write_text(target, "x" * 10_000)
        except DataError as exc:
            os._exit(0 if "cannot write" in str(exc) and "it is unchanged" in str(exc) else 3)
        os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
