"""The results store's layout: which version a file has, upgrading older ones, and reading a store
that cannot be written.

The layout is numbered in SQLite's ``user_version``: 1 is benchkit 0.1's (one grid per run, kept in
``runs``), 2 the current one (``runs`` + ``grid_runs`` + ``failures``; stores written by benchkit
0.2 before the number was kept say 0 and are recognised by their tables). An older layout is
upgraded in place when the store is opened for writing — before anything trains — and read
through an upgraded private copy when it is opened read-only; a newer one is refused, naming both
versions. A private copy is also how a read-only store in a folder benchkit cannot write is read
when its write-ahead log still holds runs (SQLite would otherwise not see them).
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from benchkit.errors import DataError

LAYOUT = 2
NAMES = {1: "benchkit 0.1", 2: "benchkit 0.2"}


@cache
def expected_columns(schema: str) -> dict[str, dict[str, tuple[str, bool]]]:
    """table → column → (declared type, can be added later) of ``schema``, as SQLite reads it."""
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(schema)
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: {
                r[1]: (r[2], not r[3] and not r[5])  # notnull, pk: cannot be added to a table
                for r in con.execute(f"PRAGMA table_info({t})")
            }
            for t in tables
        }
    finally:
        con.close()


@dataclass(frozen=True)
class Found:
    """What an opened store holds: its layout number and what an upgrade would add."""

    layout: int
    version: int  # as stamped in the file (0: not stamped, benchkit 0.1 and early 0.2)
    missing_tables: tuple[str, ...]
    missing_columns: tuple[tuple[str, str, str], ...]  # (table, column, type)

    @property
    def current(self) -> bool:
        return self.layout == LAYOUT and not self.missing_tables and not self.missing_columns


def inspect(con: sqlite3.Connection, path: Path, schema: str, required: set[str]) -> Found:
    """Recognise the layout of the store open on ``con``; refuse, in one line, a file that is not
    a results store, a newer layout, or one whose missing columns cannot be added."""
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = int(con.execute("PRAGMA user_version").fetchone()[0])
    if version > LAYOUT:
        raise DataError(
            f"{path} was written by a newer benchkit (store layout {version}; this benchkit "
            f"reads layouts up to {LAYOUT}, {NAMES[LAYOUT]}); upgrade benchkit to read it"
        )
    expected = expected_columns(schema)
    if "runs" in tables:
        cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
        if not cols >= required:
            raise DataError(
                f"{path} is not a benchkit results store (its table 'runs' lacks "
                f"{', '.join(sorted(required - cols))})"
            )
    elif tables and not tables & {"grid_runs", "failures"}:
        raise DataError(
            f"{path} is an SQLite file of something else (tables {', '.join(sorted(tables))}), "
            f"not a benchkit results store"
        )
    runs_columns = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    old = {"grid", "row_label", "column_key"} <= runs_columns and "grid_runs" not in tables
    layout = version or (1 if old else LAYOUT)
    missing_columns = []
    for table in sorted(tables & set(expected)):
        have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        for column, (kind, addable) in expected[table].items():
            if column in have:
                continue
            if not addable:
                raise DataError(
                    f"{path}: table {table!r} lacks column {column!r}, which an upgrade cannot "
                    f"add; it is not a store of any benchkit layout ({NAMES[LAYOUT]} is {LAYOUT})"
                )
            missing_columns.append((table, column, kind))
    missing_tables = tuple(sorted(set(expected) - tables))
    return Found(layout, version, missing_tables, tuple(missing_columns))


def upgrade(con: sqlite3.Connection, found: Found, schema: str) -> None:
    """Bring the store open on ``con`` to the current layout, in one transaction."""
    with con:
        for table, column, kind in found.missing_columns:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        for statement in schema.split(";"):
            if statement.strip():
                con.execute(statement)
        if found.layout == 1:  # 0.1 kept one grid per run in ``runs``: move it across
            con.execute(
                "INSERT OR IGNORE INTO grid_runs (grid, key, row_label, column_key) "
                "SELECT grid, key, row_label, column_key FROM runs WHERE grid IS NOT NULL"
            )
        con.execute(f"PRAGMA user_version = {LAYOUT}")


def private_copy(path: Path) -> Path:
    """A copy of the store at ``path`` (its write-ahead log included) in a temporary folder that
    lives as long as this process: what a read-only store is read through when it needs an
    upgrade, or holds a log SQLite cannot replay in place."""
    folder = Path(tempfile.mkdtemp(prefix="benchkit-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    copy = folder / path.name
    try:
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + "-wal")
        if wal.is_file():
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc})") from None
    return copy


def has_log(path: Path) -> bool:
    """Whether the store's write-ahead log holds pages not yet copied into the store."""
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size > 0
    except OSError:
        return False
