"""Exact top-K recommendation over large music pools, in bounded memory.

The music codes are computed once; videos go in chunks, and the pool in blocks: each block's scores
(the method's full scoring — the backbone's score plus every strategy's score terms) are merged
into a running top list, so memory holds one chunk × block of scores whatever the pool's size.
Three things keep it at the speed of the products themselves. The block is small (16 MB of
scores: it stays in the cache, and the allocator reuses it instead of mapping fresh pages for every
block). The non-finite check reads the rows' minima and maxima (NaN and inf reach both), two cheap
reductions, not an ``isfinite`` pass as costly as the product. And a block merges into the running
list only the groups of ``GROUP`` columns whose maximum beats a row's running K-th best: after the
first blocks each row has about K / j such groups in block j, so the selection works on a few
hundred values a row rather than the block's thousands (:func:`merge_block`).

A method with a re-ranker (Calibration) keeps a longer running list — the whole pool up to 50,000
music, else the best 5,000 (``rerank_pool``) — and re-ranks it, as the evaluation re-ranks its
candidates. Videos unseen in training have id −1; their uploaders are given by index (−1
unknown). Nothing is approximate: the same scores the evaluation computes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchkit.errors import DataError
from benchkit.interfaces import Query, Strategy
from benchkit.method import Method
from benchkit.nn import finite_rows, select_topk

SHORTLIST_WHOLE_POOL_UP_TO = 50_000
SHORTLIST = 5_000
GROUP = 32  # columns whose maximum decides whether they can enter a row's running list


@dataclass
class Pool:
    """Music to rank: preprocessed features, a genre per music (−1 unknown), and their ids.
    The codes of the last model that ranked it are kept (a pool is ranked many times by one
    model: its codes cost as much as a thousand videos' products at a million music)."""

    features: np.ndarray
    genre: np.ndarray
    ids: np.ndarray
    _codes: tuple[Method, tuple[Any, ...], Tensor] | None = field(
        default=None, repr=False, compare=False
    )


def music_codes(method: Method, pool: Pool, device: torch.device) -> Tensor:
    """(M, D) codes of a pool (deconfounded with d̄), computed in blocks, once per method, its
    weights' versions (any change to them, a load included, bumps one), device and features."""
    weights = tuple(t._version for t in method.state_dict().values())
    stamp = (weights, str(device), id(pool.features), pool.features.shape)
    if pool._codes is not None and pool._codes[0] is method and pool._codes[1] == stamp:
        return pool._codes[2]
    features = pool.features
    step = max(1, 2**22 // max(1, features.shape[1]))
    blocks = [
        method.music_codes(torch.from_numpy(features[s : s + step]).to(device).float())
        for s in range(0, features.shape[0], step)
    ]
    codes = torch.cat(blocks)
    refuse_non_finite(codes, 0, "codes", "music pool")
    pool._codes = (method, stamp, codes)
    return codes


def _query(
    rows: slice,
    cols: slice | Tensor,
    video_features: Tensor,
    pool: Pool,
    uploader_idx: np.ndarray,
    prior: np.ndarray | None,
    genre: Tensor,
    device: torch.device,
) -> Query:
    n = video_features.shape[0]
    if isinstance(cols, slice):
        col_ids = torch.arange(cols.start, cols.stop, device=device)
        music = torch.from_numpy(pool.features[cols]).to(device)
    else:
        col_ids = cols
        music = torch.from_numpy(pool.features).to(device)
    return Query(
        video_idx=torch.full((n,), -1, dtype=torch.long, device=device),
        column_music_idx=col_ids,
        uploader_idx=torch.from_numpy(uploader_idx[rows]).to(device),
        prior=None if prior is None else torch.from_numpy(prior[rows]).to(device),
        video_features=video_features,
        music_features=music,
        music_genre=genre,
    )


def _merge(
    best_val: Tensor, best_idx: Tensor, scores: Tensor, offset: int, keep: int
) -> tuple[Tensor, Tensor]:
    """The best ``keep`` of a running list and a block of scores (columns from ``offset``), in no
    particular order."""
    block_val, block_idx = select_topk(scores.contiguous(), min(keep, scores.shape[1]))
    return _best_of(best_val, best_idx, block_val, block_idx + offset, keep)


def _best_of(
    best_val: Tensor, best_idx: Tensor, val: Tensor, idx: Tensor, keep: int
) -> tuple[Tensor, Tensor]:
    val = torch.cat([best_val, val], dim=1)
    idx = torch.cat([best_idx, idx], dim=1)
    if val.shape[1] <= keep:
        return val, idx
    val, picked = select_topk(val, keep)
    return val, idx.gather(1, picked)


def merge_block(
    best_val: Tensor, best_idx: Tensor, scores: Tensor, offset: int, group: int = GROUP
) -> tuple[Tensor, Tensor]:
    """:func:`_merge` for a full running list, reading only what can enter it: a value enters a
    row's list only if it beats the row's worst, so only the groups of ``group`` columns whose
    maximum does are read, and only their values that do are merged (after the first blocks,
    about K / j values a row in block j). Rows with nothing that beats their worst keep their
    list. The same lists as :func:`_merge`, ties with a row's worst aside (a value equal to it
    does not displace it)."""
    scores = scores.contiguous()
    n, m = scores.shape
    w = group if m % group == 0 else m  # a ragged last block is read whole
    worst = best_val.amin(dim=1)
    maxima = scores.view(n, m // w, w).amax(dim=2)
    hit_groups = (maxima > worst[:, None]).nonzero()  # (row, group), row-major
    if hit_groups.numel() == 0:
        return best_val, best_idx
    row = hit_groups[:, :1]
    cols = hit_groups[:, 1:] * w + torch.arange(w, device=scores.device)  # (groups hit, w)
    vals = scores[row, cols]
    hits = (vals > worst[row]).nonzero()  # (group hit, column in it), row-major still
    rows = row[hits[:, 0], 0]
    new_val, new_col = vals[hits[:, 0], hits[:, 1]], cols[hits[:, 0], hits[:, 1]] + offset
    # each row's new values side by side, padded with −inf (never chosen: the list is full)
    need, per_row = torch.unique_consecutive(rows, return_counts=True)
    first = torch.cumsum(per_row, 0) - per_row
    slot = torch.arange(rows.numel(), device=rows.device) - torch.repeat_interleave(first, per_row)
    width = int(per_row.max())
    pad_val = scores.new_full((need.numel(), width), -math.inf)
    pad_idx = best_idx.new_zeros((need.numel(), width))
    where = torch.repeat_interleave(torch.arange(need.numel(), device=rows.device), per_row)
    pad_val[where, slot], pad_idx[where, slot] = new_val, new_col
    val = torch.cat([best_val[need], pad_val], dim=1)
    idx = torch.cat([best_idx[need], pad_idx], dim=1)
    top = val.topk(best_val.shape[1], dim=1, sorted=False)
    best_val, best_idx = best_val.clone(), best_idx.clone()
    best_val[need], best_idx[need] = top.values, idx.gather(1, top.indices)
    return best_val, best_idx


def _best_first(val: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """A list sorted best first, equal scores by column. (Which of several columns tied at the
    K-th best made the list is arbitrary, as in ``torch.topk``.)"""
    by_col = idx.argsort(dim=1)
    val, idx = val.gather(1, by_col), idx.gather(1, by_col)
    order = val.argsort(dim=1, descending=True, stable=True)
    return val.gather(1, order), idx.gather(1, order)


def refuse_non_finite(values: Tensor, first_row: int, kind: str, what: str = "videos") -> None:
    """Refuse NaN or inf among a chunk's codes or scores (rows from ``first_row``), before any
    ranking: inputs far outside the training data's range overflow the layers or the products,
    and a top list of NaN — hidden by a re-ranker's finite output — would be noise."""
    bad = ~finite_rows(values)
    if bool(bad.any()):
        row = first_row + int(bad.nonzero()[0, 0])
        raise DataError(
            f"{what}: row {row} gives non-finite {kind} (NaN or inf): its features overflow the "
            f"model (values far outside the training data's range?); clean or drop it"
        )


class _Clock:
    """Adds the seconds since its last lap to a named total (nothing when there is no total)."""

    def __init__(self, totals: dict[str, float] | None, device: torch.device) -> None:
        self.totals, self.cuda = totals, device.type == "cuda"
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.totals is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.totals[name] = self.totals.get(name, 0.0) + now - self.last
        self.last = now


def _reranks(method: Method) -> bool:
    return any(type(s).rerank is not Strategy.rerank for s in method.strategy_list)


@torch.no_grad()
def top_k(
    method: Method,
    videos: np.ndarray,
    pool: Pool,
    k: int,
    uploader_idx: np.ndarray,
    prior: np.ndarray | None,
    device: torch.device,
    rerank_pool: int | None = None,
    video_chunk: int = 1024,
    music_block: int = 4096,
    seconds: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) column indices into ``pool`` and their scores, best first, for each video
    (``videos``: preprocessed features). Given ``seconds``, the time spent scoring (the codes, the
    products and their check) and selecting is added to its ``"score"`` and ``"select"`` (what
    ``benchmarks/topk.py`` reports)."""
    clock = _Clock(seconds, device)
    method.eval()
    m = pool.features.shape[0]
    codes = music_codes(method, pool, device)
    genre = torch.from_numpy(pool.genre).to(device)
    rerank = _reranks(method)
    keep = k
    if rerank:
        limit = m if m <= SHORTLIST_WHOLE_POOL_UP_TO else SHORTLIST
        keep = max(k, min(m, rerank_pool or limit))
    out_cols = np.empty((videos.shape[0], k), dtype=np.int64)
    out_scores = np.empty((videos.shape[0], k), dtype=np.float32)
    for s in range(0, videos.shape[0], video_chunk):
        rows = slice(s, min(s + video_chunk, videos.shape[0]))
        feats = torch.from_numpy(videos[rows]).to(device)
        vcodes = method.video_codes(feats)
        refuse_non_finite(vcodes, s, "codes")
        best_val = torch.empty((feats.shape[0], 0), device=device)
        best_idx = torch.empty((feats.shape[0], 0), dtype=torch.long, device=device)
        for b in range(0, m, music_block):
            cols = slice(b, min(b + music_block, m))
            q = _query(rows, cols, feats, pool, uploader_idx, prior, genre, device)
            scores = method.score(vcodes, codes[cols], q)
            refuse_non_finite(scores, s, "scores")
            clock.lap("score")
            if best_val.shape[1] < keep:  # the running list is not full yet: every row merges
                best_val, best_idx = _merge(best_val, best_idx, scores, b, keep)
            else:
                best_val, best_idx = merge_block(best_val, best_idx, scores, b)
            clock.lap("select")
        best_val, best_idx = _best_first(best_val, best_idx)
        if rerank:
            q = _query(rows, best_idx, feats, pool, uploader_idx, prior, genre, device)
            reranked = method.rerank(best_val, best_idx, q)
            top = reranked.topk(k, dim=1)
            best_val, best_idx = top.values, best_idx.gather(1, top.indices)
        out_cols[rows] = best_idx[:, :k].cpu().numpy()
        out_scores[rows] = best_val[:, :k].cpu().numpy()
    return out_cols, out_scores


@torch.no_grad()
def score_all(
    method: Method,
    videos: np.ndarray,
    pool: Pool,
    uploader_idx: np.ndarray,
    prior: np.ndarray | None,
    device: torch.device,
) -> np.ndarray:
    """The full (videos × pool) score matrix, re-rankers included (small pools only)."""
    method.eval()
    codes = music_codes(method, pool, device)
    genre = torch.from_numpy(pool.genre).to(device)
    feats = torch.from_numpy(videos).to(device)
    rows = slice(0, videos.shape[0])
    q = _query(
        rows, slice(0, pool.features.shape[0]), feats, pool, uploader_idx, prior, genre, device
    )
    scores = method.score(method.video_codes(feats), codes, q)
    refuse_non_finite(scores, 0, "scores")
    items = q.column_music_idx.expand(feats.shape[0], -1)
    return method.rerank(scores, items, q).cpu().numpy()
