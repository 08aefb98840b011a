"""The rows of an evaluation as data: sampled negatives and per-row weights.

Both belong to the data, not to a model: the reference layout stores them (``100neg/*.npy``,
``video_popularity_*.npy``), and :mod:`benchkit.evaluate`'s paper protocol samples them the same
way when a dataset does not ship them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np

from benchkit.data.checks import check_ids
from benchkit.data.dataset import Dataset
from benchkit.errors import ConfigError


def row_weights(
    dataset: Dataset, rows: np.ndarray, weighting: str, split: str | None = None
) -> np.ndarray:
    """Per-row weights summing to 1: the inverse popularity of each row's music (as the dataset
    stores them for ``split``, when it does), or uniform."""
    if weighting == "inverse_popularity" and split in dataset.eval_weights:
        return np.asarray(dataset.eval_weights[split], dtype=np.float64)
    if weighting == "uniform":
        return np.full(rows.size, 1.0 / rows.size)
    if weighting == "inverse_popularity":
        pop = dataset.music_popularity[dataset.video_music[rows]].astype(np.float64)
        w = 1.0 / np.maximum(pop, 1.0)
        return w / w.sum()
    raise ConfigError(f"unknown weighting {weighting!r}; choose inverse_popularity or uniform")


_NEGATIVES: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()


def sample_negatives(dataset: Dataset, split: str, n_negatives: int, seed: int) -> np.ndarray:
    """(n, n_negatives) distinct music per row, none of them the row's positive.

    Deterministic in (seed, the split's rows and positives, the number of music); kept in a small
    in-process cache because validation asks for the same set every epoch.
    """
    key = (dataset.fingerprint, split, n_negatives, seed)
    if key in _NEGATIVES:
        _NEGATIVES.move_to_end(key)
        return _NEGATIVES[key]
    rows = dataset.splits[split]
    positives = dataset.video_music[rows]
    n_music = dataset.n_music
    if n_negatives > n_music - 1:
        raise ConfigError(
            f"the protocol wants {n_negatives} negatives per test video but the dataset "
            f"has only {n_music} music; lower them with --set protocol.n_negatives="
            f"{max(1, n_music - 1)} (at most {n_music - 1}) or rank against every music with "
            f"--protocol full"
        )
    # Seeded by the rows themselves (which videos, which positives, how many music), not by the
    # dataset's fingerprint: the same evaluation rows get the same negatives in every file format.
    h = hashlib.sha256(np.ascontiguousarray(rows).tobytes())
    h.update(np.ascontiguousarray(positives).tobytes())
    h.update(str(n_music).encode())
    rng = np.random.default_rng([seed, int(h.hexdigest()[:15], 16)])
    out = np.empty((rows.size, n_negatives), dtype=np.int64)
    step = max(1, 2**24 // n_music)
    for s in range(0, rows.size, step):
        keys = rng.random((min(step, rows.size - s), n_music), dtype=np.float32)
        keys[np.arange(keys.shape[0]), positives[s : s + step]] = 2.0  # never the positive
        out[s : s + step] = np.argpartition(keys, n_negatives - 1, axis=1)[:, :n_negatives]
    _NEGATIVES[key] = out
    while len(_NEGATIVES) > 8:
        _NEGATIVES.popitem(last=False)
    return out


def with_training_labels(
    ds: Dataset, music: np.ndarray, tag: str, splits: tuple[str, ...] = ("train",)
) -> Dataset:
    """The same data with the music of the videos of ``splits`` replaced (a control: what a
    method learns from other choices). By default only the training labels: early stopping
    then reads the observed validation choices, as a real method's does. Everything a method
    or a metric reads besides those labels stays as it was: the uploaders' histories d_u,
    the test videos' music, their popularity weights and sampled negatives."""
    music = np.asarray(music, dtype=np.int64)
    check_ids(music, ds.n_music, f"{ds.name}: training labels", "music")
    labels = ds.video_music.copy()
    for split in splits:
        rows = ds.splits[split]
        labels[rows] = music[rows]
    from benchkit.data.eval_rows import row_weights

    weights = dict(ds.eval_weights)
    kept = [name for name in ("val", "test") if name not in splits]
    for name in kept:  # the evaluation weights of the observed choices, whatever the labels
        if name not in weights:
            weights[name] = row_weights(ds, ds.splits[name], "inverse_popularity")
    return replace(
        ds,
        name=f"{ds.name}+{tag}-labels",
        video_music=labels,
        given_prior=ds.video_prior if ds.has("uploaders") else ds.given_prior,
        negatives={k: v for k, v in ds.negatives.items() if k not in splits},
        eval_weights={k: v for k, v in weights.items() if k in kept},
        content_id=f"{ds.content_fingerprint}:{tag}-labels",
        meta={
            **ds.meta,
            "eval_content": ds.meta.get("eval_content", ds.content_fingerprint),
        },
    )
