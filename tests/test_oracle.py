"""Oracle and bias metrics: exact tie handling, and values a known scorer must get."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchkit.oracle import OracleAccumulator, TieRanks, expected_topk


def brute(scores, values, k, discounted):
    """Average over every order that sorts the scores (ties in all possible orders)."""
    n = len(scores)
    totals = []
    for perm in itertools.permutations(range(n)):
        if all(scores[perm[i]] >= scores[perm[i + 1]] for i in range(n - 1)):
            w = [(1 / math.log2(p + 2) if discounted else 1.0) if p < k else 0.0 for p in range(n)]
            totals.append(sum(values[perm[p]] * w[p] for p in range(n)))
    return sum(totals) / len(totals)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 3), st.floats(0, 5)), min_size=1, max_size=6),
    k=st.integers(1, 7),
    discounted=st.booleans(),
)
def test_expected_topk_equals_brute_force_over_tie_orders(data, k, discounted):
    scores, values = zip(*data, strict=True)
    got = expected_topk(
        torch.tensor([scores], dtype=torch.float32),
        torch.tensor([values], dtype=torch.float64),
        k,
        discounted,
    )
    assert got.item() == pytest.approx(brute(scores, values, k, discounted), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    rows=st.integers(1, 5),
    m=st.integers(1, 200),
    levels=st.sampled_from([2, 4, 30, 10**6]),
    depth=st.integers(1, 30),
)
def test_ranks_of_the_top_positions_equal_those_of_the_whole_sort(seed, rows, m, levels, depth):
    """Kept only ``depth`` deep (a top-w selection widened until the tie block at the boundary is
    whole), every statistic equals the one from sorting the whole row — few distinct scores (long
    tie blocks across the boundary) included."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, m), generator=gen).float()
    values = torch.rand((rows, m), generator=gen, dtype=torch.float64)
    whole, top = TieRanks(scores), TieRanks(scores, depth)
    for k in range(1, min(depth, m) + 1):
        for discounted in (False, True):
            assert torch.allclose(
                top.expected(values, k, discounted), whole.expected(values, k, discounted)
            )
    if not top.whole:  # the window is narrower than the row: a deeper K is refused
        with pytest.raises(ValueError, match="deep"):
            top.expected(values, depth + 1, False)


def test_constant_scorer_on_the_world(tiny):
    acc = OracleAccumulator(tiny, (10, 25))
    rows = tiny.splits["test"]
    acc.add(rows, torch.zeros(rows.size, tiny.n_music))
    out = acc.result()
    n = tiny.n_music
    assert out["cf_recall@10"] == pytest.approx(10 / n)
    assert out["cf_recall@25"] == pytest.approx(25 / n)
    # Bias amplification of a random list: the majority genre's share of the catalogue minus its
    # share of each uploader's history.
    prior = tiny.video_prior[rows]
    major = prior.argmax(1)
    catalogue = np.bincount(tiny.music_genre, minlength=tiny.n_genres) / n
    expected = (catalogue[major] - prior[np.arange(rows.size), major]).mean()
    assert out["bias_amp@25"] == pytest.approx(expected)


def test_truth_scorer_is_ideal(tiny):
    rows = tiny.splits["test"]
    acc = OracleAccumulator(tiny, (10, 25))
    acc.add(rows, torch.from_numpy(tiny.truth.compatibility(rows)).float())
    out = acc.result()
    assert out["true_ndcg@10"] == pytest.approx(1.0, abs=1e-6)
    assert out["true_ndcg@25"] == pytest.approx(1.0, abs=1e-6)


def test_ranking_by_an_interventional_distribution_is_optimal_for_it(tiny):
    """Scored by P(m | v, do(·)) itself, a model gets the best expected recall there is: the
    probability mass of each row's top K; any other scorer gets less."""
    rows = tiny.splits["test"]
    acc = OracleAccumulator(tiny, (10,))
    for prefix, estimand in (("cf", "cf"), ("bd", "backdoor"), ("fit", "fit")):
        p = tiny.truth.probabilities(rows, estimand)
        acc = OracleAccumulator(tiny, (10,))
        acc.add(rows, p.float())
        best = p.topk(10, dim=1).values.sum(dim=1).mean().item()
        assert acc.result()[f"{prefix}_recall@10"] == pytest.approx(best, rel=1e-5)
        noisy = OracleAccumulator(tiny, (10,))
        noisy.add(rows, (p.log() + torch.randn_like(p)).float())
        assert noisy.result()[f"{prefix}_recall@10"] < best


def test_majority_first_scorer_amplifies_bias(tiny):
    rows = tiny.splits["test"]
    prior = tiny.video_prior[rows]
    major = prior.argmax(1)
    scores = torch.from_numpy((tiny.music_genre[None, :] == major[:, None]).astype(np.float32))
    acc = OracleAccumulator(tiny, (1,))
    acc.add(rows, scores)
    expected = (1.0 - prior[np.arange(rows.size), major]).mean()
    assert acc.result()["bias_amp@1"] == pytest.approx(expected, abs=1e-6)
