"""CMVAE: the loss terms, the two variants, gradients, determinism and save/load."""

from __future__ import annotations

import io

import pytest
import torch

from benchkit.errors import ConfigError
from benchkit.method import Method
from benchkit.nn import hinge_cells
from benchkit.pairs import ugc_pairs
from benchkit_plugins.backbones.cmvae import CMVAE


def built(tiny, seed=0, **hp):
    torch.manual_seed(seed)
    bb = CMVAE(**hp)
    bb.build(tiny.spec())
    return Method(bb)


def batch(tiny, n=64):
    pairs = ugc_pairs(tiny, "train", torch.device("cpu"))
    return pairs.batch(torch.arange(n))


def test_terms_have_declared_granularity(tiny):
    m = built(tiny, hard_negatives=10, variance="free")
    _, terms = m(batch(tiny))
    assert set(terms) == {
        "match_video",
        "match_music",
        "kl_video",
        "kl_music",
        "recon_video",
        "recon_music",
    }
    assert terms["match_video"].kind == "cell" and terms["match_video"].value.shape == (64, 10)
    assert terms["match_music"].transposed and not terms["match_video"].transposed
    for key in ("kl_video", "kl_music", "recon_video", "recon_music"):
        assert terms[key].kind == "anchor" and terms[key].value.shape == (64,)
    # With a fixed variance the KL to N(0, I) is a constant of no gradient: it is left out.
    _, fixed = built(tiny, hard_negatives=10, variance="fixed")(batch(tiny))
    assert set(fixed) == set(terms) - {"kl_video", "kl_music"}


def test_gradients_reach_every_parameter(tiny):
    m = built(tiny)
    loss, _ = m.loss(batch(tiny))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_paper_hinge_uses_hardest_negatives_and_masks_same_music():
    s = torch.tensor(
        [[1.0, 0.98, 0.2, 0.99], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.5, 0.0, 0.0, 1.0]],
        requires_grad=True,
    )
    music = torch.tensor([7, 8, 9, 7])  # pairs 0 and 3 share their music: a false negative
    same = music[:, None] == music[None, :]
    term = hinge_cells(s, same, margin=0.05, k=2, variant="paper")
    # Row 0: column 3 is masked; the hardest remaining negatives are column 1 (0.98), then 2.
    assert term.cols[0].tolist() == [1, 2]
    assert term.value[0].tolist() == pytest.approx([0.05 - 1.0 + 0.98, 0.0], abs=1e-6)
    assert not term.valid[0].logical_not().any()


def test_reference_hinge_gives_no_gradient_to_a_margin_violation():
    # Row 0: negative 1 violates the margin (0.98 > 1 - 0.05); negative 2 satisfies it.
    s = torch.tensor([[1.0, 0.98, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    same = torch.eye(3, dtype=torch.bool)
    ref = hinge_cells(s, same, margin=0.05, k=2, variant="reference")
    ref.value[0].sum().backward()
    assert s.grad[0, 1] == 0.0  # the violating pair does not move
    assert s.grad[0, 2] != 0.0  # the easy pair does
    s.grad = None
    paper = hinge_cells(s, same, margin=0.05, k=2, variant="paper")
    paper.value[0].sum().backward()
    assert s.grad[0, 1] != 0.0 and s.grad[0, 2] == 0.0  # the fixed loss does the opposite


def test_reference_variant_has_negative_coefficients_and_keeps_false_negatives(tiny):
    m = built(tiny, variant="reference", hard_negatives=200)
    b = batch(tiny, 128)
    _, terms = m(b)
    assert terms["match_video"].coef == -1.0 and terms["match_music"].coef == -1.0
    same_off_diag = b.same_music & ~torch.eye(128, dtype=torch.bool)
    assert same_off_diag.any()  # the tiny world has repeated music in a batch
    cols = terms["match_video"].cols
    valid = terms["match_video"].valid
    picked = torch.zeros(128, 128, dtype=torch.bool)
    picked.scatter_(1, cols, valid)
    assert (picked & same_off_diag).any()  # reference keeps same-music cells as negatives
    _, paper_terms = built(tiny, hard_negatives=200)(b)
    picked[:] = False
    picked.scatter_(1, paper_terms["match_video"].cols, paper_terms["match_video"].valid)
    assert not (picked & same_off_diag).any()


def test_deterministic_under_seed(tiny):
    b = batch(tiny)
    torch.manual_seed(5)
    l1, _ = built(tiny, seed=3).loss(b)
    torch.manual_seed(5)
    l2, _ = built(tiny, seed=3).loss(b)
    assert l1.item() == l2.item()


def test_state_round_trip(tiny):
    m = built(tiny)
    m.eval()
    b = batch(tiny)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    other = built(tiny, seed=99)
    other.load_state_dict(torch.load(buf, weights_only=True))
    other.eval()
    torch.testing.assert_close(m.video_codes(b.video), other.video_codes(b.video))
    torch.testing.assert_close(m.music_codes(b.music), other.music_codes(b.music))


def test_bad_hyperparameters():
    with pytest.raises(ConfigError, match=r"variant.* must be one of paper, reference"):
        CMVAE(variant="fancy")
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        CMVAE(margn=0.1)
    with pytest.raises(ConfigError, match="expects float"):
        CMVAE(margin="wide")
