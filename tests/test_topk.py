"""The streaming top-K's merges against a brute-force ranking of the whole matrix, and its checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchkit.errors import DataError
from benchkit.topk import _best_first, _merge, merge_block, refuse_non_finite


def stream(scores: torch.Tensor, k: int, block: int, group: int) -> tuple[torch.Tensor, ...]:
    """top_k's loop over one chunk: blocks merged into a running list, then sorted."""
    n, m = scores.shape
    val = torch.empty((n, 0))
    idx = torch.empty((n, 0), dtype=torch.long)
    for b in range(0, m, block):
        part = scores[:, b : b + block]
        if val.shape[1] < k:
            val, idx = _merge(val, idx, part, b, k)
        else:
            val, idx = merge_block(val, idx, part, b, group=group)
    return _best_first(val, idx)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 12),
    blocks=st.integers(1, 9),
    block=st.sampled_from([32, 64, 96, 100]),
    group=st.sampled_from([4, 8, 32]),
    k=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_the_merges_give_the_best_k_of_the_whole_matrix(rows, blocks, block, group, k, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, blocks * block + seed % 7, generator=gen)  # a ragged last block
    k = min(k, scores.shape[1])
    val, idx = stream(scores, k, block, group)
    # no ties among continuous draws: the same columns, in the same order, as a full sort
    expected = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    assert torch.equal(idx, expected)
    assert torch.equal(val, scores.gather(1, expected))


@settings(max_examples=30, deadline=None)
@given(
    levels=st.integers(2, 6),
    k=st.integers(1, 30),
    seed=st.integers(0, 2**16),
    group=st.sampled_from([4, 32]),
)
def test_ties_keep_the_best_values_and_break_by_column_within_the_list(levels, k, seed, group):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (6, 640), generator=gen).float()
    val, idx = stream(scores, k, 64, group)
    assert torch.equal(val, scores.sort(dim=1, descending=True).values[:, :k])
    assert torch.equal(scores.gather(1, idx), val)  # every column carries its own score
    assert all(len(set(r)) == k for r in idx.tolist())  # and none twice
    same = val[:, 1:] == val[:, :-1]
    assert bool((idx[:, 1:] > idx[:, :-1])[same].all())  # equal scores listed by column


def test_a_row_with_nothing_better_keeps_its_list_untouched():
    best_val = torch.tensor([[5.0, 4.0, 3.0], [1.0, 0.5, 0.2]])
    best_idx = torch.tensor([[0, 1, 2], [3, 4, 5]])
    block = torch.tensor([[2.0, 3.0] * 16, [0.1] * 31 + [0.75]])
    val, idx = merge_block(best_val, best_idx, block, offset=100, group=8)
    assert torch.equal(val[0], best_val[0]) and torch.equal(idx[0], best_idx[0])  # 3.0 ties
    assert sorted(idx[1].tolist()) == [3, 4, 131] and sorted(val[1].tolist()) == [0.5, 0.75, 1.0]
    assert torch.equal(best_val[1], torch.tensor([1.0, 0.5, 0.2]))  # the caller's list unchanged


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_scores_are_refused_with_their_row(bad):
    scores = torch.randn(5, 70)
    scores[3, 41] = bad
    with pytest.raises(DataError, match=r"videos: row 13 gives non-finite scores"):
        refuse_non_finite(scores, 10, "scores")
    refuse_non_finite(torch.randn(5, 70), 0, "scores")
    refuse_non_finite(torch.empty(0, 4), 0, "codes")
