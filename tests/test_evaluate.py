"""Protocols and the scoring pipeline on a hand-made dataset whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchkit.data.dataset import Dataset
from benchkit.data.eval_rows import sample_negatives
from benchkit.errors import DataError
from benchkit.evaluate import FullProtocol, PaperProtocol, evaluate
from benchkit.interfaces import Backbone, Latent
from benchkit.method import Method

N_MUSIC, N_VIDEO = 150, 400


def handmade(**extra) -> Dataset:
    """Video features are the one-hot of the chosen music; music features the identity."""
    rng = np.random.default_rng(0)
    choice = rng.choice(
        N_MUSIC, size=N_VIDEO, p=np.linspace(1, 5, N_MUSIC) / np.linspace(1, 5, N_MUSIC).sum()
    )
    order = rng.permutation(N_VIDEO)
    return Dataset(
        name="handmade",
        video_features=np.eye(N_MUSIC, dtype=np.float32)[choice],
        music_features=np.eye(N_MUSIC, dtype=np.float32),
        video_music=choice,
        splits={"train": order[:200], "val": order[200:300], "test": order[300:]},
        **extra,
    )


class Scorer(Backbone):
    """Codes are the features times ``sign`` (identity = oracle, -1 = anti-oracle, 0 = constant)."""

    name = "scorer"
    defaults = {"sign": 1.0}

    def build(self, spec):
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_video(self, x):
        return Latent(self.hparams["sign"] * x)

    def encode_music(self, x):
        return Latent(x)

    def loss_terms(self, batch, out):
        return {}


def method(sign: float) -> Method:
    bb = Scorer(sign=sign)
    bb.build(None)
    return Method(bb)


@pytest.fixture(scope="module")
def data():
    return handmade()


@pytest.mark.parametrize("protocol", [PaperProtocol(), FullProtocol()])
def test_oracle_scores_perfectly(data, plugins, protocol):
    ev = evaluate(method(1.0), data, protocol, plugins.metrics, "test", torch.device("cpu"))
    assert all(v == pytest.approx(1.0) for v in ev.metrics.values())
    assert (ev.ranks.n_greater == 0).all() and (ev.ranks.n_equal == 0).all()


def test_anti_oracle_scores_zero_on_paper(data, plugins):
    ev = evaluate(method(-1.0), data, PaperProtocol(), plugins.metrics, "test", torch.device("cpu"))
    assert (ev.ranks.n_greater == 100).all()
    assert all(v == 0.0 for v in ev.metrics.values())


@pytest.mark.parametrize(
    ("protocol", "n_candidates"), [(PaperProtocol(), 101), (FullProtocol(), N_MUSIC)]
)
def test_constant_scorer_gets_chance(data, plugins, protocol, n_candidates):
    ev = evaluate(method(0.0), data, protocol, plugins.metrics, "test", torch.device("cpu"))
    for k in (10, 15, 20, 25):
        assert ev.metrics[f"recall@{k}"] == pytest.approx(k / n_candidates)
    assert ev.ranks.n_candidates == n_candidates


def test_weights_are_normalised_inverse_popularity(data):
    task = PaperProtocol().task(data, "test")
    pop = np.bincount(data.video_music, minlength=N_MUSIC)
    raw = 1.0 / pop[data.video_music[data.splits["test"]]]
    np.testing.assert_allclose(task.weights, raw / raw.sum())
    assert task.weights.sum() == pytest.approx(1.0)
    uniform = PaperProtocol(weighting="uniform").task(data, "test").weights
    np.testing.assert_allclose(uniform, 1 / 100)


def test_negatives_are_distinct_exclude_positive_and_fixed_by_seed(data):
    negs = sample_negatives(data, "test", 100, seed=0)
    pos = data.video_music[data.splits["test"]]
    assert negs.shape == (100, 100)
    assert not (negs == pos[:, None]).any()
    assert all(np.unique(row).size == 100 for row in negs)
    again = sample_negatives(handmade(), "test", 100, seed=0)  # a fresh but identical dataset
    np.testing.assert_array_equal(negs, again)
    other = sample_negatives(data, "test", 100, seed=1)
    assert not np.array_equal(negs, other)


def test_stored_negatives_are_used_and_checked():
    pos = handmade().video_music[handmade().splits["test"]]
    clean = np.array([[m for m in range(N_MUSIC) if m != p][:100] for p in pos])
    ok = handmade(negatives={"test": clean})
    np.testing.assert_array_equal(PaperProtocol().task(ok, "test").candidates[:, 1:], clean)
    dirty = clean.copy()
    dirty[3, 7] = pos[3]
    with pytest.raises(DataError, match="contain the positive music in 1 row"):
        handmade(negatives={"test": dirty})


def test_protocol_fingerprint_tracks_settings():
    assert PaperProtocol().fingerprint() == PaperProtocol().fingerprint()
    assert PaperProtocol().fingerprint() != PaperProtocol(seed=1).fingerprint()
    assert PaperProtocol().fingerprint() != FullProtocol().fingerprint()
    assert PaperProtocol(tie="pessimistic").fingerprint() != PaperProtocol().fingerprint()
