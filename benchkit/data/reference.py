"""The DebCM release layout (repo jing-1/DecCM), read and written.

    <root>/data_matching/
        train.npy                          rows [video, music, genre, user_prior (G floats), propensity]
        100neg/val.npy, 100neg/test.npy    rows [video, positive music, 100 negative music]
        video_popularity_val.npy, ..._test.npy   per-row evaluation weights (sum to 1)
        user_prior_mean.npy                d̄, the mean uploader genre distribution
        visual_features_resnet_V.npy       (n_videos, 2048)
        music_features.npy                 (n_music, 128) VGGish
        new_music_smile_features_norm.npy  (n_music, 128) OpenSMILE, normalised
        benchkit/                          optional, written by benchkit: uploader ids, music genres,
                                           genre names, extra video columns, the synthetic truth
    <root>/data_pgc/
        train.npy, val.npy                 (n, 2) rows [pgc video, pgc music]
        mv_video_resnet_features.npy, vggish_features.npy, opensmile_features_norm.npy

The release has no uploader ids: uploader priors come from ``train.npy`` (their mean for videos
outside training) unless ``benchkit/video_uploader.npy`` is present. Music genres come from
``benchkit/music_genre.npy`` or, failing that, from the genres of the training rows (``-1``, unknown,
for music never used in training). The stored negatives and weights are used as given.
Object arrays are read without unpickling arbitrary objects (:mod:`benchkit.data.npyio`).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchkit.data.checks import (
    MAX_ID,
    bounded,
    finite,
    integers,
    json_list,
    json_object,
    per_video,
)
from benchkit.data.dataset import PGC, Dataset
from benchkit.data.npyio import AtomicDir, load_features, load_npy, save_npy
from benchkit.data.truth import Truth
from benchkit.errors import DataError

MATCHING, PGC_DIR, EXTRA = "data_matching", "data_pgc", "benchkit"


def find_root(path: Path | str) -> Path:
    """The folder holding ``data_matching/`` (``path`` itself may be ``data_matching``)."""
    p = Path(path)
    if (p / MATCHING).is_dir():
        return p
    if p.name == MATCHING and p.is_dir():
        return p.parent
    raise DataError(f"{p}: not the DebCM layout (no {MATCHING}/ folder inside)")


def is_reference(path: Path | str) -> bool:
    try:
        find_root(path)
    except DataError:
        return False
    return True


def _int(value: Any, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise DataError(f"{what}: {value!r} is not an integer id") from None
    if abs(number) >= MAX_ID:
        raise DataError(f"{what}: {value!r} is beyond any id a dataset can hold")
    return number


def _float(value: Any, what: str) -> float:
    try:
        return float(str(value.decode() if isinstance(value, bytes) else value).strip())
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{what}: {value!r} is not a number") from None


def _genre(value: Any, what: str) -> tuple[int, int]:
    """A genre cell as the release writes it — an int, a numeric string, or a string holding a
    list (``'[3]'``, read with ``ast.literal_eval``, never ``eval``) — or a list itself. Returns
    (the genre, how many were listed): with several, the first listed is the music's genre."""
    parsed: Any = value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError(
                f"{what}: {value!r} is not a genre id (write an integer or a list like '[3]')"
            ) from None
    if isinstance(parsed, np.ndarray):
        parsed = parsed.tolist()
    if isinstance(parsed, (list, tuple)):
        if not parsed:
            raise DataError(f"{what}: {value!r} lists no genre")
        first, count = parsed[0], len(parsed)
    else:
        first, count = parsed, 1
    if isinstance(first, (bool, np.bool_)) or not isinstance(first, (int, np.integer)):
        if isinstance(first, float) and first.is_integer() and abs(first) < MAX_ID:
            return int(first), count
        raise DataError(
            f"{what}: {value!r} is not a genre id (write an integer or a list like '[3]')"
        )
    if abs(int(first)) >= MAX_ID:
        raise DataError(f"{what}: {value!r} is beyond any genre id")
    return int(first), count


def _parse_train(rows: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    if rows.size == 0:
        raise DataError(f"{path} holds no rows; the training split needs at least one")
    if rows.ndim != 2 or rows.shape[1] < 4:
        raise DataError(
            f"{path}: expected rows [video, music, genre, user_prior, propensity], "
            f"got an array of shape {rows.shape}"
        )
    if rows.dtype != object:  # a numeric table: video, music, genre, G prior columns, propensity
        if not np.issubdtype(rows.dtype, np.number):
            raise DataError(f"{path}: expected numbers or an object array, got {rows.dtype}")
        return _checked_train(
            {
                "video": integers(rows[:, 0], f"{path} column 1 (video)"),
                "music": integers(rows[:, 1], f"{path} column 2 (music)"),
                "genre": integers(rows[:, 2], f"{path} column 3 (genre)"),
                "prior": rows[:, 3:-1].astype(np.float32),
                "propensity": rows[:, -1].astype(np.float64),
            },
            path,
        )
    video = np.array([_int(r[0], f"{path} row {i} column 1 (video)") for i, r in enumerate(rows)])
    music = np.array([_int(r[1], f"{path} row {i} column 2 (music)") for i, r in enumerate(rows)])
    parsed = [_genre(r[2], f"{path} row {i} column 3 (genre)") for i, r in enumerate(rows)]
    genre = np.array([g for g, _ in parsed], dtype=np.int64)
    several = int(sum(n > 1 for _, n in parsed))
    try:
        prior = np.array([np.asarray(_literal(r[3]), dtype=np.float32) for r in rows])
    except (ValueError, TypeError, SyntaxError, OverflowError, MemoryError, RecursionError):
        raise DataError(f"{path} column 4 (user_prior): rows must all hold G numbers") from None
    if prior.ndim != 2:
        raise DataError(f"{path} column 4 (user_prior): rows must all hold G numbers")
    propensity = (
        np.array(
            [_float(r[4], f"{path} row {i} column 5 (propensity)") for i, r in enumerate(rows)]
        )
        if rows.shape[1] > 4
        else np.full(len(rows), np.nan)
    )
    return _checked_train(
        {
            "video": video.astype(np.int64),
            "music": music.astype(np.int64),
            "genre": genre,
            "prior": prior,
            "propensity": propensity,
            "several_genres": np.asarray(several),
        },
        path,
    )


def _checked_train(train: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """The training rows' priors finite distributions, each genre an index into them (so that
    no genre id sizes an allocation), each given propensity finite and positive."""
    prior = train["prior"]
    finite(prior, f"{path} column 4 (user_prior)", low=0.0)
    width = prior.shape[1]
    bounded(
        train["genre"],
        -1,
        width,
        f"{path} column 3 (genre)",
        f"each row's user_prior has {width} genres; -1 is unknown",
    )
    if not np.isnan(train["propensity"]).all():
        finite(train["propensity"], f"{path} column 5 (propensity)", low=0.0, strict=True)
    return train


def _literal(value: Any) -> Any:
    """A cell that may be a string holding a Python literal (how object arrays get written)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return ast.literal_eval(value.strip()) if isinstance(value, str) else value


def _parse_eval(rows: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if rows.size == 0:
        raise DataError(f"{path} holds no rows; an evaluation split needs at least one")
    if rows.dtype != object:
        if rows.ndim != 2 or rows.shape[1] < 3:
            raise DataError(
                f"{path}: expected rows [video, positive, negatives...], got {rows.shape}"
            )
        return (
            integers(rows[:, 0], f"{path} column 1 (video)"),
            integers(rows[:, 1], f"{path} column 2 (positive)"),
            integers(rows[:, 2:], f"{path} columns 3… (negatives)"),
        )
    if rows.ndim != 2 or rows.shape[1] != 3:
        raise DataError(f"{path}: expected rows [video, positive, negatives], got {rows.shape}")
    video = np.array([_int(r[0], f"{path} column 1 (video)") for r in rows], dtype=np.int64)
    pos = np.array([_int(r[1], f"{path} column 2 (positive)") for r in rows], dtype=np.int64)
    try:
        negs = np.array(
            [
                integers(np.asarray(_literal(r[2])), f"{path} row {i} column 3 (negatives)")
                for i, r in enumerate(rows)
            ]
        )
    except (ValueError, TypeError, SyntaxError, OverflowError, MemoryError, RecursionError):
        raise DataError(f"{path} column 3 (negatives): every row needs the same number") from None
    if negs.ndim != 2:
        raise DataError(f"{path} column 3 (negatives): every row needs the same number")
    return video, pos, negs


def _weights(path: Path, n: int, normalise: bool) -> np.ndarray:
    w = load_npy(path, "per-row evaluation weights").astype(np.float64).reshape(-1)
    if w.shape != (n,):
        raise DataError(f"{path}: {w.size} weights for {n} evaluation rows")
    if not np.isfinite(w).all() or (w < 0).any():
        raise DataError(f"{path}: weights must be finite and non-negative")
    if normalise and w.sum() > 0:
        w = w / w.sum()
    elif abs(w.sum() - 1.0) > 1e-6:
        raise DataError(
            f"{path}: weights sum to {w.sum():.6g}, not 1; rerun with "
            f"--normalise-weights to rescale them"
        )
    return w


def _pairs(a: np.ndarray, path: Path) -> np.ndarray:
    """(n, 2) integer [video, music] pairs, or one clear line."""
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] == 0:
        raise DataError(f"{path}: expected rows of [video, music] pairs, got shape {a.shape}")
    try:
        return np.asarray(a, dtype=np.float64).astype(np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: pairs must be integer ids") from None


def read_pgc(path: Path | str) -> PGC:
    d = Path(path)
    train = _pairs(load_npy(d / "train.npy", "PGC training pairs"), d / "train.npy")
    val = _pairs(load_npy(d / "val.npy", "PGC validation pairs"), d / "val.npy")
    video = load_features(d / "mv_video_resnet_features.npy", "PGC video features")
    music = np.concatenate(
        [
            load_features(d / "vggish_features.npy", "PGC VGGish features"),
            load_features(d / "opensmile_features_norm.npy", "PGC OpenSMILE features"),
        ],
        axis=1,
    )
    pairs = np.concatenate([train, val])
    for col, n, what in ((0, video.shape[0], "video"), (1, music.shape[0], "music")):
        if pairs.size and (pairs[:, col].min() < 0 or pairs[:, col].max() >= n):
            raise DataError(f"{d}: PGC {what} ids out of range [0, {n})")
    n_train = train.shape[0]
    return PGC(
        video,
        music,
        pairs,
        {"train": np.arange(n_train), "val": np.arange(n_train, pairs.shape[0])},
    )


def read_reference(
    path: Path | str, pgc: Path | str | None = None, normalise_weights: bool = False
) -> Dataset:
    """Read the DebCM layout at ``path`` (PGC from ``pgc``, else ``<root>/data_pgc`` if present)."""
    root = find_root(path)
    d = root / MATCHING
    video_features = load_features(d / "visual_features_resnet_V.npy", "video features")
    music_features = (
        np.concatenate(
            [
                load_features(d / "music_features.npy", "VGGish music features"),
                load_features(d / "new_music_smile_features_norm.npy", "OpenSMILE music features"),
            ],
            axis=1,
        )
        if (d / "new_music_smile_features_norm.npy").exists()
        else load_features(d / "music_features.npy", "music features")
    )
    nv, nm = video_features.shape[0], music_features.shape[0]
    train = _parse_train(load_npy(d / "train.npy", "training rows"), d / "train.npy")
    evals = {
        s: _parse_eval(load_npy(d / "100neg" / f"{s}.npy", f"{s} rows"), d / "100neg" / f"{s}.npy")
        for s in ("val", "test")
    }
    for s, (_, pos, negs) in evals.items():
        hits = (negs == pos[:, None]).any(axis=1)
        if hits.any():
            raise DataError(
                f"{d / '100neg' / f'{s}.npy'}: the negatives of {int(hits.sum())} row(s) contain "
                f"the row's positive music (e.g. row {int(np.flatnonzero(hits)[0])}); negatives "
                f"must be other music"
            )

    video_music = np.full(nv, -1, dtype=np.int64)
    seen = np.zeros(nv, dtype=bool)
    splits: dict[str, np.ndarray] = {}
    for name, (videos, music) in {
        "train": (train["video"], train["music"]),
        **{s: (e[0], e[1]) for s, e in evals.items()},
    }.items():
        where = d / ("train.npy" if name == "train" else f"100neg/{name}.npy")
        if videos.min() < 0 or videos.max() >= nv:
            raise DataError(
                f"{where}: video ids out of range [0, {nv}) (the rows of "
                f"visual_features_resnet_V.npy)"
            )
        if music.min() < 0 or music.max() >= nm:
            raise DataError(
                f"{where}: music ids out of range [0, {nm}) (the rows of music_features.npy)"
            )
        uniq, counts = np.unique(videos, return_counts=True)
        twice = np.r_[uniq[counts > 1], videos[seen[videos]]]
        if twice.size:
            raise DataError(
                f"{where}: video {int(twice[0])} appears twice (in this file or in "
                f"another split); each video has one row"
            )
        seen[videos] = True
        video_music[videos] = music
        splits[name] = videos
    extra = d / EXTRA
    if not seen.all():
        # Videos in no split carry no choice: drop them and renumber the rest.
        keep = np.flatnonzero(seen)
        remap = np.full(nv, -1, dtype=np.int64)
        remap[keep] = np.arange(keep.size)
        video_features, video_music = video_features[keep], video_music[keep]
        splits = {k: remap[v] for k, v in splits.items()}
        for name in evals:
            evals[name] = (remap[evals[name][0]], evals[name][1], evals[name][2])
        train["video"] = remap[train["video"]]
    else:
        keep = None

    genre_names: tuple[str, ...] = ()
    if (extra / "genre_names.json").exists():
        genre_names = tuple(json_list(extra / "genre_names.json", "genre names", str))
    # Every genre id indexes the uploaders' priors (or the genre names): bounded before any use.
    n_genres = len(genre_names) or train["prior"].shape[1]
    if (extra / "music_genre.npy").exists():
        music_genre = _ids(extra / "music_genre.npy", "music genres", nm, -1, n_genres)
    else:
        music_genre = np.full(nm, -1, dtype=np.int64)
        music_genre[train["music"]] = train["genre"]
        clash = music_genre[train["music"]] != train["genre"]
        if clash.any():
            m = int(train["music"][clash][0])
            raise DataError(f"{d / 'train.npy'}: music {m} has two different genres")
    uploader = None
    given_prior = None
    if (extra / "video_uploader.npy").exists():
        uploader = _ids(extra / "video_uploader.npy", "uploader ids", nv, 0, MAX_ID)
        uploader = uploader if keep is None else uploader[keep]
        if uploader.size and uploader.max() >= uploader.size:  # sparse ids: number them 0, 1, …
            uploader = np.unique(uploader, return_inverse=True)[1].astype(np.int64)
    else:
        mean_path = d / "user_prior_mean.npy"
        mean = (
            load_npy(mean_path, "mean uploader prior").astype(np.float32).reshape(-1)
            if mean_path.exists()
            else train["prior"].mean(axis=0)
        )
        if mean.shape != (train["prior"].shape[1],):
            raise DataError(
                f"{mean_path}: holds {mean.size} numbers, but the training rows' user_prior "
                f"has {train['prior'].shape[1]} genres"
            )
        finite(mean, f"{mean_path}", low=0.0)
        given_prior = np.tile(mean, (video_music.size, 1))
        given_prior[train["video"]] = train["prior"]
    propensity = np.full(video_music.size, np.nan)
    propensity[train["video"]] = train["propensity"]
    if (extra / "propensity.json").exists() and json_object(
        extra / "propensity.json", "propensity note", {"derived": bool}
    ).get("derived"):
        propensity[:] = np.nan  # benchkit wrote d_u[g(m)] there; recompute it, as the source did
    truth = None
    if (extra / "truth.json").exists():
        truth = _truth(extra, video_music.size, nm)
    columns = {
        p.stem[len("column_") :]: per_video(load_npy(p), nv, str(p))
        for p in sorted(extra.glob("column_*.npy"))
    }
    if keep is not None:
        columns = {k: v[keep] for k, v in columns.items()}
    pgc_dir = Path(pgc) if pgc is not None else root / PGC_DIR
    pgc_data = read_pgc(pgc_dir) if (pgc is not None or pgc_dir.is_dir()) else None
    if pgc_data is not None and pgc is None and (extra / "pgc_music_genre.npy").exists():
        n_pgc = pgc_data.music_features.shape[0]
        path = extra / "pgc_music_genre.npy"
        pgc_data.music_genre = _ids(path, "PGC music genres", n_pgc, -1, n_genres)
    name = "reference:" + (
        str(
            json_object(extra / "dataset.json", "dataset name", {"name": str}).get(
                "name", root.name
            )
        )
        if (extra / "dataset.json").exists()
        else root.name
    )
    return Dataset(
        name=name,
        video_features=video_features,
        music_features=music_features,
        video_music=video_music,
        splits=splits,
        video_uploader=uploader,
        music_genre=music_genre,
        genre_names=genre_names,
        pgc=pgc_data,
        truth=truth,
        given_prior=given_prior,
        propensity=None if np.isnan(propensity).all() else propensity,
        negatives={s: e[2] for s, e in evals.items()},
        eval_weights={
            s: _weights(d / f"video_popularity_{s}.npy", e[0].size, normalise_weights)
            for s, e in evals.items()
        },
        video_columns=columns,
        meta={
            "source": str(root),
            "format": "reference",
            # a genre cell listing several genres keeps its first (the release's multi-hot)
            "train_rows_with_several_genres": int(train.get("several_genres", 0)),
        },
    )


def _ids(path: Path, what: str, n: int, low: int, high: int) -> np.ndarray:
    """One integer id per row (``n`` rows), each in [low, high)."""
    ids = integers(load_npy(path, what), f"{path} ({what})")
    if ids.shape != (n,):
        raise DataError(f"{path} ({what}): expected {n} ids, one per row, got shape {ids.shape}")
    bounded(ids, low, high, f"{path} ({what})", f"the data has {high} of them")
    return ids


def _truth(extra: Path, n_videos: int, n_music: int) -> Truth:
    """The synthetic world's truth, as benchkit wrote it: checked for shape before use."""
    scalars = json_object(extra / "truth.json", "the world's truth", {})
    bad = [k for k, v in scalars.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        raise DataError(f"{extra / 'truth.json'}: field {bad[0]!r} must be a number")
    parts = {p.stem[len("truth_") :]: load_npy(p) for p in extra.glob("truth_*.npy")}
    shapes = {"video_content": (n_videos, -1), "music_content": (n_music, -1)}
    for key, (rows, _) in shapes.items():
        a = parts.get(key)
        if a is None or a.ndim != 2 or a.shape[0] != rows or not np.issubdtype(a.dtype, np.number):
            raise DataError(
                f"{extra / f'truth_{key}.npy'}: expected ({rows}, K) numbers, got "
                f"{'nothing' if a is None else a.shape}"
            )
    if parts["video_content"].shape[1] != parts["music_content"].shape[1]:
        raise DataError(f"{extra}: truth_video_content and truth_music_content differ in width")
    if "counterfactual" not in parts:
        raise DataError(f"{extra / 'truth_counterfactual.npy'}: missing")
    where = f"{extra / 'truth_counterfactual.npy'}"
    parts["counterfactual"] = integers(parts["counterfactual"], where)
    if parts["counterfactual"].shape != (n_videos,):
        raise DataError(f"{where}: expected one music per video ({n_videos})")
    bounded(parts["counterfactual"], 0, n_music, where, f"{n_music} music")
    return Truth.from_parts(parts, scalars)


def write_reference(ds: Dataset, out: Path | str, negatives_seed: int = 0) -> Path:
    """Write ``ds`` in the DebCM layout (plus benchkit's lossless extras) atomically."""
    from benchkit.data.eval_rows import row_weights, sample_negatives

    if ds.music_genre is None:
        raise DataError(
            f"{ds.name}: the reference layout stores a genre per training row; this "
            f"dataset has no music genres"
        )
    config = ds.meta.get("config", {})
    split_at = int(config.get("music_dims", (ds.music_features.shape[1] // 2,))[0])
    with AtomicDir(out) as tmp:
        d = tmp / MATCHING
        save_npy(d / "visual_features_resnet_V.npy", ds.video_features)
        save_npy(d / "music_features.npy", np.ascontiguousarray(ds.music_features[:, :split_at]))
        save_npy(
            d / "new_music_smile_features_norm.npy",
            np.ascontiguousarray(ds.music_features[:, split_at:]),
        )
        rows = ds.splits["train"]
        prior = ds.with_priors("in-sample").video_prior  # the release's own form of user_prior
        genre = ds.music_genre[ds.video_music[rows]]
        if ds.propensity is not None:
            propensity = ds.propensity[rows]
        else:  # the genre propensity d_u[g(m)], IPS's default; marked so a reader recomputes it
            propensity = prior[rows, np.maximum(genre, 0)].astype(np.float64)
        train = np.empty((rows.size, 5), dtype=object)
        for i, (v, g) in enumerate(zip(rows, genre, strict=True)):
            train[i] = [
                int(v),
                int(ds.video_music[v]),
                f"[{int(g)}]",  # as the release writes it: a string holding a list
                prior[v].tolist(),
                float(propensity[i]),
            ]
        save_npy(d / "train.npy", train)
        for split in ("val", "test"):
            rows = ds.splits[split]
            negs = ds.negatives.get(split)
            if negs is None:
                negs = sample_negatives(ds, split, 100, negatives_seed)
            table = np.empty((rows.size, 3), dtype=object)
            for i, v in enumerate(rows):
                table[i] = [int(v), int(ds.video_music[v]), negs[i]]
            save_npy(d / "100neg" / f"{split}.npy", table)
            save_npy(
                d / f"video_popularity_{split}.npy",
                row_weights(ds, rows, "inverse_popularity", split),
            )
        save_npy(d / "user_prior_mean.npy", ds.prior_mean)
        extra = d / EXTRA
        save_npy(extra / "music_genre.npy", ds.music_genre)
        (extra / "genre_names.json").write_text(json.dumps(list(ds.genre_names)))
        (extra / "dataset.json").write_text(json.dumps({"name": ds.name}))
        (extra / "propensity.json").write_text(json.dumps({"derived": ds.propensity is None}))
        if ds.video_uploader is not None:
            save_npy(extra / "video_uploader.npy", ds.video_uploader)
        for key, col in ds.video_columns.items():
            save_npy(extra / f"column_{key}.npy", col)
        if ds.truth is not None:
            for key, value in ds.truth.arrays().items():
                save_npy(extra / f"truth_{key}.npy", value)
            (extra / "truth.json").write_text(json.dumps(ds.truth.scalars()))
        if ds.pgc is not None and ds.pgc.music_genre is not None:
            save_npy(extra / "pgc_music_genre.npy", ds.pgc.music_genre)
        if ds.pgc is not None:
            p = tmp / PGC_DIR
            save_npy(p / "train.npy", ds.pgc.pairs[ds.pgc.splits["train"]])
            save_npy(p / "val.npy", ds.pgc.pairs[ds.pgc.splits["val"]])
            save_npy(p / "mv_video_resnet_features.npy", ds.pgc.video_features)
            save_npy(
                p / "vggish_features.npy", np.ascontiguousarray(ds.pgc.music_features[:, :split_at])
            )
            save_npy(
                p / "opensmile_features_norm.npy",
                np.ascontiguousarray(ds.pgc.music_features[:, split_at:]),
            )
    return Path(out)
