"""The results store: one SQLite file, one row per finished run, keyed by content.

A run's key hashes everything that decides its numbers — the dataset fingerprint (after the test set
and the data setting), the method, every resolved hyperparameter, the seed and the protocol hash —
so a rerun of a grid skips what is done and an interrupted grid resumes where it stopped. Only the
driver process writes, one transaction per run; workers return records. The per-test-video ranks are
kept (compressed) for paired significance tests. Read it with pandas via :meth:`Store.frame`.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchkit.interfaces import RankInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    grid TEXT,
    row_label TEXT,
    column_key TEXT,
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
)
"""


def pack_ranks(ranks: RankInfo) -> bytes:
    arrays: dict[str, Any] = {
        "n_greater": ranks.n_greater.astype(np.int32),
        "n_equal": ranks.n_equal.astype(np.int32),
        "weights": ranks.weights,
        "meta": np.asarray([ranks.n_candidates]),
    }
    arrays.update({f"row:{k}": v.astype(np.float32) for k, v in ranks.per_row.items()})
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
        )


class Store:
    """``<out>/results.sqlite``."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "results.sqlite"
        with self._connect() as con:
            con.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def _select(self, columns: str, keys: list[str]) -> Iterator[tuple[Any, ...]]:
        """``SELECT columns`` for the rows of ``keys`` (in chunks: SQLite caps bound parameters)."""
        with self._connect() as con:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT {columns} FROM runs WHERE key IN ({','.join('?' * len(chunk))})"
                yield from con.execute(q, chunk)

    def done(self, keys: list[str]) -> set[str]:
        return {row[0] for row in self._select("key", keys)}

    def put(self, key: str, grid: str, job: Any, record: dict[str, Any], ranks: RankInfo) -> None:
        with self._connect() as con:  # one transaction: the row is there whole, or not at all
            con.execute(
                "INSERT OR REPLACE INTO runs (key, grid, row_label, column_key, backbone, debias, "
                "setting, test_set, seed, protocol, protocol_hash, dataset_fingerprint, metrics, "
                "record, ranks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    grid,
                    job.row,
                    json.dumps(list(job.column)),
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

    def get(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, metrics, record, ranks in self._select("key, metrics, record, ranks", keys):
            rec = json.loads(record)
            out[key] = {
                "metrics": json.loads(metrics),
                "record": rec,
                "ranks": unpack_ranks(ranks, rec["protocol"]["params"]["tie"]),
            }
        return out

    def frame(self, grid: str | None = None) -> pd.DataFrame:
        """All runs (of one grid) as a table: one row per run, one column per metric."""
        with self._connect() as con:
            q = (
                "SELECT key, grid, row_label, column_key, backbone, debias, setting, test_set, seed, "
                "protocol, protocol_hash, dataset_fingerprint, metrics, created FROM runs"
            )
            df = pd.read_sql_query(
                q + (" WHERE grid = ?" if grid else ""), con, params=(grid,) if grid else None
            )
        if df.empty:
            return df
        metrics = pd.DataFrame([json.loads(m) for m in df.pop("metrics")])
        return pd.concat([df, metrics], axis=1)
