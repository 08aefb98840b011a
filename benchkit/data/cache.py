"""The cache folder, and a Dataset as one ``.npz`` file: how benchkit caches worlds, without pickle.

Every array of the dataset (PGC, truth, stored negatives and weights, extra columns) becomes one
entry; the rest of the metadata is JSON. Writes go to a temporary file that is renamed into place,
so a reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchkit.data.dataset import PGC, Dataset
from benchkit.data.truth import Truth
from benchkit.files import atomic_file

_PLAIN = (
    "video_features",
    "music_features",
    "video_music",
    "video_uploader",
    "music_genre",
    "given_prior",
    "propensity",
    "video_ids",
    "music_ids",
    "uploader_ids",
)
_DICTS = ("splits", "negatives", "eval_weights", "video_columns")


def to_arrays(ds: Dataset) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in _PLAIN:
        value = getattr(ds, name)
        if value is not None:
            out[name] = value
    for name in _DICTS:
        for key, value in getattr(ds, name).items():
            out[f"{name}/{key}"] = value
    if ds.pgc is not None:
        out["pgc/video_features"] = ds.pgc.video_features
        out["pgc/music_features"] = ds.pgc.music_features
        out["pgc/pairs"] = ds.pgc.pairs
        for key, value in ds.pgc.splits.items():
            out[f"pgc/splits/{key}"] = value
        if ds.pgc.music_genre is not None:
            out["pgc/music_genre"] = ds.pgc.music_genre
    if ds.truth is not None:
        for key, value in ds.truth.arrays().items():
            out[f"truth/{key}"] = value
    meta = {k: v for k, v in ds.meta.items() if not isinstance(v, np.ndarray)}
    for key, value in ds.meta.items():
        if isinstance(value, np.ndarray):
            out[f"meta/{key}"] = value
    header = {
        "name": ds.name,
        "genre_names": list(ds.genre_names),
        "content_id": ds.content_id,
        "truth": None if ds.truth is None else ds.truth.scalars(),
        "meta": meta,
    }
    out["header"] = np.asarray(json.dumps(header))
    return out


def from_arrays(a: dict[str, np.ndarray]) -> Dataset:
    header = json.loads(str(a["header"]))

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {
            k[len(prefix) + 1 :]: v
            for k, v in a.items()
            if k.startswith(prefix + "/") and "/" not in k[len(prefix) + 1 :]
        }

    pgc = None
    if "pgc/pairs" in a:
        pgc = PGC(
            a["pgc/video_features"],
            a["pgc/music_features"],
            a["pgc/pairs"],
            group("pgc/splits"),
            a.get("pgc/music_genre"),
        )
    truth = None
    if header.get("truth") is not None:
        truth = Truth.from_parts(group("truth"), header["truth"])
    meta = dict(header["meta"])
    meta.update(group("meta"))
    arrays: dict[str, Any] = {k: a[k] for k in _PLAIN if k in a}
    arrays.update({k: group(k) for k in _DICTS})
    return Dataset(
        name=header["name"],
        genre_names=tuple(header["genre_names"]),
        content_id=header["content_id"],
        pgc=pgc,
        truth=truth,
        meta=meta,
        **arrays,
    )


def save_npz(ds: Dataset, path: Path | str) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **to_arrays(ds))  # type: ignore[arg-type]


def load_npz(path: Path | str) -> Dataset:
    with np.load(path, allow_pickle=False) as z:
        arrays: dict[str, Any] = {k: z[k] for k in z.files}
    return from_arrays(arrays)
