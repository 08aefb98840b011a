"""Shared building blocks: the fast dropout and the top-k hinge, against their plain definitions."""

from __future__ import annotations

import math

import pytest
import torch

from benchkit.nn import Dropout, hinge_cells, hinge_pair, select_topk


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_dropout_keeps_units_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    x = torch.ones(512, 1023)  # not a multiple of 4 units: the last draw is cut
    y = Dropout(p).train()(x)
    kept = (y > 0).float().mean().item()
    n = x.numel()
    assert abs(kept - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5 + 2**-16
    assert torch.isclose(y[y != 0], torch.tensor(1 / (1 - p))).all()
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # inverted: the mean is kept


def test_dropout_gradient_is_the_mask_and_eval_is_identity():
    torch.manual_seed(1)
    d = Dropout(0.3).train()
    x = torch.randn(64, 33, requires_grad=True)
    y = d(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() / 0.7)
    masks = [(d(torch.ones(8, 8)) > 0) for _ in range(2)]
    assert not torch.equal(*masks)  # a fresh mask every call
    assert torch.equal(d.eval()(x), x)
    with pytest.raises(ValueError):
        Dropout(1.0)


def brute_force_hinge(scores, exclude, margin, k, variant):
    """The definitions, cell by cell over the whole matrix, then the top k of the cells."""
    pos = scores.diagonal()[:, None]
    if variant == "paper":
        cells = (margin - pos + scores).clamp_min(0.0).masked_fill(exclude, float("-inf"))
    else:
        eye = torch.eye(len(scores), dtype=torch.bool)
        cells = (pos - scores - margin).clamp(0.0, 1e6).masked_fill(eye, float("-inf"))
    return cells.topk(k, dim=1).values


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize(("seed", "b"), [(0, 48), (1, 48), (2, 48), (3, 200), (4, 203)])
def test_hinge_selects_on_scores_as_the_definition_selects_on_cells(variant, seed, b):
    g = torch.Generator().manual_seed(seed)
    k = 7
    scores = torch.randn(b, b, generator=g) * 0.3
    music = torch.randint(0, 20, (b,), generator=g)  # repeated music: masked cells
    exclude = music[:, None] == music[None, :]
    term = hinge_cells(scores, exclude, 0.1, k, variant)
    expected = brute_force_hinge(scores, exclude, 0.1, k, variant)
    got = term.value.masked_fill(~term.valid, float("-inf")).sort(dim=1, descending=True).values
    torch.testing.assert_close(got, expected)
    # the columns are the cells the values come from
    pos = scores.diagonal()[:, None]
    picked = scores.gather(1, term.cols)
    if variant == "paper":
        cells = (0.1 - pos + picked).clamp_min(0.0)
        assert not (exclude.gather(1, term.cols) & term.valid).any()
    else:
        cells = (pos - picked - 0.1).clamp(0.0, 1e6)
    torch.testing.assert_close(cells[term.valid], term.value[term.valid])


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_hinge_on_bfloat16_scores_selects_the_cells_of_the_definition(variant):
    """Autocast's scores are bfloat16 (many ties); the negatives are chosen in float32, where each
    bfloat16 value is exact: the cells are the definition's top k, in the scores' precision."""
    g = torch.Generator().manual_seed(11)
    b, k = 300, 40
    scores = (torch.randn(b, b, generator=g) * 0.3).bfloat16()
    music = torch.randint(0, 60, (b,), generator=g)
    exclude = music[:, None] == music[None, :]
    term = hinge_cells(scores, exclude, 0.1, k, variant)
    assert term.value.dtype == torch.bfloat16
    expected = brute_force_hinge(scores, exclude, 0.1, k, variant)  # every cell, in bfloat16
    got = term.value.masked_fill(~term.valid, float("-inf"))
    assert torch.equal(got.sort(dim=1, descending=True).values, expected)


def test_hinge_marks_rows_with_fewer_than_k_negatives_invalid():
    scores = torch.randn(4, 4)
    exclude = torch.ones(4, 4, dtype=torch.bool)  # every column is the anchor's own music
    term = hinge_cells(scores, exclude, 0.1, 3, "paper")
    assert not term.valid.any()


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("b", [40, 161])
def test_hinge_pair_is_both_directions_with_the_definitions_gradient(variant, b):
    g = torch.Generator().manual_seed(3)
    k = 6
    base = torch.randn(b, b, generator=g) * 0.3
    music = torch.randint(0, 15, (b,), generator=g)
    exclude = music[:, None] == music[None, :]
    s = base.clone().requires_grad_(True)
    rows, cols = hinge_pair(s, exclude, 0.1, k, variant)
    assert not rows.transposed and cols.transposed
    by_rows = hinge_cells(s.T.contiguous(), exclude, 0.1, k, variant).value
    torch.testing.assert_close(cols.value.sort(dim=1).values, by_rows.sort(dim=1).values)
    total = sum(t.value.masked_fill(~t.valid, 0.0).sum() for t in (rows, cols))
    total.backward()
    ref = base.clone().requires_grad_(True)
    expected = sum(
        brute_force_hinge(m, exclude, 0.1, k, variant).clamp_min(0.0).sum() for m in (ref, ref.T)
    )
    expected.backward()
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(s.grad, ref.grad)


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize(("n", "k"), [(8, 3), (57, 1), (64, 7), (203, 7), (1031, 25), (300, 40)])
def test_select_topk_selects_the_values_topk_selects(dim, largest, n, k):
    g = torch.Generator().manual_seed(n * k)
    shape = (n, 33) if dim == 0 else (33, n)
    for x in (
        torch.randn(shape, generator=g),
        torch.randint(0, 5, shape, generator=g).float(),  # ties everywhere
        torch.randn(shape, generator=g).masked_fill(  # masked cells, as the hinge masks them
            torch.rand(shape, generator=g) < 0.3, float("-inf") if largest else float("inf")
        ),
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g).masked_fill(
            torch.rand(shape, generator=g) < 0.05, math.nan
        ),
    ):
        values, idx = select_topk(x, k, dim=dim, largest=largest)
        expected = x.topk(k, dim=dim, largest=largest).values
        same = values.sort(dim=dim).values, expected.sort(dim=dim).values
        assert torch.allclose(*same, equal_nan=True) and torch.equal(
            same[0].isnan(), same[1].isnan()
        )
        assert torch.allclose(x.gather(dim, idx), values, equal_nan=True)
        distinct = idx.sort(dim=dim).values.diff(dim=dim)
        assert (distinct > 0).all()  # k different elements
