"""Test-set protocols: T_diverse, T_matching, the genre-ratio intervention, and no leakage."""

from __future__ import annotations

import numpy as np
import pytest

from benchkit.data.dataset import Dataset
from benchkit.data.splits import (
    apply_test_set,
    diverse_split,
    genre_entropy,
    matching_score,
    matching_split,
    ratio_split,
    stratified_pick,
)
from benchkit.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def small_world():
    from benchkit.data.synth import make_world

    return make_world("tiny", seed=3, n_videos=6000, n_uploaders=300)


def test_diverse_picks_high_entropy_uploaders_with_a_history(small_world):
    ds = diverse_split(small_world)
    test, train = ds.splits["test"], ds.splits["train"]
    assert test.size == round(0.1 * ds.n_videos)
    # Entropy measured on the training split: test uploaders are far more diverse than average.
    h = genre_entropy(
        ds.music_genre[ds.video_music[train]], ds.video_uploader[train], ds.n_uploaders, ds.n_genres
    )
    test_h = h[np.unique(ds.video_uploader[test])]
    assert np.isfinite(test_h).all()  # every test uploader keeps a training history
    assert test_h.mean() > np.nanmean(np.where(np.isfinite(h), h, np.nan)) + 0.2


def test_matching_picks_the_best_matched_videos(small_world):
    ds = matching_split(small_world)
    score = matching_score(ds, None)
    assert score[ds.splits["test"]].mean() > score[ds.splits["train"]].mean() + 0.5
    views = ds.video_columns["views"]
    assert np.median(views[ds.splits["test"]]) > np.median(views[ds.splits["train"]])


def test_matching_needs_a_score_on_real_data(tiny):
    real = tiny.with_splits(tiny.splits)
    real.truth = None
    with pytest.raises(DataError, match="name a per-video score column"):
        matching_split(real)
    ok = matching_split(real, matching_column="views", popularity_column=None)
    assert ok.splits["test"].size == 300


@pytest.mark.parametrize("x", [0.8, 0.7, 0.6, 0.5])
def test_genre_ratio_intervention(small_world, x):
    ds = ratio_split(small_world, x)
    names = list(ds.genre_names)
    a, b = names.index("hiphop"), names.index("jazz")
    train_m = np.unique(ds.video_music[ds.splits["train"]])
    held_m = np.unique(ds.video_music[np.r_[ds.splits["val"], ds.splits["test"]]])
    assert np.intersect1d(train_m, held_m).size == 0  # strong generalisation: music-disjoint
    g = ds.music_genre
    share_train = (g[train_m] == a).sum() / np.isin(g[train_m], (a, b)).sum()
    share_held = (g[held_m] == a).sum() / np.isin(g[held_m], (a, b)).sum()
    assert share_train == pytest.approx(x, abs=0.05)
    assert share_held == pytest.approx(1 - x, abs=0.1)
    others = ~np.isin(g, (a, b))
    frac = np.isin(np.flatnonzero(others), train_m).mean()
    assert frac == pytest.approx(0.8, abs=0.05)  # the other genres split 8:1:1


def test_stratified_pick_spreads_over_popularity():
    rng = np.random.default_rng(0)
    items = np.arange(1000)
    pop = np.arange(1000.0)
    picked = stratified_pick(items, 100, pop, rng)
    assert picked.size == 100 and np.unique(picked).size == 100
    assert np.histogram(picked, bins=10, range=(0, 1000))[0].tolist() == [10] * 10


def test_bad_test_set_names(tiny):
    with pytest.raises(ConfigError, match="unknown test set 'skewed'"):
        apply_test_set(tiny, "skewed")
    with pytest.raises(ConfigError, match="ratio:X with X a number"):
        apply_test_set(tiny, "ratio:high")
    with pytest.raises(ConfigError, match="must be in"):
        apply_test_set(tiny, "ratio:1.5")
    with pytest.raises(ConfigError, match="unknown genre"):
        ratio_split(tiny, 0.8, genres=("hiphop", "polka"))


@pytest.mark.parametrize("spec", ["random", "diverse", "matching", "ratio:0.7"])
def test_no_leakage_from_test_videos(small_world, spec):
    """Priors and training popularity depend on the training split only: changing the music of
    every test video changes neither."""
    ds = apply_test_set(small_world, spec)
    test = ds.splits["test"]
    music = ds.video_music.copy()
    music[test] = (music[test] + 7) % ds.n_music
    altered = Dataset(
        name="altered",
        video_features=ds.video_features,
        music_features=ds.music_features,
        video_music=music,
        splits=ds.splits,
        video_uploader=ds.video_uploader,
        music_genre=ds.music_genre,
        genre_names=ds.genre_names,
    )
    np.testing.assert_array_equal(altered.video_prior, ds.video_prior)
    np.testing.assert_array_equal(altered.train_popularity, ds.train_popularity)
