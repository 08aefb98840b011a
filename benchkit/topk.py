"""Exact top-K recommendation over large music pools, in bounded memory.

The music codes are computed once; videos go in chunks, and the pool in blocks: each block's scores
(the method's full scoring — the backbone's score plus every strategy's score terms) are merged
into a running top list, so memory holds one chunk × block of scores whatever the pool's size.
Two things make it fast on a CPU. The block is small (16 MB of scores: it stays in the cache, and
the allocator reuses it instead of mapping fresh pages for every block, which cost more than the
product itself at 64 MB). And a video whose best score in a block does not beat its running K-th
best skips the block's selection: after the first blocks few do (about K / j of them in block j),
so over a large pool the selection costs a small fraction of the products.

A method with a re-ranker (Calibration) keeps a longer running list — the whole pool up to 50,000
music, else the best 5,000 (``rerank_pool``) — and re-ranks it, as the evaluation re-ranks its
candidates. Videos unseen in training have id −1; their uploaders are given by index (−1
unknown). Nothing is approximate: the same scores the evaluation computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from benchkit.errors import DataError
from benchkit.interfaces import Query, Strategy
from benchkit.method import Method
from benchkit.nn import select_topk

SHORTLIST_WHOLE_POOL_UP_TO = 50_000
SHORTLIST = 5_000


@dataclass
class Pool:
    """Music to rank: preprocessed features, a genre per music (−1 unknown), and their ids."""

    features: np.ndarray
    genre: np.ndarray
    ids: np.ndarray


def music_codes(method: Method, features: np.ndarray, device: torch.device) -> Tensor:
    """(M, D) codes of a pool (deconfounded with d̄), computed in blocks."""
    step = max(1, 2**22 // max(1, features.shape[1]))
    blocks = [
        method.music_codes(torch.from_numpy(features[s : s + step]).to(device).float())
        for s in range(0, features.shape[0], step)
    ]
    return torch.cat(blocks)


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
    """The best ``keep`` of a running list and a block of scores (columns from ``offset``),
    sorted best first."""
    block_val, block_idx = select_topk(scores.contiguous(), min(keep, scores.shape[1]))
    val = torch.cat([best_val, block_val], dim=1)
    idx = torch.cat([best_idx, block_idx + offset], dim=1)
    top = val.topk(min(keep, val.shape[1]), dim=1)
    return top.values, idx.gather(1, top.indices)


def refuse_non_finite(values: Tensor, first_row: int, kind: str, what: str = "videos") -> None:
    """Refuse NaN or inf among a chunk's codes or scores (rows from ``first_row``), before any
    ranking: inputs far outside the training data's range overflow the layers or the products,
    and a top list of NaN — hidden by a re-ranker's finite output — would be noise."""
    bad = ~torch.isfinite(values).reshape(values.shape[0], -1).all(dim=1)
    if bool(bad.any()):
        row = first_row + int(bad.nonzero()[0, 0])
        raise DataError(
            f"{what}: row {row} gives non-finite {kind} (NaN or inf): its features overflow the "
            f"model (values far outside the training data's range?); clean or drop it"
        )


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
) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) column indices into ``pool`` and their scores, best first, for each video
    (``videos``: preprocessed features)."""
    method.eval()
    m = pool.features.shape[0]
    codes = music_codes(method, pool.features, device)
    if not bool(torch.isfinite(codes).all()):
        raise DataError("music pool: some music codes are NaN or inf; the pool's features overflow")
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
            if best_val.shape[1] < keep:  # the running list is not full yet: every row merges
                best_val, best_idx = _merge(best_val, best_idx, scores, b, keep)
                continue
            # best_val is sorted, best first: its last column is each row's K-th best so far
            need = (scores.amax(dim=1) > best_val[:, -1]).nonzero().squeeze(1)
            if need.numel() == 0:
                continue
            if need.numel() == scores.shape[0]:
                best_val, best_idx = _merge(best_val, best_idx, scores, b, keep)
            else:
                val, idx = _merge(best_val[need], best_idx[need], scores[need], b, keep)
                best_val[need], best_idx[need] = val, idx
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
    codes = music_codes(method, pool.features, device)
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
