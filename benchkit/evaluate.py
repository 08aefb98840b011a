"""Evaluation protocols and the scoring pipeline.

Two protocols ship with benchkit:

- ``paper``: DebCM's protocol. Each test video's positive is ranked among itself and 100 negatives
  sampled uniformly from the other music (fixed by the protocol seed and the dataset, or read from
  the dataset when it ships them); rows are weighted by the inverse popularity of their music,
  normalised to sum to 1; Recall@K and NDCG@K for K ∈ {10, 15, 20, 25}. This regenerates Table 3.
- ``full``: the positive is ranked against the whole music pool. Sampled metrics can reorder
  methods, so this is the honest default for research.

Ties are broken by the protocol's tie policy (``expected`` by default; see :mod:`benchkit.metrics`),
never by array order. Re-rankers see only the candidates of each row, after ``adjust_score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchkit.data.dataset import Dataset
from benchkit.data.eval_rows import row_weights, sample_negatives
from benchkit.device import as_tensor
from benchkit.errors import DataError
from benchkit.hookspecs import hookimpl
from benchkit.interfaces import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    EvalTask,
    Param,
    Protocol,
    Query,
    RankInfo,
)
from benchkit.method import Method
from benchkit.metrics import TIE_POLICIES
from benchkit.nn import finite_rows
from benchkit.oracle import OracleAccumulator
from benchkit.registry import Registry

KS = (10, 15, 20, 25)
_COMMON = {
    "ks": Param(KS, AT_LEAST_ONE),
    "metrics": Param(("recall", "ndcg")),
    "tie": Param("expected", TIE_POLICIES),
    "weighting": Param("inverse_popularity", ("inverse_popularity", "uniform")),
}


class PaperProtocol(Protocol):
    name = "paper"
    description = (
        "DebCM's protocol: positive among 100 sampled negatives, inverse-popularity "
        "weights, Recall/NDCG@10,15,20,25"
    )
    params = {
        "n_negatives": Param(100, AT_LEAST_ONE),
        "seed": Param(0, NON_NEGATIVE),
        **_COMMON,
    }

    def task(self, dataset: Dataset, split: str) -> EvalTask:
        rows = dataset.splits[split]
        positives = dataset.video_music[rows]
        negatives = dataset.negatives.get(split)
        if negatives is None:
            negatives = sample_negatives(
                dataset, split, self.hparams["n_negatives"], self.hparams["seed"]
            )
        return EvalTask(
            video_idx=rows,
            positive=positives,
            candidates=np.concatenate([positives[:, None], negatives], axis=1),
            weights=row_weights(dataset, rows, self.hparams["weighting"], split),
        )


class FullProtocol(Protocol):
    name = "full"
    description = (
        "positive ranked against the whole music pool (sampled metrics can reorder methods)"
    )
    params = dict(_COMMON)

    def task(self, dataset: Dataset, split: str) -> EvalTask:
        rows = dataset.splits[split]
        return EvalTask(
            video_idx=rows,
            positive=dataset.video_music[rows],
            candidates=None,
            weights=row_weights(dataset, rows, self.hparams["weighting"], split),
        )


@dataclass
class Evaluation:
    """Metric values plus where each row's positive landed (for paired tests across methods)."""

    metrics: dict[str, float]
    ranks: RankInfo


def rank_positives(
    method: Method,
    dataset: Dataset,
    task: EvalTask,
    device: torch.device,
    tie_policy: str,
    chunk_elements: int = 2**23,
    oracle: OracleAccumulator | None = None,
) -> RankInfo:
    """Score every row's candidates and count, per row, candidates above / level with the positive.

    With ``oracle``, each chunk's whole-pool scores (re-ranked when a strategy re-ranks) are also
    handed to it.
    """
    was_training = method.training
    method.eval()
    try:
        music = as_tensor(dataset.music_features, device)
        n_music = music.shape[0]
        step_m = max(1, chunk_elements // max(1, dataset.music_features.shape[1]))
        music_codes = torch.cat(
            [method.music_codes(music[s : s + step_m].float()) for s in range(0, n_music, step_m)]
        )
        all_items = torch.arange(n_music, device=device)
        prior = dataset.video_prior if dataset.has("uploaders") else None
        genre = None if dataset.music_genre is None else as_tensor(dataset.music_genre, device)
        n = task.video_idx.size
        n_greater = np.empty(n, dtype=np.int64)
        n_equal = np.empty(n, dtype=np.int64)
        # At least 64 rows a chunk: a huge pool still gets matrix products of a useful shape.
        step = max(64, chunk_elements // n_music)
        for s in range(0, n, step):
            rows = task.video_idx[s : s + step]
            video_features = as_tensor(dataset.video_features[rows], device).float()
            query = Query(
                video_idx=as_tensor(rows, device),
                column_music_idx=all_items,
                uploader_idx=None
                if dataset.video_uploader is None
                else as_tensor(dataset.video_uploader[rows], device),
                prior=None if prior is None else as_tensor(prior[rows], device),
                video_features=video_features,
                music_features=music,
                music_genre=genre,
            )
            codes = method.video_codes(video_features)
            full = method.score(codes, music_codes, query)
            pool = all_items.expand(len(rows), n_music)
            if task.candidates is None or (oracle is not None and oracle.active):
                reranked = method.rerank(full, pool, query)
                if oracle is not None and oracle.active:
                    oracle.add(rows, reranked)
            if task.candidates is None:
                scores = reranked
                pos_col = as_tensor(task.positive[s : s + step], device)[:, None]
            else:
                items = as_tensor(task.candidates[s : s + step], device)
                scores = method.rerank(full.gather(1, items), items, query)
                pos_col = torch.zeros((len(rows), 1), dtype=torch.long, device=device)
            if not bool(finite_rows(scores).all()):
                raise DataError(
                    "the model produced NaN or infinite scores; training diverged "
                    "(try a lower learning rate)"
                )
            pos = scores.gather(1, pos_col)
            n_greater[s : s + step] = (scores > pos).sum(dim=1).cpu().numpy()
            n_equal[s : s + step] = (scores == pos).sum(dim=1).cpu().numpy() - 1
    finally:
        method.train(was_training)
    n_candidates = n_music if task.candidates is None else task.candidates.shape[1]
    return RankInfo(
        n_greater=n_greater,
        n_equal=n_equal,
        weights=task.weights,
        n_candidates=n_candidates,
        tie_policy=tie_policy,
        clusters=None
        if dataset.video_uploader is None
        else dataset.video_uploader[task.video_idx].astype(np.int64),
    )


def evaluate(
    method: Method,
    dataset: Dataset,
    protocol: Protocol,
    metrics: Registry[Any],
    split: str = "test",
    device: torch.device | None = None,
    oracle: bool = False,
) -> Evaluation:
    """Evaluate ``method`` on one split of ``dataset`` under ``protocol``.

    ``oracle=True`` adds every registered ``pool`` metric the data allows (the oracle and bias
    metrics of :mod:`benchkit.oracle`: truth on the synthetic world; genres and uploaders for bias
    amplification).
    """
    if device is None:
        device = next(iter(method.parameters()), torch.zeros(0)).device
    task = protocol.task(dataset, split)
    acc = (
        OracleAccumulator(dataset, protocol.ks, [e.obj for e in metrics.entries()])
        if oracle
        else None
    )
    ranks = rank_positives(method, dataset, task, device, protocol.tie_policy, oracle=acc)
    values: dict[str, float] = {}
    for name in protocol.metrics:
        metric = metrics.get(name)
        for k in protocol.ks:
            values[f"{name}@{k}"] = metric(ranks, k)
    if acc is not None:
        values.update(acc.result())
        ranks.per_row = acc.per_row()
    return Evaluation(metrics=values, ranks=ranks)


@hookimpl
def register_protocols(register: Any) -> None:
    register(PaperProtocol)
    register(FullProtocol)
