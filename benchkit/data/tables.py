"""Bring your own data: interaction tables plus feature arrays.

    <folder>/
        interactions.csv | interactions.parquet
            video_id, music_id            required: one row per video (the music it uses)
            uploader_id                   optional (needed by the debias strategies)
            split                         optional: train / val / test (default: random 8:1:1)
            any other numeric column      kept as a per-video column (e.g. views, a match score)
        video_features.npy + video_ids.txt    rows of features, and the id of each row (one a line)
        music_features.npy + music_ids.txt
        music_genres.csv | .parquet       optional: music_id, genre (names or integers)
        genres.txt                        optional: genre names in id order
        pgc/                              optional PGC clips: pairs.csv (video_id, music_id, split
                                          train/val), video_features.npy + video_ids.txt,
                                          music_features.npy + music_ids.txt

Ids may be strings. Every problem is reported with the file, the field and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchkit.data.dataset import PGC, Dataset
from benchkit.data.npyio import AtomicDir, load_features, read_text, save_npy
from benchkit.data.splits import random_splits
from benchkit.errors import DataError

SPLITS = ("train", "val", "test")


def _table(folder: Path, stem: str, required: bool = True) -> tuple[pd.DataFrame, Path] | None:
    for ext in (".parquet", ".csv"):
        path = folder / f"{stem}{ext}"
        if path.exists():
            try:
                df = (
                    pd.read_parquet(path)
                    if ext == ".parquet"
                    else pd.read_csv(
                        path,
                        dtype={"video_id": str, "music_id": str, "uploader_id": str, "split": str},
                    )
                )
            except ImportError:  # pandas' page-long message for a missing Parquet engine
                from benchkit.extras import missing

                raise missing("parquet", f"reading {path}") from None
            except Exception as exc:  # pandas raises many kinds
                raise DataError(f"cannot read {path}: {exc}") from None
            return df, path
    if required:
        raise DataError(f"missing {folder / stem}.csv (or .parquet)")
    return None


def _columns(df: pd.DataFrame, path: Path, needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; columns present: "
            f"{', '.join(map(str, df.columns))}"
        )


def _ids(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"missing {path}: one id per line, in the row order of the features")
    text = read_text(path, "ids")
    ids = np.array([line.strip() for line in text.splitlines() if line.strip()])
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{path}: duplicate id {str(uniq[counts > 1][0])!r}")
    return ids


def _features(folder: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    path = folder / f"{stem}_features.npy"
    feats = load_features(path, f"{stem} features")
    ids = _ids(folder / f"{stem}_ids.txt")
    if ids.size != feats.shape[0]:
        raise DataError(
            f"{folder / f'{stem}_ids.txt'}: {ids.size} ids for {feats.shape[0]} rows of {path.name}"
        )
    return feats, ids


def _index_ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ids, each value's index among them): integers stay integers, text stays text
    ("007" and "7" are two ids), ordered as numbers when they all read as integers (so "10"
    comes after "9"; as Python integers, so that an id beyond 64 bits still sorts and never
    overflows), else as text."""
    integer = pd.api.types.is_integer_dtype(values)
    ids = values.to_numpy(dtype=np.int64) if integer else values.astype(str).to_numpy(dtype=str)
    uniq, inverse = np.unique(ids, return_inverse=True)
    text = pd.Series(uniq.astype(str))
    if uniq.dtype.kind == "U" and text.str.fullmatch(r"-?\d+").all():
        order = np.argsort(np.array([int(x) for x in text], dtype=object), kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        uniq, inverse = uniq[order], rank[inverse]
    return uniq, inverse.astype(np.int64)


def _lookup(ids: np.ndarray, values: pd.Series, path: Path, field: str, source: str) -> np.ndarray:
    index = pd.Index(ids)
    rows = index.get_indexer(values.astype(str))
    if (rows < 0).any():
        bad = values.astype(str)[rows < 0].iloc[:3].tolist()
        raise DataError(f"{path}: {field} {bad} not found in {source}")
    return rows.astype(np.int64)


def _read_pgc(folder: Path, genre_names: tuple[str, ...] = ()) -> PGC:
    video, video_ids = _features(folder, "video")
    music, music_ids = _features(folder, "music")
    df, path = _table(folder, "pairs")  # type: ignore[misc]
    _columns(df, path, ("video_id", "music_id"))
    pairs = np.stack(
        [
            _lookup(video_ids, df["video_id"], path, "video_id", "pgc/video_ids.txt"),
            _lookup(music_ids, df["music_id"], path, "music_id", "pgc/music_ids.txt"),
        ],
        axis=1,
    )
    split = df["split"].astype(str).to_numpy() if "split" in df.columns else None
    if split is None:
        n_val = max(1, len(df) // 10)
        order = np.random.default_rng(0).permutation(len(df))
        splits = {"train": np.sort(order[n_val:]), "val": np.sort(order[:n_val])}
    else:
        splits = {s: np.flatnonzero(split == s) for s in ("train", "val")}
    genre = None
    found = _table(folder, "music_genres", required=False)
    if found is not None and genre_names:
        gdf, gpath = found
        _columns(gdf, gpath, ("music_id", "genre"))
        genre = np.full(music.shape[0], -1, dtype=np.int64)
        rows = _lookup(music_ids, gdf["music_id"], gpath, "music_id", "pgc/music_ids.txt")
        _one_genre_each(rows, gdf["genre"].astype(str).to_numpy(), music_ids, gpath)
        genre[rows] = pd.Index(genre_names).get_indexer(gdf["genre"].astype(str))
    return PGC(video, music, pairs, splits, genre)


def _one_genre_each(rows: np.ndarray, labels: np.ndarray, ids: np.ndarray, path: Path) -> None:
    """Refuse a music listed twice with different genres (the later row used to win, silently);
    the same genre twice is harmless."""
    pairs = pd.DataFrame({"row": rows, "genre": labels}).drop_duplicates()
    twice = pairs["row"].duplicated(keep=False)
    if twice.any():
        row = int(pairs["row"][twice].iloc[0])
        genres = sorted(pairs["genre"][pairs["row"] == row])
        raise DataError(
            f"{path}: music_id {str(ids[row])!r} is given different genres ({', '.join(genres)}); "
            f"keep one row per music"
        )


def is_tables(path: Path | str) -> bool:
    p = Path(path)
    return (p / "interactions.csv").exists() or (p / "interactions.parquet").exists()


def read_tables(path: Path | str, seed: int = 0) -> Dataset:
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    df, ipath = _table(folder, "interactions")  # type: ignore[misc]
    _columns(df, ipath, ("video_id", "music_id"))
    dup = df["video_id"].astype(str).duplicated()
    if dup.any():
        raise DataError(
            f"{ipath}: video_id {df['video_id'][dup].iloc[0]!r} has more than one row; "
            f"each video uses one music"
        )
    video_all, video_ids = _features(folder, "video")
    music, music_ids = _features(folder, "music")
    video_rows = _lookup(video_ids, df["video_id"], ipath, "video_id", "video_ids.txt")
    video_music = _lookup(music_ids, df["music_id"], ipath, "music_id", "music_ids.txt")
    # Rows of the dataset follow the interactions table; features are gathered in that order.
    video = (
        video_all
        if np.array_equal(video_rows, np.arange(video_all.shape[0]))
        else video_all[video_rows]
    )
    uploader = uploader_ids = None
    if "uploader_id" in df.columns:
        if df["uploader_id"].isna().any():
            raise DataError(f"{ipath}: uploader_id is empty in some rows")
        uploader_ids, uploader = _index_ids(df["uploader_id"])
    genre = None
    names: tuple[str, ...] = ()
    if (folder / "genres.txt").exists():
        names = tuple(
            x.strip()
            for x in read_text(folder / "genres.txt", "genre order").splitlines()
            if x.strip()
        )
    found = _table(folder, "music_genres", required=False)
    if found is not None:
        gdf, gpath = found
        _columns(gdf, gpath, ("music_id", "genre"))
        grows = _lookup(music_ids, gdf["music_id"], gpath, "music_id", "music_ids.txt")
        labels = gdf["genre"].astype(str).to_numpy()
        _one_genre_each(grows, labels, music_ids, gpath)
        if not names:
            names = tuple(
                sorted(
                    set(labels), key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0, x)
                )
            )
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise DataError(f"{gpath}: genre(s) {unknown[:3]} are not listed in genres.txt")
        genre = np.full(music.shape[0], -1, dtype=np.int64)
        genre[grows] = pd.Index(names).get_indexer(labels)
        used = np.unique(video_music)
        missing = used[genre[used] < 0]
        if missing.size:
            raise DataError(
                f"{gpath}: music {music_ids[missing[:3]].tolist()} used in "
                f"{ipath.name} have no genre; add a row for each"
            )
    skip = {"video_id", "music_id", "uploader_id", "split"}
    columns = {
        str(c): df[c].to_numpy(dtype=np.float64)
        for c in df.columns
        if c not in skip and pd.api.types.is_numeric_dtype(df[c])
    }
    pgc = _read_pgc(folder / "pgc", names) if (folder / "pgc").is_dir() else None
    if "split" in df.columns:
        values = df["split"].astype(str).to_numpy()
        bad = sorted(set(values) - set(SPLITS))
        if bad:
            raise DataError(f"{ipath}: split values must be train, val or test; found {bad[:3]}")
        splits = {s: np.flatnonzero(values == s) for s in SPLITS}
        for s, rows in splits.items():
            if rows.size == 0:
                raise DataError(f"{ipath}: split {s!r} has no rows")
    else:
        if len(df) < 10:
            raise DataError(f"{ipath}: need at least 10 videos to split them 8:1:1")
        splits = random_splits(len(df), seed)
    return Dataset(
        name=f"tables:{folder.name}",
        video_features=video,
        music_features=music,
        video_music=video_music,
        splits=splits,
        video_uploader=uploader,
        music_genre=genre,
        genre_names=names,
        pgc=pgc,
        video_columns=columns,
        meta={"source": str(folder), "format": "tables"},
        video_ids=video_ids[video_rows],
        music_ids=music_ids,
        uploader_ids=uploader_ids,
    )


def write_tables(ds: Dataset, out: Path | str) -> Path:
    """Write ``ds`` in the tables format, atomically, with the data's own ids (the row numbers
    where it has none)."""
    video_ids, music_ids = ds.ids("video"), ds.ids("music")
    with AtomicDir(out) as tmp:
        split = np.full(ds.n_videos, "", dtype=object)
        for name in SPLITS:
            split[ds.splits[name]] = name
        table = {"video_id": video_ids, "music_id": music_ids[ds.video_music]}
        if ds.video_uploader is not None:
            table["uploader_id"] = ds.ids("uploader")[ds.video_uploader]
        table["split"] = split
        frame = pd.DataFrame(table)
        for key, col in ds.video_columns.items():
            frame[key] = col
        if ds.truth is not None:  # a per-video matching score for T_matching on the read-back data
            from benchkit.data.splits import matching_score

            frame["true_compat"] = matching_score(ds, None)
        frame = frame[frame["split"] != ""]
        frame.to_csv(tmp / "interactions.csv", index=False)
        save_npy(tmp / "video_features.npy", ds.video_features)
        (tmp / "video_ids.txt").write_text("\n".join(map(str, video_ids)) + "\n")
        save_npy(tmp / "music_features.npy", ds.music_features)
        (tmp / "music_ids.txt").write_text("\n".join(map(str, music_ids)) + "\n")
        if ds.music_genre is not None:
            names = ds.genre_names or tuple(str(i) for i in range(ds.n_genres))
            (tmp / "genres.txt").write_text("\n".join(names) + "\n")
            known = np.flatnonzero(ds.music_genre >= 0)
            pd.DataFrame(
                {"music_id": music_ids[known], "genre": [names[g] for g in ds.music_genre[known]]}
            ).to_csv(tmp / "music_genres.csv", index=False)
        if ds.pgc is not None:
            p = tmp / "pgc"
            p.mkdir()
            pgc_split = np.full(ds.pgc.pairs.shape[0], "train", dtype=object)
            pgc_split[ds.pgc.splits["val"]] = "val"
            pd.DataFrame(
                {"video_id": ds.pgc.pairs[:, 0], "music_id": ds.pgc.pairs[:, 1], "split": pgc_split}
            ).to_csv(p / "pairs.csv", index=False)
            save_npy(p / "video_features.npy", ds.pgc.video_features)
            (p / "video_ids.txt").write_text(
                "\n".join(map(str, range(ds.pgc.video_features.shape[0]))) + "\n"
            )
            save_npy(p / "music_features.npy", ds.pgc.music_features)
            if ds.pgc.music_genre is not None and ds.music_genre is not None:
                known = np.flatnonzero(ds.pgc.music_genre >= 0)
                pd.DataFrame(
                    {"music_id": known, "genre": [names[g] for g in ds.pgc.music_genre[known]]}
                ).to_csv(p / "music_genres.csv", index=False)
            (p / "music_ids.txt").write_text(
                "\n".join(map(str, range(ds.pgc.music_features.shape[0]))) + "\n"
            )
    return Path(out)
