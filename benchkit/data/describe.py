"""What a dataset holds, in numbers (``benchkit data describe``): Table 2's statistics and the
test set's diversity, beside the world's truth where it has one."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchkit.data.dataset import Dataset


def describe(ds: Dataset) -> dict[str, Any]:
    """Table 2's statistics (and a few more): sizes, videos per music, genres, uploaders."""
    counts = ds.music_popularity
    out: dict[str, Any] = {
        "name": ds.name,
        "fingerprint": ds.fingerprint,
        "music": ds.n_music,
        "videos": ds.n_videos,
        "videos_per_music_mean": float(counts.mean()),
        "videos_per_music_std": float(counts.std()),
        "videos_per_music_min": int(counts.min()),
        "videos_per_music_max": int(counts.max()),
        "uploaders": ds.n_uploaders,
        "splits": {k: int(v.size) for k, v in ds.splits.items()},
        "pgc_pairs": 0 if ds.pgc is None else int(ds.pgc.pairs.shape[0]),
    }
    if ds.music_genre is not None:
        names = ds.genre_names or tuple(str(i) for i in range(ds.n_genres))
        gc = np.bincount(ds.music_genre[ds.music_genre >= 0], minlength=ds.n_genres)
        out["genres"] = {names[i]: int(gc[i]) for i in range(ds.n_genres)}
    if ds.music_genre is not None and ds.video_uploader is not None:
        from benchkit.data.splits import genre_entropy

        h = genre_entropy(
            np.maximum(ds.music_genre[ds.video_music], 0),
            ds.video_uploader,
            ds.n_uploaders,
            ds.n_genres,
        )
        h = h[np.isfinite(h)]
        out["uploader_entropy_mean"] = float(h.mean())
        out["uploader_entropy_std"] = float(h.std())
    if ds.video_uploader is not None:
        test_upl = ds.video_uploader[ds.splits["test"]]
        shares = np.bincount(test_upl) / test_upl.size
        out["test_uploaders"] = int((shares > 0).sum())
        out["test_largest_uploader_share"] = float(shares.max())
    choice = None if ds.truth is None else ds.truth.choice
    if choice is not None:
        from benchkit.data.synth import taste_at

        taste = taste_at(
            choice.taste0[choice.video_uploader],
            choice.taste1[choice.video_uploader],
            choice.video_time,
        )
        entropy = -(taste * np.log(taste)).sum(axis=1)
        out["test_true_taste_entropy"] = float(entropy[ds.splits["test"]].mean())
        out["random_split_true_taste_entropy"] = float(entropy.mean())
    return out
