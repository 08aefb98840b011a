"""The synthetic world and the dataset model: determinism, cache, causal structure, validation."""

from __future__ import annotations

import numpy as np
import pytest

from benchkit.data.dataset import Dataset
from benchkit.data.features import with_feature_dtype
from benchkit.data.synth import (
    GENRE_COUNTS,
    PRESETS,
    generate,
    genre_counts,
    make_world,
    popularity_targets,
)
from benchkit.errors import ConfigError, DataError


def test_deterministic_per_seed_and_cached(tiny):
    fresh = generate(PRESETS["tiny"], seed=0, name="synth-tiny")
    np.testing.assert_array_equal(fresh.video_features, tiny.video_features)
    np.testing.assert_array_equal(fresh.video_music, tiny.video_music)
    assert fresh.fingerprint == tiny.fingerprint
    again = make_world("tiny", seed=0)  # from the disk cache
    np.testing.assert_array_equal(again.music_features, tiny.music_features)
    np.testing.assert_array_equal(again.pgc.pairs, tiny.pgc.pairs)
    np.testing.assert_array_equal(again.truth.counterfactual, tiny.truth.counterfactual)
    other = make_world("tiny", seed=1)
    assert other.fingerprint != tiny.fingerprint
    assert not np.array_equal(other.video_music, tiny.video_music)


def test_genre_counts_follow_table2():
    np.testing.assert_array_equal(genre_counts(3003), GENRE_COUNTS)
    small = genre_counts(120)
    assert small.sum() == 120 and (small >= 1).all()


def test_paper_preset_has_table2_size():
    cfg = PRESETS["paper"]
    assert (cfg.n_music, cfg.n_videos, cfg.video_dim, sum(cfg.music_dims)) == (
        3003,
        146351,
        2048,
        256,
    )


def test_popularity_targets_have_table2_shape():
    t = popularity_targets(3003, 146351, 57 / 49, 3, 219)
    assert t.mean() == pytest.approx(146351 / 3003)
    assert t.std() == pytest.approx(57, abs=1.0)
    assert t.min() >= 3 and t.max() <= 219


def test_videos_per_music_stay_within_the_range(tiny):
    counts = np.bincount(tiny.video_music, minlength=tiny.n_music)
    assert counts.min() >= 3 and counts.max() <= 219
    assert counts.std() / counts.mean() == pytest.approx(57 / 49, rel=0.15)


@pytest.mark.slow
def test_paper_preset_reproduces_table2():
    ds = make_world("paper", seed=0)
    counts = np.bincount(ds.video_music, minlength=ds.n_music)
    assert (ds.n_music, ds.n_videos) == (3003, 146351)
    assert counts.mean() == pytest.approx(48.7, abs=0.1)
    assert counts.std() == pytest.approx(57, abs=2)
    assert (counts.min(), counts.max()) == (3, 219)
    np.testing.assert_array_equal(np.bincount(ds.music_genre), GENRE_COUNTS)


def test_taste_is_a_confounder_of_the_choice(tiny):
    # Without taste and with the whole pool in view, the counterfactual is the choice itself
    # (only the few videos that the min/max-support repair moved may differ).
    unbiased = make_world("tiny", seed=0, taste_strength=0.0, consideration_share=1.0)
    differ = (unbiased.truth.counterfactual != unbiased.video_music).sum()
    assert differ <= unbiased.meta["videos_moved_by_support_repair"]
    moved = tiny.truth.counterfactual != tiny.video_music
    assert 0.2 < moved.mean() < 0.95
    # The observed choice lies in what the uploader considered; the counterfactual, free of that
    # limit, often does not.
    c = tiny.truth.choice
    upl = tiny.video_uploader
    assert c.consider[upl, tiny.video_music].mean() > 0.99
    assert c.consider[upl[moved], tiny.truth.counterfactual[moved]].mean() < 0.6
    # Where the genre differs, the uploader likes the chosen genre more than the counterfactual's.
    g = tiny.music_genre
    other = moved & (g[tiny.truth.counterfactual] != g[tiny.video_music])
    taste = tiny.meta["uploader_taste"][upl[other]]
    rows = np.arange(other.sum())
    chosen = taste[rows, g[tiny.video_music[other]]]
    counterfactual = taste[rows, g[tiny.truth.counterfactual[other]]]
    assert (chosen > counterfactual).mean() > 0.75


def test_true_compatibility_drives_the_choice(tiny):
    rows = tiny.splits["test"]
    compat = tiny.truth.compatibility(rows)
    chosen = compat[np.arange(rows.size), tiny.video_music[rows]]
    assert chosen.mean() > compat.mean() + 1.0  # chosen music fit far better than average


def test_features_look_like_the_paper(tiny):
    assert tiny.video_features.dtype == np.float32 and (tiny.video_features >= 0).all()
    assert np.isfinite(tiny.music_features).all()
    assert tiny.pgc.video_features.shape[1] == tiny.video_features.shape[1]
    assert set(tiny.pgc.splits) == {"train", "val"}


def test_unknown_knob_and_preset():
    with pytest.raises(ConfigError, match="unknown synthetic-world knob"):
        make_world("tiny", tastes=1.0)
    with pytest.raises(ConfigError, match="unknown synthetic preset 'huge'"):
        make_world("huge")


def test_priors_come_from_the_training_split_only(tiny):
    prior = tiny.video_prior
    assert prior.shape == (tiny.n_videos, tiny.n_genres)
    np.testing.assert_allclose(prior.sum(axis=1), 1.0, rtol=1e-5)
    # Changing the music of every test video must not change any prior.
    altered_music = tiny.video_music.copy()
    test = tiny.splits["test"]
    altered_music[test] = (altered_music[test] + 1) % tiny.n_music
    altered = Dataset(
        name="altered",
        video_features=tiny.video_features,
        music_features=tiny.music_features,
        video_music=altered_music,
        splits=tiny.splits,
        video_uploader=tiny.video_uploader,
        music_genre=tiny.music_genre,
        genre_names=tiny.genre_names,
    )
    np.testing.assert_array_equal(altered.video_prior, prior)
    # An uploader's prior is the genre histogram of their training videos (the whole history for
    # a video outside it; leave-one-out for a training video: tests/test_replication.py).
    u = tiny.video_uploader[tiny.splits["train"][0]]
    mine = tiny.splits["train"][tiny.video_uploader[tiny.splits["train"]] == u]
    hist = np.bincount(tiny.music_genre[tiny.video_music[mine]], minlength=tiny.n_genres)
    np.testing.assert_allclose(tiny.uploader_prior[u], hist / hist.sum(), rtol=1e-6)
    in_sample = tiny.with_priors("in-sample").video_prior
    np.testing.assert_allclose(in_sample[mine[0]], hist / hist.sum(), rtol=1e-6)


def _base(**change):
    args = dict(
        name="bad",
        video_features=np.zeros((4, 3), np.float32),
        music_features=np.zeros((2, 3), np.float32),
        video_music=[0, 1, 0, 1],
        splits={"train": [0, 1], "val": [2], "test": [3]},
    )
    args.update(change)
    return Dataset(**args)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"video_features": np.array([[np.nan, 0, 0]] * 4, np.float32)}, "NaN or inf"),
        ({"video_music": [0, 1, 0, 5]}, "music ids out of range"),
        ({"video_music": [0, 1, 0]}, "one entry per video"),
        ({"splits": {"train": [0, 1], "val": [2], "test": []}}, "split 'test' is empty"),
        ({"splits": {"train": [0, 1], "val": [1], "test": [3]}}, "both 'train' and 'val'"),
        ({"splits": {"train": [0, 1], "val": [2]}}, "missing split 'test'"),
        ({"video_features": np.zeros(4, np.float32)}, "2-d array"),
        ({"music_genre": [0]}, "one genre per music"),
    ],
)
def test_validation_names_the_field(change, message):
    with pytest.raises(DataError, match=message):
        _base(**change)


def test_float16_feature_storage(plugins, tiny):
    from benchkit.api import run

    half = with_feature_dtype(tiny, "float16")
    assert half.video_features.dtype == np.float16 and half.pgc.video_features.dtype == np.float16
    assert half.video_features.nbytes * 2 == tiny.video_features.nbytes
    assert half.fingerprint != tiny.fingerprint and with_feature_dtype(half, "float16") is half
    full = run("cmvae", "none", dataset=tiny, epochs=2, plugins=plugins, precision="fp32")
    small = run(
        "cmvae",
        "none",
        dataset=tiny,
        epochs=2,
        plugins=plugins,
        precision="fp32",
        features="float16",
    )
    assert small.dataset["fingerprint"] != full.dataset["fingerprint"]
    assert abs(small.metrics["recall@25"] - full.metrics["recall@25"]) < 0.05
    with pytest.raises(DataError, match="feature storage must be one of"):
        with_feature_dtype(tiny, "int8")
