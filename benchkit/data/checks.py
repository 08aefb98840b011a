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


REQUIRED_SPLITS = ("train", "val", "test")


def check_dataset(ds: Any) -> None:
    """Raise :class:`DataError` naming the field and the fix for any inconsistency of a
    :class:`benchkit.data.Dataset` (``Dataset.validate``)."""
    nv, nm = ds.n_videos, ds.n_music
    for what, a in (
        ("video_features", ds.video_features),
        ("music_features", ds.music_features),
    ):
        if not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).any(axis=1).sum())
            raise DataError(f"{ds.name}: {what} has NaN or inf in {bad} row(s); clean or drop them")
    if ds.video_music.shape != (nv,):
        raise DataError(
            f"{ds.name}: video_music must have one entry per video ({nv}), got "
            f"{ds.video_music.shape}"
        )
    check_ids(ds.video_music, nm, f"{ds.name}: video_music", "music")
    if ds.video_uploader is not None and ds.video_uploader.shape != (nv,):
        raise DataError(f"{ds.name}: video_uploader must have one entry per video ({nv})")
    if ds.music_genre is not None:
        if ds.music_genre.shape != (nm,):
            raise DataError(f"{ds.name}: music_genre must give one genre per music ({nm})")
        if (ds.music_genre < -1).any():
            raise DataError(
                f"{ds.name}: music_genre has negative genre ids (only -1, unknown, is allowed)"
            )
    if ds.pgc is not None:
        for what, ugc, pgc in (
            ("video", ds.video_features, ds.pgc.video_features),
            ("music", ds.music_features, ds.pgc.music_features),
        ):
            if ugc.shape[1] != pgc.shape[1]:
                raise DataError(
                    f"{ds.name}: PGC {what} features have {pgc.shape[1]} dimensions but "
                    f"the UGC ones {ugc.shape[1]}; a teacher trained on one cannot read the "
                    f"other — extract both with the same model"
                )
    for name in REQUIRED_SPLITS:
        if name not in ds.splits:
            raise DataError(
                f"{ds.name}: missing split {name!r}; splits present: "
                f"{', '.join(sorted(ds.splits)) or 'none'}"
            )
    for name, rows in ds.splits.items():
        if rows.size == 0:
            raise DataError(f"{ds.name}: split {name!r} is empty")
        check_ids(rows, nv, f"{ds.name}: split {name!r}", "video")
        if np.unique(rows).size != rows.size:
            raise DataError(f"{ds.name}: split {name!r} lists a video twice")
    train = set(ds.splits["train"].tolist())
    for name in ("val", "test"):
        overlap = train.intersection(ds.splits[name].tolist())
        if overlap:
            raise DataError(f"{ds.name}: {len(overlap)} video(s) are in both 'train' and {name!r}")
    for name, negs in ds.negatives.items():
        stored_rows = ds.splits.get(name)
        if stored_rows is None or negs.ndim != 2 or negs.shape[0] != stored_rows.size:
            raise DataError(
                f"{ds.name}: stored negatives of {name!r} must have one row per video of that split"
            )
        check_ids(negs, nm, f"{ds.name}: negatives of {name!r}", "music")
        hits = negs == ds.video_music[stored_rows][:, None]
        if hits.any():
            bad = int(hits.any(axis=1).sum())
            raise DataError(
                f"{ds.name}: stored negatives of split {name!r} contain the "
                f"positive music in {bad} row(s)"
            )
    for name, w in ds.eval_weights.items():
        weighted_rows = ds.splits.get(name)
        if weighted_rows is None or w.shape != (weighted_rows.size,):
            raise DataError(
                f"{ds.name}: stored weights of {name!r} must have one value per video of that split"
            )
        if not np.isfinite(w).all() or (w < 0).any():
            raise DataError(
                f"{ds.name}: stored weights of {name!r} must be finite and non-negative"
            )
        if abs(float(w.sum()) - 1.0) > 1e-6:
            raise DataError(
                f"{ds.name}: stored weights of {name!r} sum to {w.sum():.6g}, "
                f"not 1; rerun with --normalise-weights to rescale them"
            )
    check_side_columns(ds)


def check_side_columns(ds: Any) -> None:
    """The optional per-video and per-music fields: their lengths, finite values, and ids that
    cannot size an allocation beyond what the data declares (genres: the genre names, else the
    priors' width, else :data:`benchkit.data.checks.MAX_GENRES`; uploaders: the videos)."""
    nv, name = ds.n_videos, ds.name
    if ds.music_genre is not None:
        limit, why = len(ds.genre_names), "the genre names"
        if not limit and ds.given_prior is not None:
            limit, why = np.shape(ds.given_prior)[-1], "the width of the uploaders' priors"
        if not limit:
            limit, why = MAX_GENRES, "genre ids without genre names"
        bounded(ds.music_genre, -1, limit, f"{name}: music_genre", why)
    if ds.video_uploader is not None and ds.video_uploader.size:
        bounded(ds.video_uploader, 0, MAX_ID, f"{name}: video_uploader", "ids are non-negative")
        n_uploaders = int(ds.video_uploader.max()) + 1
        if n_uploaders > nv and n_uploaders * max(1, ds.n_genres) > MAX_PRIOR_CELLS:
            raise DataError(
                f"{name}: video_uploader has ids up to {n_uploaders - 1:,} for {nv:,} videos: "
                f"renumber the uploaders 0, 1, … (their genre histories would not fit in memory)"
            )
    if ds.given_prior is not None:
        prior = np.asarray(ds.given_prior)
        if prior.ndim != 2 or prior.shape[0] != nv:
            raise DataError(f"{name}: given_prior must be (videos, genres), got {prior.shape}")
        finite(prior, f"{name}: given_prior (the uploaders' genre priors)", low=0.0)
    if ds.propensity is not None:
        p = per_video(ds.propensity, nv, f"{name}: propensity")
        known = p[~np.isnan(p)]
        if known.size:
            finite(known, f"{name}: propensity (where given)", low=0.0, strict=True)
    for key, column in ds.video_columns.items():
        per_video(column, nv, f"{name}: video column {key!r}")
    if ds.pgc is not None and ds.pgc.music_genre is not None:
        n_pgc = ds.pgc.music_features.shape[0]
        if np.shape(ds.pgc.music_genre) != (n_pgc,):
            raise DataError(f"{name}: pgc.music_genre must give one genre per PGC music ({n_pgc})")


def id_array(ids: Any, n: int, what: str) -> np.ndarray | None:
    """The user's ids as a plain (non-object) array of ``n`` distinct strings or integers."""
    if ids is None:
        return None
    a = np.asarray(ids)
    if a.dtype == object:
        a = a.astype(str)
    if a.dtype.kind not in "iuU":
        raise DataError(f"{what}: ids must be strings or integers, got dtype {a.dtype}")
    if a.shape != (n,):
        raise DataError(f"{what}: {a.size} ids for {n} rows")
    uniq, counts = np.unique(a, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{what}: duplicate id {uniq[counts > 1][0].item()!r}")
    return a


def check_ids(ids: np.ndarray, n: int, what: str, kind: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)][:5].tolist()
        raise DataError(f"{what}: {kind} ids out of range [0, {n}): e.g. {bad}")
