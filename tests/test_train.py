"""The training loop and the loss reduction."""

from __future__ import annotations

import platform
import resource
import sys

import pytest
import torch

from benchkit.device import keep_freed_memory
from benchkit.interfaces import LossTerm, Weights
from benchkit.method import Method, reduce_term
from benchkit.pairs import ugc_pairs
from benchkit.train import DivergedError, fit
from benchkit_plugins.backbones.cmvae import CMVAE


def cmvae(tiny, **hp):
    torch.manual_seed(0)
    bb = CMVAE(**hp)
    bb.build(tiny.spec())
    return Method(bb)


def test_anchor_reduction_is_self_normalised():
    term = LossTerm(torch.tensor([1.0, 2.0, 4.0]))
    assert reduce_term(term, None) == pytest.approx(7 / 3)
    w = Weights(anchor=torch.tensor([1.0, 1.0, 2.0]))
    assert reduce_term(term, w) == pytest.approx((1 + 2 + 8) / 4)


def test_cell_reduction_uses_cols_validity_and_orientation():
    value = torch.tensor([[1.0, 3.0], [2.0, float("-inf")]])
    cols = torch.tensor([[1, 2], [0, 2]])
    valid = torch.tensor([[True, True], [True, False]])
    cell = torch.tensor([[1.0, 1.0, 3.0], [5.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    term = LossTerm(value, kind="cell", cols=cols, valid=valid)
    assert reduce_term(term, None) == pytest.approx(((1 + 3) / 2 + 2) / 2)
    # Cell weights of the valid cells (0,1)=1, (0,2)=3, (1,0)=5 are normalised to mean 1 over the
    # batch: 1/3, 1, 5/3. Row 0 = (1/3·1 + 1·3)/2, row 1 = 5/3·2.
    got = reduce_term(term, Weights(cell=cell))
    assert got == pytest.approx(((1 / 3 + 3) / 2 + 10 / 3) / 2)
    # Transposed: row i is music i, so the weight of cell (i, j) is cell[j, i]: 5, 1 and 1.
    term_t = LossTerm(value, kind="cell", cols=cols, valid=valid, transposed=True)
    got_t = reduce_term(term_t, Weights(cell=cell))
    assert got_t == pytest.approx(((15 / 7 + 9 / 7) / 2 + 6 / 7) / 2)
    # Anchor weights on a cell term weight its rows (SNIPS over rows when rows are full).
    full = LossTerm(torch.tensor([[1.0, 3.0], [5.0, 7.0]]), kind="cell")
    assert reduce_term(full, Weights(anchor=torch.tensor([1.0, 3.0]))) == pytest.approx(
        (1 * 2 + 3 * 6) / 4
    )


def test_sum_rows_keep_skipped_anchors_in_the_denominator():
    term = LossTerm(
        torch.tensor([[2.0], [0.0], [4.0]]),
        kind="cell",
        valid=torch.tensor([[True], [False], [True]]),
        cols=torch.tensor([[1], [0], [0]]),
        row_reduce="sum",
    )
    assert reduce_term(term, None) == pytest.approx(6 / 3)
    # Cell weights 1 and 3 on the two valid cells → 0.5 and 1.5 after normalisation.
    cell = torch.tensor([[1.0, 1.0, 1.0], [9.0, 1.0, 1.0], [3.0, 1.0, 1.0]])
    assert reduce_term(term, Weights(cell=cell)) == pytest.approx((0.5 * 2 + 1.5 * 4) / 3)


def test_row_without_valid_cells_counts_as_zero():
    term = LossTerm(
        torch.tensor([[2.0], [float("-inf")]]),
        kind="cell",
        valid=torch.tensor([[True], [False]]),
        cols=torch.tensor([[1], [0]]),
    )
    assert reduce_term(term, None) == pytest.approx(1.0)


def test_fit_keeps_the_best_epoch_and_stops_early(tiny):
    m = cmvae(tiny)
    pairs = ugc_pairs(tiny, "train", torch.device("cpu"))
    scores = iter([0.5, 0.9, 0.3, 0.2, 0.1, 0.0, 0.0])
    snapshots = []

    def validate(method):
        snapshots.append({k: v.clone() for k, v in method.state_dict().items()})
        return next(scores)

    result = fit(
        m, pairs, epochs=7, batch_size=512, seed=0, validate=validate, patience=3, precision="fp32"
    )
    assert result.best_epoch == 2 and result.best_score == 0.9
    assert result.epochs_run == 5 and result.stopped_early  # epochs 3, 4, 5 did not improve
    for key, value in m.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][key])
    assert result.pairs_per_second > 0 and len(result.history) == 5


def test_fit_is_deterministic_under_seed(tiny):
    pairs = ugc_pairs(tiny, "train", torch.device("cpu"))
    states = []
    for _ in range(2):
        m = cmvae(tiny)
        torch.manual_seed(1)
        fit(m, pairs, epochs=2, batch_size=512, seed=7, precision="fp32")
        states.append(m.state_dict())
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key])


def test_divergence_is_reported(tiny):
    m = cmvae(tiny, lr=1e30, weight_decay=0.0)
    pairs = ugc_pairs(tiny, "train", torch.device("cpu"))
    with pytest.raises(DivergedError, match="lower the learning rate"):
        fit(m, pairs, epochs=3, batch_size=512, seed=0, precision="fp32")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_training_reuses_freed_memory_instead_of_faulting_in_fresh_pages():
    assert keep_freed_memory()
    x = torch.empty(2 << 20)  # 8 MB, a 1,024 × 2,048 batch of features
    x.fill_(1.0)
    del x
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        x = torch.empty(2 << 20)
        x.fill_(1.0)
        del x
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 1000  # each fresh 8 MB mapping would fault in 2,048 pages
