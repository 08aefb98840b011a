"""Every installed backbone passes the conformance kit that plugin authors use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchkit.api import run
from benchkit.errors import ConfigError
from benchkit.method import Method
from benchkit.pairs import ugc_pairs
from benchkit.plugins import load_plugins
from benchkit.testing import check_backbone

BACKBONES = load_plugins().backbones.names()


def test_all_six_of_table3_and_the_two_floors_are_installed():
    assert {"cevar", "cmvbr", "dscmr", "uwml", "dual_vae", "cmvae", "random", "cca"} <= set(
        BACKBONES
    )


@pytest.mark.parametrize("name", BACKBONES)
def test_conformance(plugins, name):
    # The floors learn nothing of content: chance, and popularity (which the inverse-popularity
    # weights of the paper's protocol put below chance) are only asked to run.
    floor = name in ("random", "popularity")
    report = check_backbone(plugins.backbones.get(name), min_gain=-1.0 if floor else 0.05)
    assert "save/load" in report.checks and "learns" in report.checks


def test_random_is_exactly_chance(plugins, tiny):
    out = run("random", "none", dataset=tiny, protocol="full", plugins=plugins)
    for k in (10, 15, 20, 25):
        assert out.metrics[f"recall@{k}"] == pytest.approx(k / tiny.n_music)
    out = run("random", "none", dataset=tiny, protocol="paper", plugins=plugins)
    assert out.metrics["recall@25"] == pytest.approx(25 / 101)


def test_cca_recovers_a_planted_linear_relation(plugins):
    """Music features are a rotation of the video features plus noise: CCA's top correlations ≈ 1."""
    from benchkit.data.dataset import Dataset

    rng = np.random.default_rng(0)
    latent = rng.standard_normal((400, 4)).astype(np.float32)
    video = latent @ rng.standard_normal((4, 30)).astype(np.float32)
    video += 0.01 * rng.standard_normal(video.shape).astype(np.float32)
    ds = Dataset(
        name="planted",
        video_features=video,
        music_features=latent.copy(),
        video_music=np.arange(400),
        splits={"train": np.arange(300), "val": np.arange(300, 350), "test": np.arange(350, 400)},
    )
    cca = plugins.backbones.get("cca")(dim=4)
    cca.build(ds.spec())
    method = Method(cca)
    cca.fit_closed_form(ugc_pairs(ds, "train", torch.device("cpu")))
    assert cca.correlations.min() > 0.99
    out = run("cca", "none", dataset=ds, protocol="full", plugins=plugins, overrides={"dim": 4})
    assert out.metrics["recall@10"] > 0.9
    assert method.video_codes(torch.from_numpy(video[:3])).shape == (3, 4)


def test_dscmr_needs_genres(plugins, tiny):
    no_genre = tiny.with_splits(tiny.splits)
    no_genre.music_genre = None
    with pytest.raises(ConfigError, match="backbone 'dscmr' needs genres"):
        run("dscmr", "none", dataset=no_genre, plugins=plugins)


def test_closed_form_refuses_training_strategies(plugins, tiny):
    from benchkit.interfaces import Strategy, Weights

    class Reweight(Strategy):
        name = "reweight"

        def weights(self, batch):
            return Weights(anchor=torch.ones(batch.size))

    assert Reweight.hook_points() == frozenset({"weights"})
    from benchkit.stack import check_compatible

    with pytest.raises(ConfigError, match="fitted in closed form"):
        check_compatible(plugins.backbones.get("cca")(), [Reweight()], tiny)


def test_cevar_swaps_make_negatives(tiny):
    from benchkit_plugins.backbones.cevar import CEVAR

    torch.manual_seed(0)
    bb = CEVAR(p_neg=1.0)
    bb.build(tiny.spec())
    m = Method(bb)
    batch = ugc_pairs(tiny, "train", torch.device("cpu")).batch(torch.arange(64))
    out, terms = m(batch)
    # With every pair swapped, each loss is the hinge [cos − μ]_+/(1 − μ) of a mismatched pair
    # (or 1 − cos where the swap landed on the same music): never the plain positive loss.
    diag = out.scores.diagonal()
    assert not torch.allclose(terms["match"].value, 1 - diag)


def test_uwml_skips_anchors_without_informative_negatives():
    from benchkit_plugins.backbones.uwml import poly_terms

    s = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.5, 0.6], [0.0, 0.0, 0.9]])
    same = torch.eye(3, dtype=torch.bool)
    pos, neg = poly_terms(s, same, margin=0.2)
    # Row 0: 0.1 + 0.2 < 0.9, no informative negative → skipped. Row 1: 0.6 + 0.2 > 0.5.
    assert pos.value[0] == 0 and not neg.valid[0, 0]
    assert neg.valid[1, 0] and neg.cols[1, 0] == 2
    assert pos.value[1] == pytest.approx(0.2 * 0.25 - 0.35 + 0.5)
    assert neg.value[1, 0] == pytest.approx(max(0.0, 0.9 * 0.36 - 0.24 + 0.03))


def test_cmvbr_structure_loss_is_zero_when_orders_agree():
    from benchkit_plugins.backbones.cmvbr import structure_loss

    x = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    assert structure_loss(x, x).abs().max() == 0  # the embedding keeps the input's order exactly
    flipped = structure_loss(x, torch.nn.functional.normalize(torch.randn(16, 8), dim=1))
    assert flipped.sum() > 0  # disagreeing orders are penalised
