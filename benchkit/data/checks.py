"""Checks the dataset readers share: every value's type and range, before anything is allocated
from it, in one line naming the file, the row and the field.

A genre id sizes the per-uploader genre histories (uploaders × genres), an uploader id their rows:
one hostile cell (``"[10000000000]"``) asked for 74.5 GiB. So ids are bounded by what the data
declares — the genre names, the width of the uploaders' priors, the number of videos — and by
:data:`MAX_GENRES` where it declares nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchkit.data.npyio import read_json
from benchkit.errors import DataError

MAX_GENRES = 1000  # genre ids a dataset may use without naming its genres
MAX_ID = 2**62  # beyond any id a dataset can hold (and safely inside int64)
MAX_PRIOR_CELLS = 2**28  # uploaders × genres of sparse uploader ids: 2 GiB of genre histories


def first_bad(mask: np.ndarray) -> int:
    """The first row (of a 1-d or 2-d mask) where ``mask`` is true."""
    rows = mask.reshape(len(mask), -1).any(axis=1)
    return int(np.flatnonzero(rows)[0])


def finite(a: np.ndarray, what: str, *, low: float | None = None, strict: bool = False) -> None:
    """Refuse NaN, inf, or a value below ``low`` (at or below it, when ``strict``)."""
    values = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    bad = ~np.isfinite(values)
    if bad.any():
        count = int(bad.any(axis=1).sum())
        raise DataError(f"{what}: NaN or inf in {count} row(s), e.g. row {first_bad(bad)}")
    if low is not None:
        below = values <= low if strict else values < low
        if below.any():
            row = first_bad(below)
            raise DataError(
                f"{what}: values must be {'>' if strict else '≥'} {low:g}; row {row} has "
                f"{values[row].min():g}"
            )


def integers(a: Any, what: str) -> np.ndarray:
    """``a`` as int64 ids, refusing fractions, NaN, huge values and non-numbers rather than
    truncating or wrapping them."""
    arr = np.asarray(a)
    if arr.dtype.kind in "iub":
        if arr.size and arr.dtype.kind == "u" and int(arr.max()) >= MAX_ID:
            raise DataError(f"{what}: ids beyond any a dataset can hold")
        return arr.astype(np.int64)
    if arr.dtype.kind != "f":
        raise DataError(f"{what}: expected integer ids, got {arr.dtype} values")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= MAX_ID)
    if bad.any():
        row = first_bad(bad) if arr.ndim else 0
        shown = arr.reshape(max(1, len(arr) if arr.ndim else 1), -1)[row].tolist()
        raise DataError(f"{what}: row {row} holds {shown}, not integer ids")
    return arr.astype(np.int64)


def bounded(ids: np.ndarray, low: int, high: int, what: str, why: str) -> None:
    """Refuse ids outside [low, high); ``why`` says where the bound comes from."""
    bad = (ids < low) | (ids >= high)
    if bad.any():
        value = int(np.asarray(ids)[bad].reshape(-1)[0])
        raise DataError(
            f"{what}: row {first_bad(bad)} has id {value}, outside [{low}, {high}) ({why})"
        )


def per_video(a: np.ndarray, n: int, what: str) -> np.ndarray:
    """A per-video column: 1-d, numeric, one value per video."""
    arr = np.asarray(a)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{what}: expected one value per video ({n}), got shape {arr.shape}")
    if arr.dtype.kind not in "iufb":
        raise DataError(f"{what}: expected numbers, got {arr.dtype} values")
    return arr


def json_list(path: Path, what: str, kind: type) -> list[Any]:
    """A JSON file holding a list of ``kind``."""
    value = read_json(path, what)
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise DataError(
            f"{path} ({what}): expected a JSON list of {kind.__name__}, got {_kind(value)}"
        )
    return value


def json_object(path: Path, what: str, fields: dict[str, type]) -> dict[str, Any]:
    """A JSON file holding an object whose ``fields`` (where present) have these types."""
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise DataError(f"{path} ({what}): expected a JSON object, got {_kind(value)}")
    for key, kind in fields.items():
        if key in value and type(value[key]) is not kind:
            raise DataError(
                f"{path} ({what}): field {key!r} must be a {kind.__name__}, got {value[key]!r}"
            )
    return value


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list of " + (", ".join(sorted({type(v).__name__ for v in value})) or "nothing")
    return f"a {type(value).__name__}"
