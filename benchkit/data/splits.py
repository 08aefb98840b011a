"""Test-set protocols (paper §5.1, §5.6.1): which videos train, validate and test.

Each function returns the same data with new ``train`` / ``val`` / ``test`` splits (arrays are
shared, the fingerprint changes). Uploader histories and popularity used by methods are always
recomputed from the new training split, so nothing about a test video's choice leaks.

- ``random``: 8:1:1 at random.
- ``diverse`` (T_diverse): test videos of the uploaders whose genre history is the most diverse.
  Each uploader's earlier half of videos (in time order when the data has a ``time`` column) is
  their history, which stays in training; diversity is measured on it, and only uploaders with
  at least ``min_history`` (4) history videos qualify. The later videos of the most diverse
  uploaders fill the test set, at most ``max_share`` (5%) of it from any one uploader, so that
  "diverse" is a property of many uploaders, not of one prolific one. Validation is random among
  the rest. Diversity (``measure``): ``kl`` (default) — the closer a history's genre distribution
  (smoothed by one pseudo-video spread over the population's mix) is to the population's genre
  mix, the more diverse: the entropy of the history measured against the genres' unequal
  availability, where plain entropy rewards a taste for the few big genres; ``entropy`` — the
  paper's plain entropy of the history (``diverse:entropy``). On the small world (seeds 0–2) the
  test uploaders' true-taste entropy exceeds a random split's by 0.155–0.175 nats with ``kl``,
  0.06–0.09 with ``entropy`` (a selection by the hidden taste itself reaches 0.2).
- ``resplit``: the data's own training split kept; validation and test redrawn at random from its
  validation ∪ test videos in their sizes (seeded) — how replicates vary data read from disk.
  Stored negatives travel with their videos; stored weights are recomputed (inverse popularity).
- ``taste:X`` (a confounder-side intervention, worlds with truth): the random split, with every
  test video's music drawn again from the world's choice model with the uploaders' taste
  strength scaled by X (music, videos, uploaders and the training data unchanged): X = 0 test
  choices ignore the taste, X = 1 follow it as in training, X > 1 follow it more.
- ``matching`` (T_matching): the videos that match their music best, by the mean percentile rank of
  a matching score (the true compatibility on the synthetic world, or a column you name) and of
  video popularity (the ``views`` column when present). Validation is random among the rest.
- ``ratio`` (Fig. 3's genre-ratio intervention X:(1−X)): music-disjoint train/test ("strong
  generalisation"), stratified by popularity. Of the two named genres, the training music keep the
  ratio X:(1−X) and the held-out music (1−X):X; the other genres split 8:1:1. The held-out share of
  the two genres follows from the two ratio constraints (about half of them when their sizes are
  alike); held-out music are split evenly between validation and test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from benchkit.data.dataset import Dataset
from benchkit.errors import ConfigError, DataError


def _split(ds: Dataset, train: np.ndarray, val: np.ndarray, test: np.ndarray, tag: str) -> Dataset:
    for name, rows in (("train", train), ("val", val), ("test", test)):
        if rows.size == 0:
            raise DataError(
                f"{ds.name}: the {tag} split left {name!r} empty; the dataset is too small for it"
            )
    out = ds.with_splits(
        {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)},
        name=f"{ds.name}/{tag}",
    )
    out.meta = {**ds.meta, "test_set": tag}
    return out


def random_splits(
    n: int,
    seed: int | np.random.Generator = 0,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict[str, np.ndarray]:
    """Rows 0 … n−1 cut at random into train / val / test in the given ratios (``seed``: an int or
    a generator to draw from)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([seed, 1])
    order = rng.permutation(n)
    n_train = round(ratios[0] / sum(ratios) * n)
    n_val = round(ratios[1] / sum(ratios) * n)
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }


def random_split(
    ds: Dataset, seed: int = 0, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Dataset:
    s = random_splits(ds.n_videos, seed, ratios)
    return _split(ds, s["train"], s["val"], s["test"], "random")


def genre_entropy(
    genres: np.ndarray, owners: np.ndarray, n_owners: int, n_genres: int
) -> np.ndarray:
    """Entropy (nats) of each owner's genre histogram; owners without items get -inf."""
    counts = np.zeros((n_owners, n_genres))
    np.add.at(counts, (owners, genres), 1)
    total = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return np.where(total[:, 0] > 0, h, -np.inf)


def _rest_val(
    rest: np.ndarray, n_val: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    shuffled = rng.permutation(rest)
    return shuffled[n_val:], shuffled[:n_val]


DIVERSITY_MEASURES = ("kl", "entropy")


def mix_closeness(
    genres: np.ndarray, owners: np.ndarray, n_owners: int, n_genres: int, smoothing: float = 1.0
) -> np.ndarray:
    """−KL(history ‖ population mix) of each owner's genre histogram, smoothed by ``smoothing``
    pseudo-items spread over the mix (owners without items get −inf): 0 for a history that looks
    like the population's, more negative the more it concentrates on a few genres."""
    counts = np.zeros((n_owners, n_genres))
    np.add.at(counts, (owners, genres), 1)
    mix = np.bincount(genres, minlength=n_genres) / max(1, genres.size)
    total = counts.sum(axis=1, keepdims=True)
    p = (counts + smoothing * mix) / np.maximum(total + smoothing, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * np.log(p / np.maximum(mix, 1e-300)), 0.0).sum(axis=1)
    return np.where(total[:, 0] > 0, -kl, -np.inf)


def diverse_split(
    ds: Dataset,
    seed: int = 0,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    min_history: int = 4,
    max_share: float = 0.05,
    measure: str = "kl",
) -> Dataset:
    if ds.video_uploader is None or ds.music_genre is None:
        raise DataError(f"{ds.name}: T_diverse needs uploader ids and music genres")
    if not 0.0 < max_share <= 1.0 or min_history < 1:
        raise ConfigError("T_diverse: max_share must be in (0, 1] and min_history at least 1")
    if measure not in DIVERSITY_MEASURES:
        raise ConfigError(
            f"T_diverse: diversity is measured by {' or '.join(DIVERSITY_MEASURES)}, "
            f"not {measure!r} (write diverse or diverse:entropy)"
        )
    rng = np.random.default_rng([seed, 2])
    upl = ds.video_uploader
    genres = ds.music_genre[ds.video_music]
    # Each uploader's videos in time order (a random order when the data has no time): the earlier
    # half is the history that stays in training, the later half are test candidates.
    time = ds.video_columns.get("time")
    order_key = rng.random(ds.n_videos) if time is None else np.asarray(time, dtype=np.float64)
    by_upl = np.lexsort((order_key, upl))
    sorted_upl = upl[by_upl]
    new_group = np.r_[True, sorted_upl[1:] != sorted_upl[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(ds.n_videos), 0))
    rank = np.empty(ds.n_videos, dtype=np.int64)
    rank[by_upl] = np.arange(ds.n_videos) - group_start
    size = np.bincount(upl, minlength=ds.n_uploaders)
    history = rank < size[upl] - size[upl] // 2
    candidate = ~history
    n_hist = np.bincount(upl[history], minlength=ds.n_uploaders)
    score = genre_entropy if measure == "entropy" else mix_closeness
    entropy = score(genres[history], upl[history], ds.n_uploaders, ds.n_genres)
    entropy[n_hist < min_history] = -np.inf  # too short a history to call anyone diverse
    n_test = round(test_fraction * ds.n_videos)
    cap = max(1, int(max_share * n_test))
    ranked = np.lexsort((rng.random(ds.n_uploaders), -entropy))
    ranked = ranked[np.isfinite(entropy[ranked])]
    test_parts, taken = [], 0
    for u in ranked:
        if taken >= n_test:
            break
        rows = np.flatnonzero(candidate & (upl == u))
        rows = rows[np.argsort(order_key[rows], kind="stable")][: min(cap, n_test - taken)]
        test_parts.append(rows)
        taken += rows.size
    if not test_parts:
        raise DataError(
            f"{ds.name}: no uploader has {min_history} or more videos of history; T_diverse "
            f"needs some (lower min_history)"
        )
    test = np.concatenate(test_parts)
    rest = np.setdiff1d(np.arange(ds.n_videos), test)
    train, val = _rest_val(rest, round(val_fraction * ds.n_videos), rng)
    out = _split(ds, train, val, test, "diverse" if measure == "kl" else "diverse-entropy")
    out.meta["diverse"] = {
        "uploaders": len(test_parts),
        "largest_share": float(max(p.size for p in test_parts) / test.size),
        "min_history": min_history,
        "max_share": max_share,
        "measure": measure,
        "filled": float(test.size / max(1, n_test)),
    }
    return out


def matching_score(ds: Dataset, column: str | None) -> np.ndarray:
    """Per video, how well its music matches: a named column, else the true compatibility."""
    if column is not None:
        if column not in ds.video_columns:
            raise DataError(
                f"{ds.name}: no per-video column {column!r}; columns: "
                f"{', '.join(sorted(ds.video_columns)) or 'none'}"
            )
        return _finite(ds, column)
    if ds.truth is None:
        columns = ", ".join(sorted(ds.video_columns)) or "none"
        raise DataError(
            f"{ds.name}: T_matching needs a matching score; real data has no true "
            f"compatibility, so name a per-video score column: --test-set matching:COLUMN "
            f"(columns: {columns})"
        )
    t = ds.truth
    fit = (t.video_content * t.music_content[ds.video_music]).sum(axis=1)
    return fit / (np.sqrt(t.video_content.shape[1]) * t.scale)


def _finite(ds: Dataset, column: str) -> np.ndarray:
    values = np.asarray(ds.video_columns[column], dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(
            f"{ds.name}: per-video column {column!r} has NaN or inf in {int(bad.sum())} "
            f"row(s), e.g. row {int(np.flatnonzero(bad)[0])}; clean it before ranking by it"
        )
    return values


def _percentile(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable") / max(1, x.size - 1)


def matching_split(
    ds: Dataset,
    seed: int = 0,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    matching_column: str | None = None,
    popularity_column: str | None = "views",
) -> Dataset:
    rng = np.random.default_rng([seed, 3])
    rank = _percentile(matching_score(ds, matching_column))
    if popularity_column is not None and popularity_column in ds.video_columns:
        rank = 0.5 * (rank + _percentile(_finite(ds, popularity_column)))
    jitter = rng.random(ds.n_videos) * 1e-9
    order = np.argsort(-(rank + jitter), kind="stable")
    n_test = round(test_fraction * ds.n_videos)
    test = order[:n_test]
    train, val = _rest_val(order[n_test:], round(val_fraction * ds.n_videos), rng)
    return _split(ds, train, val, test, "matching")


def stratified_pick(
    items: np.ndarray, k: int, popularity: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``k`` of ``items`` spread over their popularity: sort by popularity, cut into k contiguous
    bins, draw one item per bin."""
    if k <= 0:
        return items[:0]
    if k >= items.size:
        return items.copy()
    ranked = items[np.argsort(popularity[items] + rng.random(items.size) * 1e-6, kind="stable")]
    edges = np.linspace(0, items.size, k + 1).round().astype(np.int64)
    picks = edges[:-1] + (rng.random(k) * np.diff(edges)).astype(np.int64)
    return ranked[picks]


def _train_counts(n_a: int, n_b: int, x: float, train_share: float) -> tuple[int, int]:
    """Training music of genres A and B with ratio x:(1−x) in training and (1−x):x held out."""
    if abs(2 * x - 1) < 1e-9:
        t = train_share * (n_a + n_b)
    else:
        t = (x * n_a - (1 - x) * n_b) / (2 * x - 1)
    a, b = round(x * t), round((1 - x) * t)
    return int(np.clip(a, 1, n_a - 2)), int(np.clip(b, 1, n_b - 2))


def ratio_split(
    ds: Dataset,
    x: float,
    genres: tuple[str, str] = ("hiphop", "jazz"),
    seed: int = 0,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Dataset:
    if not 0.0 < x < 1.0:
        raise ConfigError(f"the genre ratio X must be in (0, 1), got {x}")
    if ds.music_genre is None:
        raise DataError(f"{ds.name}: the genre-ratio intervention needs music genres")
    names = list(ds.genre_names)
    missing = [g for g in genres if g not in names]
    if missing:
        raise ConfigError(f"unknown genre(s) {', '.join(missing)}; genres: {', '.join(names)}")
    rng = np.random.default_rng([seed, 4, round(x * 1000)])
    pop = ds.music_popularity.astype(np.float64)
    ga, gb = (names.index(g) for g in genres)
    music = np.arange(ds.n_music)
    split_of = np.full(ds.n_music, -1)
    a_items, b_items = music[ds.music_genre == ga], music[ds.music_genre == gb]
    if a_items.size < 3 or b_items.size < 3:
        raise DataError(
            f"{ds.name}: genres {genres} need at least 3 music each for the intervention"
        )
    share = ratios[0] / sum(ratios)
    n_a, n_b = _train_counts(a_items.size, b_items.size, x, share)
    for items, n_train in ((a_items, n_a), (b_items, n_b)):
        train = stratified_pick(items, n_train, pop, rng)
        held = np.setdiff1d(items, train)
        val = stratified_pick(held, held.size // 2, pop, rng)
        split_of[train], split_of[held], split_of[val] = 0, 2, 1
    others = music[(ds.music_genre != ga) & (ds.music_genre != gb)]
    train = stratified_pick(others, round(share * others.size), pop, rng)
    held = np.setdiff1d(others, train)
    val = stratified_pick(held, round(ratios[1] / (ratios[1] + ratios[2]) * held.size), pop, rng)
    split_of[train], split_of[held], split_of[val] = 0, 2, 1
    video_split = split_of[ds.video_music]
    out = _split(
        ds,
        np.flatnonzero(video_split == 0),
        np.flatnonzero(video_split == 1),
        np.flatnonzero(video_split == 2),
        f"ratio{x:g}",
    )
    out.meta["ratio_genres"] = list(genres)
    return out


def resplit(ds: Dataset, seed: int = 0) -> Dataset:
    """The data's own training videos; validation and test redrawn from their union, in their
    sizes. Stored negatives move with their videos (refused when only one split has them: the
    others would have none); weights are recomputed by the protocol."""
    val, test = ds.splits["val"], ds.splits["test"]
    pool = np.concatenate([val, test])
    if val.size < 2 or test.size < 2:
        raise DataError(
            f"{ds.name}: its validation and test splits ({val.size} and {test.size} videos) "
            f"leave no room to redraw them; use --replicates 1"
        )
    stored = [name for name in ("val", "test") if name in ds.negatives]
    if len(stored) == 1:
        raise DataError(
            f"{ds.name}: negatives are stored for {stored[0]!r} only, so redrawn videos of the "
            f"other split would have none; replicates cannot redraw this split (--replicates 1)"
        )
    order = np.random.default_rng([seed, 5]).permutation(pool)
    new_val, new_test = order[: val.size], order[val.size :]
    out = _split(ds, ds.splits["train"], new_val, new_test, "resplit")
    if stored:
        negatives = np.concatenate([ds.negatives["val"], ds.negatives["test"]])
        row_of = {int(v): i for i, v in enumerate(pool)}
        moved = {
            name: negatives[[row_of[int(v)] for v in out.splits[name]]] for name in ("val", "test")
        }
        out = replace(out, negatives=moved)
    return out


def taste_split(ds: Dataset, x: float, seed: int = 0) -> Dataset:
    """The random split; each test video's music drawn again from the world's choice model with
    the uploaders' taste strength scaled by ``x`` (seeded): a shift of the confounder's strength
    among the test uploaders, with the music pool, the videos and the training data unchanged."""
    if not (np.isfinite(x) and 0.0 <= x <= 10.0):
        raise ConfigError(f"the taste scale X of taste:X must be in [0, 10], got {x}")
    if ds.truth is None or ds.truth.choice is None:
        raise DataError(
            f"{ds.name}: the taste intervention redraws test choices from the world's choice "
            f"model; data without truth has none (use ratio:X on real data)"
        )
    base = random_split(ds, seed)
    test = base.splits["test"]
    music = ds.video_music.copy()
    rng = np.random.default_rng([seed, 6, round(x * 1000)])
    music[test] = ds.truth.draw_choice(test, x, rng)
    tag = f"taste{x:g}"
    out = replace(
        base,
        name=f"{ds.name}/{tag}",
        video_music=music,
        content_id=f"{ds.content_fingerprint}:{tag}",
        meta={**base.meta, "test_set": tag, "eval_content": f"{ds.content_fingerprint}:{tag}"},
    )
    return out


TEST_SETS: dict[str, Callable[..., Dataset]] = {
    "random": random_split,
    "diverse": diverse_split,
    "matching": matching_split,
    "resplit": resplit,
}


def apply_test_set(ds: Dataset, spec: str | None, seed: int = 0, **options: Any) -> Dataset:
    """``None``/``given`` keeps the dataset's splits; ``random``, ``diverse``, ``matching`` (by the
    true compatibility), ``matching:COLUMN`` (by a per-video score column of the data), or
    ``ratio:X`` (e.g. ``ratio:0.8``, genres from ``options['genres']``)."""
    if spec in (None, "", "given"):
        return ds
    if spec.startswith("matching:"):
        column = spec.split(":", 1)[1]
        if not column:
            raise ConfigError("test set matching:COLUMN needs a column name after the colon")
        return matching_split(ds, seed=seed, matching_column=column, **options)
    if spec.startswith(("ratio:", "taste:")):
        kind, _, raw = spec.partition(":")
        try:
            x = float(raw)
        except ValueError:
            raise ConfigError(
                f"test set {spec!r}: write {kind}:X with X a number, e.g. {kind}:0.8"
            ) from None
        if kind == "taste":
            return taste_split(ds, x, seed=seed)
        return ratio_split(ds, x, seed=seed, **options)
    if spec.startswith("diverse:"):
        return diverse_split(ds, seed=seed, measure=spec.split(":", 1)[1], **options)
    if spec not in TEST_SETS:
        raise ConfigError(
            f"unknown test set {spec!r}; choose given, random, diverse, diverse:entropy, "
            f"matching, matching:COLUMN, ratio:X, taste:X or resplit"
        )
    return TEST_SETS[spec](ds, seed=seed, **options)
