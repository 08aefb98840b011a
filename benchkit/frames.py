"""Files the command line reads and writes beside a model: rows of features with their ids (for
``recommend`` and ``embed``) and tables of results or codes (.csv, .parquet, .jsonl, .npy),
written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchkit.data.npyio import load_npy, read_text
from benchkit.errors import ConfigError, DataError
from benchkit.files import atomic_file


def read_rows(path: str, what: str, ids: str | None = None) -> tuple[Any, Any]:
    """(features, ids) from a .npy matrix (ids from a text file, one per line, else row numbers)
    or a .parquet table (an ``id`` / ``video_id`` / ``music_id`` column, the rest numeric
    features)."""
    p = Path(path)
    if p.suffix == ".npy":
        features = load_npy(p, what)
    elif p.suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(p)
        except ImportError:
            from benchkit.extras import missing

            raise missing("parquet", f"reading {p}") from None
        except Exception as exc:
            raise DataError(f"{p} ({what}): cannot read it as Parquet ({exc})") from None
        id_col = next((c for c in ("id", "video_id", "music_id") if c in frame), None)
        if id_col is not None and ids is None:
            row_ids = frame.pop(id_col).to_numpy()
        else:
            row_ids = None
        features = frame.to_numpy()
        if row_ids is not None:
            return features, row_ids
    else:
        raise DataError(f"{p} ({what}): give a .npy matrix or a .parquet table")
    if ids is not None:
        row_ids = np.array(
            [x.strip() for x in read_text(Path(ids), "ids").splitlines() if x.strip()]
        )
        if row_ids.size != len(features):
            raise DataError(f"{ids}: {row_ids.size} ids for {len(features)} rows of {p}")
        return features, row_ids
    return features, np.arange(len(features))


def write_frame(frame: Any, path: str, kinds: str = ".csv, .parquet or .jsonl") -> None:
    """A table to .csv, .parquet or .jsonl, atomically, creating the folder if it is missing
    (``kinds``: what the caller accepts, for the error message)."""
    target = Path(path)
    if target.suffix not in (".csv", ".parquet", ".jsonl"):
        raise ConfigError(f"{path}: write a {kinds} file")
    try:
        with atomic_file(target) as tmp:
            if target.suffix == ".parquet":
                frame.to_parquet(tmp, index=False)
            elif target.suffix == ".jsonl":
                frame.to_json(tmp, orient="records", lines=True)
            else:
                frame.to_csv(tmp, index=False)
    except ImportError:
        from benchkit.extras import missing

        raise missing("parquet", f"writing {path}") from None


def write_codes(codes: np.ndarray, row_ids: Any, id_column: str, path: str) -> None:
    """Latent codes: a bare .npy matrix, or a table of each row's id and code."""
    if path.endswith(".npy"):
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.save(f, codes)
        return
    import pandas as pd

    frame = pd.DataFrame(codes, columns=[f"z{i}" for i in range(codes.shape[1])])
    frame.insert(0, id_column, row_ids)
    write_frame(frame, path, ".npy, .csv, .parquet or .jsonl")
