"""The world's validity: its choice model, the interventional metrics, the controls, T_diverse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchkit.api import run
from benchkit.data.describe import describe
from benchkit.data.splits import apply_test_set
from benchkit.data.synth import make_world, taste_at
from benchkit.data.truth import ChoiceModel, Truth
from benchkit.errors import ConfigError
from benchkit.oracle import expected_topk

# A world strongly confounded on purpose: the uploaders' taste marks their videos (style), narrows
# what they consider, and weighs heavily in their choice.
CONFOUNDED = {"style_strength": 2.0, "consideration_share": 0.3, "taste_strength": 3.0}


def hand_world() -> Truth:
    """3 uploaders, 4 music (2 genres), 2 videos: small enough to sum everything by hand."""
    rng = np.random.default_rng(0)
    choice = ChoiceModel(
        content_strength=2.0,
        taste_strength=1.5,
        coupling=0.7,
        video_spread=0.8,
        style_noise=0.5,
        offsets=np.array([0.3, -0.2, 0.1, 0.0]),
        music_genre=np.array([0, 0, 1, 1]),
        taste0=np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]),
        taste1=np.array([[0.9, 0.1], [0.1, 0.9], [0.2, 0.8]]),
        uploader_weight=np.array([0.5, 0.3, 0.2]),
        consider=np.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1]], dtype=bool),
        centres=rng.standard_normal((2, 3)),
        genre_mix=np.array([0.6, 0.4]),
        uploader_style=rng.standard_normal((3, 2)),
        video_style=rng.standard_normal((2, 2)),
        video_time=np.array([0.25, 0.8]),
        video_uploader=np.array([0, 2]),
    )
    return Truth(
        video_content=rng.standard_normal((2, 3)),
        music_content=rng.standard_normal((4, 3)),
        counterfactual=np.array([0, 1]),
        scale=1.3,
        choice=choice,
    )


def brute_force(t: Truth, v: int, estimand: str) -> np.ndarray:
    c = t.choice
    compat = t.compatibility(np.array([v]))[0]
    if estimand == "fit":
        logits = c.content_strength * compat
        return np.exp(logits) / np.exp(logits).sum()
    base = c.content_strength * compat + c.offsets
    if estimand == "cf":
        return np.exp(base) / np.exp(base).sum()
    out = np.zeros(4)
    weights = []
    for u in range(3):
        taste = taste_at(c.taste0[u : u + 1], c.taste1[u : u + 1], c.video_time[v : v + 1])[0]
        logits = base + c.taste_strength * np.log(taste[c.music_genre])
        p = np.where(c.consider[u], np.exp(logits), 0.0)
        p /= p.sum()
        w = c.uploader_weight[u]
        if estimand == "observed":  # P(u | v) ∝ P(u) p(content | u) p(style | u)
            genre_p = c.coupling * taste + (1 - c.coupling) * c.genre_mix
            lik = sum(
                genre_p[g]
                * math.exp(
                    -((t.video_content[v] - c.centres[g]) ** 2).sum() / (2 * c.video_spread**2)
                )
                for g in range(2)
            )
            lik *= math.exp(
                -((c.video_style[v] - c.uploader_style[u]) ** 2).sum() / (2 * c.style_noise**2)
            )
            w *= lik
        weights.append(w)
        out += w * p
    return out / sum(weights)


@pytest.mark.parametrize("estimand", ["cf", "backdoor", "fit", "observed"])
def test_interventional_distributions_match_a_brute_force_sum(estimand):
    t = hand_world()
    got = t.probabilities(np.array([0, 1]), estimand).numpy()
    for v in (0, 1):
        np.testing.assert_allclose(got[v], brute_force(t, v, estimand), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)


def test_mixtures_stay_exact_where_their_fast_sums_underflow():
    """The backdoor and observed mixtures are summed as matrix products of exponentials shifted by
    each genre's best music; where a content strength of thousands leaves an uploader's considered
    music of a genre e^-700 below that best, those rows are summed directly instead."""
    t = hand_world()
    assert t.choice is not None
    t.choice.content_strength = 5000.0
    rows = np.array([0, 1])
    for estimand in ("backdoor", "observed"):
        got = t.probabilities(rows, estimand)
        engine = t._engines[torch.device("cpu")]
        base = engine.c.content_strength * engine.compat(rows) + engine.offsets
        weights, time = engine._weights(rows, estimand), engine._time(rows)
        fast = engine._mixture(base, weights, time)
        assert torch.isnan(fast).any()  # the case this test is about
        direct = engine._mixture_direct(base, weights, time)
        torch.testing.assert_close(got, direct, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got.sum(dim=1).numpy(), 1.0)


def test_expected_recall_is_the_mean_over_draws():
    """cf_recall@K = Σ_m P(m) · 1(rank(m) < K): the average recall of a draw from P, exactly."""
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(12), size=5)
    scores = torch.tensor(rng.standard_normal((5, 12)))
    k = 4
    got = expected_topk(scores, torch.tensor(p), k, discounted=False)
    top = scores.argsort(dim=1, descending=True)[:, :k].numpy()
    want = np.array([p[i, top[i]].sum() for i in range(5)])
    np.testing.assert_allclose(got.numpy(), want)
    # And the Monte Carlo mean over draws converges to it.
    draws = np.stack([rng.choice(12, size=20000, p=row) for row in p])
    hits = np.array([np.isin(draws[i], top[i]).mean() for i in range(5)])
    np.testing.assert_allclose(hits, want, atol=0.02)


def test_the_world_records_its_choice_model(tiny):
    c = tiny.truth.choice
    assert c is not None and c.taste0.shape == (tiny.n_uploaders, tiny.n_genres)
    assert c.consider.shape == (tiny.n_uploaders, tiny.n_music)
    np.testing.assert_allclose(c.uploader_weight.sum(), 1.0)
    assert "time" in tiny.video_columns and "views" in tiny.video_columns
    # Every observed choice lies in its uploader's consideration set.
    assert c.consider[tiny.video_uploader, tiny.video_music].mean() > 0.99


def test_knobs_shape_the_world():
    world = make_world("tiny", seed=0, **CONFOUNDED, eclectic_share=0.5, drift_share=0.5)
    meta, c = world.meta, world.truth.choice
    assert 0.3 < meta["uploader_eclectic"].mean() < 0.7
    drifting = meta["uploader_drifting"]
    assert 0.3 < drifting.mean() < 0.7
    assert np.allclose(c.taste0[~drifting], c.taste1[~drifting])
    assert not np.allclose(c.taste0[drifting], c.taste1[drifting])
    assert np.allclose(c.consider.mean(axis=1), 0.3, atol=0.01)
    entropy = -(c.taste0 * np.log(c.taste0)).sum(axis=1)
    assert entropy[meta["uploader_eclectic"]].mean() > entropy[~meta["uploader_eclectic"]].mean()
    # The style carries the taste: uploaders of the same top genre share a style direction.
    top = c.taste0.argmax(axis=1)
    same = top[:, None] == top[None, :]
    style = c.uploader_style / np.linalg.norm(c.uploader_style, axis=1, keepdims=True)
    cos = style @ style.T
    assert cos[same].mean() > cos[~same].mean() + 0.2


@pytest.mark.parametrize(
    ("knob", "value"),
    [("taste_content_coupling", 1.5), ("consideration_share", 0.0), ("eclectic_share", -0.1)],
)
def test_bad_knobs_fail_in_one_line(knob, value):
    with pytest.raises(ConfigError, match=knob):
        make_world("tiny", seed=0, cache=False, **{knob: value})


def test_oracle_rankers_win_on_their_own_targets(plugins):
    """Each Bayes-optimal ranker beats the others on the distribution it is optimal for."""
    world = make_world("tiny", seed=0, **CONFOUNDED)
    m = {
        score: run("oracle", dataset=world, overrides={"score": score}, plugins=plugins).metrics
        for score in ("cf", "biased", "backdoor")
    }
    assert m["cf"]["cf_recall@25"] > m["biased"]["cf_recall@25"] + 0.05
    assert m["backdoor"]["bd_recall@25"] >= m["biased"]["bd_recall@25"]
    assert m["backdoor"]["bd_recall@25"] >= m["cf"]["bd_recall@25"]


def test_the_positive_control_beats_none_on_its_target(plugins):
    """Trained on the counterfactual choices, the same backbone ranks them higher: the instrument
    can detect debiasing when there is some to detect."""
    world = make_world("tiny", seed=0, **CONFOUNDED)
    common = {"dataset": world, "plugins": plugins, "test_set": "random", "epochs": 20}
    none = run("cmvae", **common).metrics
    positive = run("cmvae", labels="counterfactual", **common).metrics
    assert positive["cf_recall@25"] > none["cf_recall@25"] + 0.03
    assert none["recall@25"] > positive["recall@25"]  # and the observed choices lose


def test_counterfactual_labels_change_only_the_training_labels(tiny, plugins):
    from benchkit.api import plan_run
    from benchkit.spec import RunSpec

    plan = plan_run(RunSpec(labels="counterfactual", epochs=1), dataset=tiny, plugins=plugins)
    ds = plan.dataset
    cf = tiny.truth.counterfactual
    rows = tiny.splits["train"]
    np.testing.assert_array_equal(ds.video_music[rows], cf[rows])
    for split in ("val", "test"):  # early stopping reads what a real method would: observed
        rows = tiny.splits[split]
        np.testing.assert_array_equal(ds.video_music[rows], tiny.video_music[rows])
    np.testing.assert_array_equal(ds.video_prior, tiny.video_prior)  # d_u from what was observed
    assert ds.fingerprint != tiny.fingerprint
    with pytest.raises(ConfigError, match="needs a world with truth"):
        bare = tiny.with_splits(tiny.splits)
        bare.truth = None
        plan_run(RunSpec(labels="counterfactual"), dataset=bare, plugins=plugins)


def test_t_diverse_has_many_uploaders_and_respects_its_cap():
    world = make_world("tiny", seed=0, eclectic_share=0.3)
    ds = apply_test_set(world, "diverse", seed=0)
    test = ds.splits["test"]
    shares = np.bincount(ds.video_uploader[test]) / test.size
    assert shares.max() <= 0.05 + 1e-9
    assert ds.meta["diverse"]["uploaders"] >= 20
    # Test videos come after their uploader's history, which stays in training.
    time = ds.video_columns["time"]
    train = set(ds.splits["train"].tolist())
    for u in np.unique(ds.video_uploader[test])[:10]:
        mine = np.flatnonzero(ds.video_uploader == u)
        hist = [v for v in mine if v in train]
        assert len(hist) >= 4
    described = describe(ds)
    assert described["test_largest_uploader_share"] <= 0.05 + 1e-9
    # Diverse uploaders really are diverse in truth (eclectic ones were picked).
    assert described["test_true_taste_entropy"] > described["random_split_true_taste_entropy"]
    assert time.shape == (world.n_videos,)


def test_every_combination_of_estimand_rows_is_a_distribution(tiny):
    rows = tiny.splits["test"][:7]
    for estimand in ("cf", "backdoor", "fit", "observed"):
        p = tiny.truth.probabilities(rows, estimand)
        assert p.shape == (7, tiny.n_music)
        np.testing.assert_allclose(p.sum(dim=1).numpy(), 1.0, rtol=1e-9)
        assert (p >= 0).all()
