"""Feature preprocessing: fitted on the training rows only, the same transform everywhere, recorded."""

from __future__ import annotations

import numpy as np
import pytest

from benchkit.api import plan_run
from benchkit.data.features import apply_feature_norm, fit_feature_norm, with_normalised_features
from benchkit.data.splits import apply_test_set
from benchkit.data.synth import make_world
from benchkit.errors import ConfigError
from benchkit.spec import RunSpec


def test_zscore_is_fitted_on_training_rows_only(tiny):
    out = with_normalised_features(tiny, "zscore")
    train = tiny.splits["train"]
    np.testing.assert_allclose(out.video_features[train].mean(axis=0), 0.0, atol=1e-4)
    used = np.unique(tiny.video_music[train])
    std = out.music_features[used].std(axis=0)
    np.testing.assert_allclose(std[std > 0], 1.0, rtol=1e-3)
    # Test videos do not take part: changing them leaves the statistics as they were.
    altered = tiny.with_splits(tiny.splits)
    altered.video_features = tiny.video_features.copy()
    altered.video_features[tiny.splits["test"]] *= 100.0
    again = with_normalised_features(altered, "zscore")
    np.testing.assert_array_equal(
        again.meta["features_norm"]["video_mean"], out.meta["features_norm"]["video_mean"]
    )
    # The PGC clips are z-scored with the statistics of every UGC video and music (no labels),
    # so no split changes them: a world's teacher is the same for every test set.
    everything = fit_feature_norm(
        "zscore",
        tiny.video_features,
        np.arange(tiny.n_videos),
        tiny.music_features,
        np.arange(tiny.n_music),
    )
    np.testing.assert_allclose(
        out.pgc.video_features, apply_feature_norm(tiny.pgc.video_features, everything, "video")
    )
    other = with_normalised_features(apply_test_set(tiny, "diverse"), "zscore")
    assert other.pgc.fingerprint == out.pgc.fingerprint
    assert other.meta["features_norm"]["video_mean"].tolist() != stats_of(out)
    assert out.fingerprint != tiny.fingerprint


def stats_of(ds):
    return ds.meta["features_norm"]["video_mean"].tolist()


def test_l2_and_none(tiny):
    l2 = with_normalised_features(tiny, "l2")
    np.testing.assert_allclose(np.linalg.norm(l2.video_features, axis=1), 1.0, rtol=1e-5)
    assert with_normalised_features(tiny, "none") is tiny
    with pytest.raises(Exception, match="feature normalisation must be one of"):
        with_normalised_features(tiny, "minmax")


def test_the_choice_is_part_of_the_run_and_its_key(tiny, plugins):
    plans = {
        norm: plan_run(RunSpec(features_norm=norm, epochs=1), dataset=tiny, plugins=plugins)
        for norm in ("none", "zscore", "l2")
    }
    assert len({p.key for p in plans.values()}) == 3
    assert plans["zscore"].dataset.meta["features_norm"]["kind"] == "zscore"
    with pytest.raises(ConfigError, match="--features-norm"):
        RunSpec(features_norm="minmax")


def test_realistic_features_look_like_real_extractors_output():
    world = make_world("tiny", seed=0, feature_map="realistic")
    video, music = world.video_features, world.music_features
    assert (video >= 0).all() and (video == 0).mean() > 0.2  # post-ReLU, sparse
    spread = video.std(axis=0)
    assert np.percentile(spread, 95) / np.percentile(spread[spread > 0], 5) > 20  # mixed scales
    vggish = music[:, :32]
    assert vggish.min() >= 0 and vggish.max() <= 255 and np.allclose(vggish, np.round(vggish))
    linear = make_world("tiny", seed=0)
    np.testing.assert_array_equal(world.video_music, linear.video_music)  # same choices
