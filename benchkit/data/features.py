"""Feature preprocessing and storage: z-score or L2 normalisation fitted on the training split,
float16 storage. Chunked over rows: whole-matrix float64 temporaries were most of a paper-scale
run's start-up and several GB."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from benchkit.data.dataset import Dataset
from benchkit.errors import DataError
from benchkit.spec import FEATURE_DTYPES, FEATURE_NORMS


def with_normalised_features(ds: Dataset, kind: str) -> Dataset:
    """The same data with its features preprocessed — ``zscore`` (each dimension centred and
    scaled by the mean and standard deviation of the training videos, and of the music they
    use), ``l2`` (each row to unit length) or ``none``. The PGC clips are z-scored by the
    statistics of *all* the UGC videos and music (features only, no label): close to the
    training statistics, and independent of how the UGC videos are split, so that a world's
    PGC teacher is the same for every test set and is trained once (its domain shift stays:
    PGC is not centred on itself). The fitted training statistics travel in
    ``meta["features_norm"]`` (a saved model keeps them, to preprocess new videos the same
    way); the fingerprint records the choice."""
    if kind not in FEATURE_NORMS:
        raise DataError(
            f"feature normalisation must be one of {', '.join(FEATURE_NORMS)}, not {kind!r}"
        )
    if kind == "none":
        return ds
    train = ds.splits["train"]
    music_rows = np.unique(ds.video_music[train])
    stats = fit_feature_norm(kind, ds.video_features, train, ds.music_features, music_rows)
    pgc = ds.pgc
    if pgc is not None:
        everything = fit_feature_norm(
            kind,
            ds.video_features,
            np.arange(ds.n_videos),
            ds.music_features,
            np.arange(ds.n_music),
        )
        pgc = replace(
            pgc,
            video_features=apply_feature_norm(pgc.video_features, everything, "video"),
            music_features=apply_feature_norm(pgc.music_features, everything, "music"),
        )
    return replace(
        ds,
        video_features=apply_feature_norm(ds.video_features, stats, "video"),
        music_features=apply_feature_norm(ds.music_features, stats, "music"),
        pgc=pgc,
        content_id=f"{ds.content_fingerprint}:{kind}",
        meta={**ds.meta, "features_norm": stats},
    )


def with_feature_dtype(ds: Dataset, dtype: str) -> Dataset:
    """The same data with features stored as ``float32`` or ``float16`` (half the memory; a
    batch is cast back to float32 when it is gathered). The fingerprint records the choice."""
    if dtype not in FEATURE_DTYPES:
        raise DataError(
            f"feature storage must be one of {', '.join(FEATURE_DTYPES)}, not {dtype!r}"
        )
    if ds.video_features.dtype == np.dtype(dtype):
        return ds
    pgc = ds.pgc
    if pgc is not None:
        pgc = replace(
            pgc,
            video_features=pgc.video_features.astype(dtype),
            music_features=pgc.music_features.astype(dtype),
        )
    return replace(
        ds,
        video_features=ds.video_features.astype(dtype),
        music_features=ds.music_features.astype(dtype),
        pgc=pgc,
        content_id=f"{ds.content_fingerprint}:{dtype}",
    )


ROWS_PER_CHUNK_ELEMENTS = 2**20  # elements of one chunk of rows: 4 MB of float32, in the cache


def _chunk_rows(width: int) -> int:
    return max(1, ROWS_PER_CHUNK_ELEMENTS // max(1, width))


def _column_moments(a: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each column over ``rows``, in float64, two
    passes over chunks of rows: a float64 copy of a paper-scale feature matrix was 2.4 GB and
    most of a run's start-up."""
    step = _chunk_rows(a.shape[1])
    total = np.zeros(a.shape[1])
    for s in range(0, rows.size, step):
        total += a[rows[s : s + step]].sum(axis=0, dtype=np.float64)
    mean = total / max(1, rows.size)
    squares = np.zeros(a.shape[1])
    for s in range(0, rows.size, step):
        centred = a[rows[s : s + step]].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", centred, centred)
    return mean, np.sqrt(squares / max(1, rows.size))


def fit_feature_norm(
    kind: str,
    video: np.ndarray,
    video_rows: np.ndarray,
    music: np.ndarray,
    music_rows: np.ndarray,
) -> dict[str, Any]:
    """The statistics of a feature normalisation, fitted on the given rows of each modality."""
    stats: dict[str, Any] = {"kind": kind}
    if kind == "zscore":
        for name, a, rows in (("video", video, video_rows), ("music", music, music_rows)):
            mean, std = _column_moments(a, rows)
            stats[f"{name}_mean"] = mean.astype(np.float32)
            stats[f"{name}_std"] = np.maximum(std, 1e-6).astype(np.float32)
    return stats


def apply_feature_norm(x: np.ndarray, stats: dict[str, Any], modality: str) -> np.ndarray:
    """Preprocess ``x`` (rows of ``modality`` = video or music features) with fitted ``stats``
    (:func:`with_normalised_features`), in float32, kept in ``x``'s storage dtype —
    chunk by chunk of rows into one new array (whole-matrix temporaries were four 1.2 GB arrays at
    the paper's scale)."""
    kind = stats["kind"]
    if kind not in FEATURE_NORMS:
        raise DataError(f"unknown feature normalisation {kind!r}")
    out = np.empty(x.shape, dtype=x.dtype)
    step = _chunk_rows(x.shape[1])
    for s in range(0, x.shape[0], step):
        part = x[s : s + step].astype(np.float32)
        if kind == "zscore":
            part -= stats[f"{modality}_mean"]
            part /= stats[f"{modality}_std"]
        elif kind == "l2":
            part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        out[s : s + part.shape[0]] = part
    return out
