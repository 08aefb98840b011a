"""The results store: one SQLite file, one row per finished run, keyed by content.

A run's key hashes everything that decides its numbers — the dataset fingerprint (after the test set
and the data setting), the method, every resolved hyperparameter, the seed, the threads, the
protocol hash — so a rerun of a grid skips what is done and an interrupted grid resumes where it
stopped. A run belongs to every grid that asked for it (``grid_runs``: many grids can share one
run). A run that failed is kept apart with its error (``failures``) and retried by the next rerun.
Only the driver process writes, one transaction per run; workers return records. The per-test-video
ranks are kept (compressed) for paired significance tests. Read it with pandas via
:meth:`Store.frame`.

A store is checked when opened — an empty, truncated, foreign or damaged file is refused in one line,
never reset; an older layout is upgraded (:mod:`benchkit.experiments.layout`) — and a store in a
read-only place can still be read, its write-ahead log included. A record damaged inside an intact
file is skipped, counted and listed with the failures (a rerun of its grid runs it again); a write
that fails (a full disk) is one line, and the store keeps every run it held.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchkit.errors import DataError
from benchkit.experiments.layout import LAYOUT, has_log, inspect, private_copy, upgrade
from benchkit.interfaces import RankInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    backbone TEXT,
    debias TEXT,
    setting TEXT,
    test_set TEXT,
    seed INTEGER,
    protocol TEXT,
    protocol_hash TEXT,
    dataset_fingerprint TEXT,
    metrics TEXT,
    record TEXT,
    ranks BLOB,
    created TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS grid_runs (
    grid TEXT NOT NULL,
    key TEXT NOT NULL,
    row_label TEXT NOT NULL,
    column_key TEXT NOT NULL,
    PRIMARY KEY (grid, key, row_label, column_key)
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT NOT NULL,
    grid TEXT NOT NULL,
    row_label TEXT NOT NULL,
    column_key TEXT NOT NULL,
    error TEXT,
    created TEXT DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (key, grid, row_label, column_key)
);
"""
REQUIRED_COLUMNS = {"key", "metrics", "record", "ranks", "protocol_hash"}


def pack_ranks(ranks: RankInfo) -> bytes:
    arrays: dict[str, Any] = {
        "n_greater": ranks.n_greater.astype(np.int32),
        "n_equal": ranks.n_equal.astype(np.int32),
        "weights": ranks.weights,
        "meta": np.asarray([ranks.n_candidates]),
    }
    arrays.update({f"row:{k}": v.astype(np.float32) for k, v in ranks.per_row.items()})
    if ranks.clusters is not None:
        arrays["clusters"] = ranks.clusters.astype(np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def unpack_ranks(blob: bytes, tie_policy: str) -> RankInfo:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return RankInfo(
            n_greater=z["n_greater"].astype(np.int64),
            n_equal=z["n_equal"].astype(np.int64),
            weights=z["weights"],
            n_candidates=int(z["meta"][0]),
            tie_policy=tie_policy,
            per_row={k[4:]: z[k].astype(np.float64) for k in z.files if k.startswith("row:")},
            clusters=z["clusters"].astype(np.int64) if "clusters" in z.files else None,
        )


class Store:
    """``<out>/results.sqlite``; ``read_only`` opens an existing store for reading only."""

    def __init__(self, folder: Path | str, read_only: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "results.sqlite"
        self.read_only = read_only
        self._private: Path | None = None  # an upgraded copy a read-only store is read through
        self.damaged: dict[str, str] = {}  # run key → why its record cannot be read
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"--out {self.folder} is a file, not a folder; name a folder")
        if read_only:
            if not self.path.is_file():
                raise DataError(f"no results store in {self.folder} (run a grid with --out first)")
        else:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                probe = self.folder / ".benchkit-write-probe"
                probe.touch()
                probe.unlink()
            except OSError as exc:
                raise DataError(
                    f"cannot write in {self.folder} ({exc.strerror or exc}); choose another --out"
                ) from None
        self._check()

    # -- opening ---------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._private is not None:
            return sqlite3.connect(self._private, timeout=60)
        if self.read_only:
            flag = "mode=ro" if os.access(self.folder, os.W_OK) else "immutable=1"
            return sqlite3.connect(f"file:{self.path}?{flag}", uri=True, timeout=60)
        return sqlite3.connect(self.path, timeout=60)

    def _check(self) -> None:
        """Refuse an empty, foreign, newer or damaged file in one line; create the schema, or
        upgrade an older layout (read-only: in a private copy) — before anything trains."""
        if self.path.exists() and self.path.stat().st_size == 0:
            raise DataError(
                f"{self.path} is an empty file, not a results store; move it away (nothing "
                f"is reset silently)"
            )
        try:
            if self.read_only and not os.access(self.folder, os.W_OK) and has_log(self.path):
                self._private = private_copy(self.path)  # SQLite cannot replay the log here
            con = self._connect()
            try:
                status = con.execute("PRAGMA quick_check").fetchone()
                if status is None or status[0] != "ok":
                    raise DataError(f"{self.path} is damaged ({status[0] if status else '?'})")
                found = inspect(con, self.path, SCHEMA, REQUIRED_COLUMNS)
                if self.read_only and not found.current and self._private is None:
                    con.close()
                    self._private = private_copy(self.path)
                    con = self._connect()
                if not self.read_only:
                    con.execute("PRAGMA journal_mode=WAL")
                if not found.current or (not self.read_only and found.version != LAYOUT):
                    upgrade(con, found, SCHEMA)
            finally:
                con.close()
        except sqlite3.OperationalError as exc:
            raise DataError(f"cannot open the results store {self.path} ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a readable results store ({exc})") from None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reading, closed when the block ends: one left to the garbage
        collector would checkpoint the write-ahead log whenever it happened to be collected."""
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A write that fails — a full disk, a folder gone — is one line;
        SQLite rolls the transaction back, so the store keeps every run it held."""
        try:
            con = self._connect()
            try:
                with con:
                    yield con
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise DataError(
                f"cannot write the results store {self.path} ({exc}); it keeps every run stored "
                f"before: free space (or fix the folder) and run the same command again to resume"
            ) from None

    def _select(self, columns: str, keys: list[str]) -> Iterator[tuple[Any, ...]]:
        """``SELECT columns`` for the rows of ``keys`` (in chunks: SQLite caps bound parameters)."""
        with self._reading() as con:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT {columns} FROM runs WHERE key IN ({','.join('?' * len(chunk))})"
                yield from con.execute(q, chunk)

    # -- writing ---------------------------------------------------------------------------------

    def done(self, keys: list[str]) -> set[str]:
        """The keys whose run is stored intact (a damaged record is run again)."""
        return set(self.get(keys))

    def link(self, grid: str, keys_jobs: list[tuple[str, Any]]) -> None:
        """Record that ``grid`` uses these (already stored) runs at these places."""
        with self._writing() as con:
            con.executemany(
                "INSERT OR IGNORE INTO grid_runs (grid, key, row_label, column_key) "
                "VALUES (?, ?, ?, ?)",
                [(grid, k, j.row, json.dumps(list(j.column))) for k, j in keys_jobs],
            )

    def put(self, key: str, grid: str, job: Any, record: dict[str, Any], ranks: RankInfo) -> None:
        """Store one finished run and its place in ``grid`` — in one transaction."""
        with self._writing() as con:
            con.execute(
                "INSERT OR REPLACE INTO runs (key, backbone, debias, setting, test_set, seed, "
                "protocol, protocol_hash, dataset_fingerprint, metrics, record, ranks) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    job.backbone,
                    job.debias,
                    job.setting,
                    job.test_set,
                    job.seed,
                    record["protocol"]["name"],
                    record["protocol"]["hash"],
                    record["dataset"]["fingerprint"],
                    json.dumps(record["metrics"]),
                    json.dumps(record),
                    pack_ranks(ranks),
                ),
            )
            con.execute(
                "INSERT OR IGNORE INTO grid_runs (grid, key, row_label, column_key) "
                "VALUES (?, ?, ?, ?)",
                (grid, key, job.row, json.dumps(list(job.column))),
            )
            con.execute("DELETE FROM failures WHERE key = ?", (key,))

    def fail(self, key: str, grid: str, job: Any, error: str) -> None:
        """Record that a run of ``grid`` failed, and why (a rerun tries it again)."""
        with self._writing() as con:
            con.execute(
                "INSERT OR REPLACE INTO failures (key, grid, row_label, column_key, error) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, grid, job.row, json.dumps(list(job.column)), error),
            )

    # -- reading ---------------------------------------------------------------------------------

    def get(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The stored runs of ``keys``; a damaged one is left out and noted in :attr:`damaged`."""
        out: dict[str, dict[str, Any]] = {}
        for key, metrics, record, ranks in self._select("key, metrics, record, ranks", keys):
            try:
                rec = json.loads(record)
                out[key] = {
                    "metrics": _metrics(metrics),
                    "record": rec,
                    "ranks": unpack_ranks(ranks, rec["protocol"]["params"]["tie"]),
                }
            except Exception as exc:  # any way a record can be damaged: JSON, zip, keys, types
                self.damaged[key] = damage(exc)
        return out

    def failures(self, keys: list[str]) -> dict[str, str]:
        """The error of each of ``keys`` that failed (and has not succeeded since)."""
        out: dict[str, str] = {}
        with self._reading() as con:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, error FROM failures WHERE key IN ({','.join('?' * len(chunk))})"
                out.update(dict(con.execute(q, chunk).fetchall()))
        return out

    def histories(
        self, grid: str | None = None, rows: tuple[str, ...] = ()
    ) -> list[tuple[str, list[dict[str, float]]]]:
        """(label, per-epoch history) of each run (of one grid; of the rows labelled exactly
        ``rows``, when given): the learning curves."""
        with self._reading() as con:
            q = (
                "SELECT g.grid, g.row_label, g.column_key, r.seed, r.record FROM runs r "
                "LEFT JOIN grid_runs g ON g.key = r.key"
            )
            where = (["g.grid = ?"] if grid else []) + (
                [f"g.row_label IN ({', '.join('?' * len(rows))})"] if rows else []
            )
            params = ((grid,) if grid else ()) + tuple(rows)
            found = con.execute(q + (" WHERE " + " AND ".join(where) if where else ""), params)
            out = []
            for g, row, column, seed, record in found.fetchall():
                try:
                    history = json.loads(record).get("history", [])
                except (TypeError, ValueError, AttributeError):
                    continue  # a damaged record (listed by failed_runs)
                place = _place(column)
                out.append((f"{row or g} {place} s{seed}".strip(), history))
            return out

    def failed_runs(self, grid: str | None = None) -> list[tuple[str, str, str, str]]:
        """(grid, row, column, error) of every recorded failure (of one grid), and of every
        damaged record."""
        with self._reading() as con:
            q = "SELECT grid, row_label, column_key, error FROM failures"
            rows = con.execute(q + (" WHERE grid = ?" if grid else ""), (grid,) if grid else ())
            failed = [(g, r, _place(c), e) for g, r, c, e in rows.fetchall()]
            q = (
                "SELECT g.grid, g.row_label, g.column_key, r.key FROM runs r "
                "LEFT JOIN grid_runs g ON g.key = r.key"
            )
            where = (" WHERE g.grid = ?" if grid else ""), ((grid,) if grid else ())
            places = con.execute(q + where[0], where[1]).fetchall()
        self.get([p[3] for p in places])
        return failed + [
            (
                g or "",
                r or "",
                _place(c),
                f"damaged record ({self.damaged[k]}); a rerun of the grid runs it again",
            )
            for g, r, c, k in places
            if k in self.damaged
        ]

    def frame(self, grid: str | None = None) -> pd.DataFrame:
        """All runs (of one grid) as a table: one row per run and place in a grid, one column per
        metric, and the run's record flattened (``hp.*``, ``training.*``, ``spec.*``, …)."""
        with self._reading() as con:
            q = (
                "SELECT g.grid, g.row_label, g.column_key, r.key, r.backbone, r.debias, r.setting, "
                "r.test_set, r.seed, r.protocol, r.protocol_hash, r.dataset_fingerprint, "
                "r.metrics, r.record, r.created FROM runs r LEFT JOIN grid_runs g ON g.key = r.key"
            )
            df = pd.read_sql_query(
                q + (" WHERE g.grid = ?" if grid else ""), con, params=(grid,) if grid else None
            )
        if df.empty:
            return df
        readable = []
        for i, (key, m, r) in enumerate(zip(df["key"], df["metrics"], df["record"], strict=True)):
            try:
                readable.append((i, _metrics(m), _flat_record(json.loads(r))))
            except Exception as exc:  # a damaged record: skipped, counted (self.damaged)
                self.damaged[key] = damage(exc)
        df = df.iloc[[i for i, _, _ in readable]].drop(columns=["metrics", "record"])
        df = df.reset_index(drop=True)
        if df.empty:
            return df
        metrics = pd.DataFrame([m for _, m, _ in readable])
        records = [r for _, _, r in readable]
        flat = pd.DataFrame(records)
        df["created"] = pd.to_datetime(df["created"])
        df["column_key"] = df["column_key"].map(
            lambda c: "/".join(json.loads(c)) if isinstance(c, str) else c
        )
        return pd.concat([df, metrics, flat], axis=1)


def _metrics(text: str) -> dict[str, float]:
    """A run's metrics, which must be a JSON object of numbers."""
    metrics = json.loads(text)
    if not isinstance(metrics, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()
    ):
        raise ValueError("its metrics are not a JSON object of numbers")
    return metrics


def damage(exc: BaseException) -> str:
    """How a record is damaged, in a few words."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}" + (f": {text[:120]}" if text else "")


def _place(column: str | None) -> str:
    try:
        return "/".join(json.loads(column)) if column else ""
    except (TypeError, ValueError):
        return str(column)


def _flat_record(record: dict[str, Any]) -> dict[str, Any]:
    """A run's record as flat columns: ``hp.<name>`` (backbone), ``hp.<strategy>.<name>``,
    ``spec.*``, ``training.*``, ``environment.*``, ``dataset.*``; lists and dicts as JSON text."""
    out: dict[str, Any] = {}
    hp = record.get("hparams", {})
    for k, v in hp.get("backbone", {}).items():
        out[f"hp.{k}"] = v
    for strategy, values in hp.get("strategies", {}).items():
        for k, v in values.items():
            out[f"hp.{strategy}.{k}"] = v
    for section in ("spec", "training", "environment", "dataset"):
        for k, v in record.get(section, {}).items():
            out[f"{section}.{k}"] = v
    return {k: json.dumps(v) if isinstance(v, (list, dict, tuple)) else v for k, v in out.items()}
