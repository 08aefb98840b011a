"""Oracle and bias metrics: what the synthetic world's truth lets us measure, beside the usual ones.

All are computed on the whole music pool (the music an intervention would pick need not be among a
row's sampled candidates), rows weighted uniformly, ties broken by expectation
(:mod:`benchkit.metrics`). The interventional metrics are *expectations* under the exact
interventional distribution of the choice (:mod:`benchkit.data.truth`), not one draw of it:
Recall@K = Σ_m P(m | v, do(·)) · P(rank(m) < K), NDCG@K = Σ_m P(m | v, do(·)) · E[disc(rank(m))].

- ``cf_recall@K`` / ``cf_ndcg@K``: under do(taste = uniform) — what this video's uploader would
  have picked without their genre taste (and with the whole pool in view). The headline target.
- ``bd_recall@K`` / ``bd_ndcg@K``: under do(u ~ population) — the backdoor adjustment's own
  estimand, tastes averaged over the population of uploaders rather than switched off.
- ``fit_recall@K`` / ``fit_ndcg@K``: by content alone (taste off, popularity flat) — how well a model
  finds what fits the video, whatever is popular.
- ``true_ndcg@K``: NDCG@K with graded relevance = the true compatibility of each music with the
  video, clipped at 0 (music that fit better than a random pair); the ideal list is the K most
  compatible music.
- ``bias_amp@K``: bias amplification — the share of the top K in the uploader's majority genre
  minus that genre's share of the uploader's (training) history, averaged over rows. Positive
  values mean the model over-recommends what the uploader already chose most. Needs only genres
  and uploader histories, so it is reported on real data too.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from benchkit.contracts.metrics import Metric, PoolView
from benchkit.data import truth as truth_module
from benchkit.data.dataset import Dataset
from benchkit.errors import DataError
from benchkit.files import atomic_file, cache_root
from benchkit.hashing import array_digest, stable_hash
from benchkit.hookspecs import hookimpl
from benchkit.options import machine, sharing

#: The estimands that sum over uploaders, and the size (music × uploaders summed over) from which
#: they are kept on disk: the paper's world (3,003 × 2,048) is far above, the test worlds below.
MIXTURES = ("backdoor", "observed")
STORED_CELLS = 1 << 20


@functools.cache
def _truth_code() -> str:
    """A hash of the truth's source (read once per process, not once per chunk of rows)."""
    return hashlib.sha256(Path(truth_module.__file__).read_bytes()).hexdigest()


def truth_probabilities(
    dataset: Dataset, rows: np.ndarray, estimand: str, device: torch.device
) -> Tensor:
    """``dataset.truth.probabilities(rows, estimand, device)``, computed once per world, rows and
    estimand and read back by every later run (``BENCHKIT_SHARE=0``: computed each time).

    Every row of a table evaluates the same test videos of the same world, and at the paper's size
    the sum over 2,048 uploaders was about 10 s of each run's evaluation — most of its counted
    test FLOPs. The file is float64 as computed (bitwise the same whatever the thread count), keyed
    by the world's content, the rows, the estimand, the truth's code, torch, the machine and the
    device; one that cannot be read is computed again, one that cannot be written is not kept."""
    truth = dataset.truth
    assert truth is not None and truth.choice is not None
    c = truth.choice
    cells = c.music_genre.size * min(c.uploader_weight.size, truth_module.MAX_EXACT_UPLOADERS)
    if estimand not in MIXTURES or cells < STORED_CELLS or not sharing():
        return truth.probabilities(rows, estimand, device)
    h = hashlib.sha256()
    h.update(
        stable_hash(
            {
                "world": dataset.content_fingerprint,
                "estimand": estimand,
                "code": _truth_code(),
                "torch": torch.__version__,
                "machine": machine(),
                "device": device.type,
            }
        ).encode()
    )
    array_digest(h, np.asarray(rows))
    path = cache_root() / "truth" / f"{h.hexdigest()[:24]}.npy"
    shape = (len(rows), c.music_genre.size)
    try:
        kept = np.load(path)
        if kept.shape == shape and kept.dtype == np.float64:
            return torch.from_numpy(kept).to(device)
    except (OSError, ValueError, EOFError):  # not there yet, or damaged: computed again below
        pass
    values = truth.probabilities(rows, estimand, device)
    try:
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.save(f, values.cpu().numpy())
    except DataError:  # an unwritable cache folder: this run computed it, the next will too
        pass
    return values


class TieRanks:
    """The rank order of a chunk of score rows and its blocks of tied scores, computed once and
    shared by every expected top-K statistic of those rows (a sort of the whole pool per statistic
    was most of a paper-scale evaluation).

    With ``depth`` (the largest K asked for), only each row's best positions are kept: a top-``w``
    selection instead of a sort of the whole pool, and every statistic then reads ``w`` columns
    instead of the pool's. Exact: ``w`` grows until, in every row, the block of scores tied with
    the one at position ``depth`` − 1 ends inside the window, so each block that reaches the top
    ``depth`` is whole; blocks further down have weight 0 for every K ≤ ``depth``.
    """

    def __init__(self, scores: Tensor, depth: int | None = None) -> None:
        n, m = scores.shape
        self.depth = m if depth is None else max(1, min(depth, m))
        width = min(m, 2 * self.depth + 16)
        while True:
            if width >= m:
                self.order = scores.argsort(dim=1, descending=True, stable=True)
                s = scores.gather(1, self.order)
                break
            s, self.order = scores.topk(width, dim=1, sorted=True)
            if bool((s[:, -1] < s[:, self.depth - 1]).all()):
                break
            width = min(m, 4 * width)
        width = s.shape[1]
        self.whole = width == m  # the whole row sorted: any K may be asked
        pos = torch.arange(width, device=scores.device).expand(n, width)
        new = torch.ones_like(s, dtype=torch.bool)
        new[:, 1:] = s[:, 1:] != s[:, :-1]
        self.start = torch.where(new, pos, torch.zeros_like(pos)).cummax(dim=1).values
        last = torch.ones_like(new)
        last[:, :-1] = new[:, 1:]
        big = torch.full_like(pos, width)
        self.end = torch.where(last, pos + 1, big).flip(1).cummin(dim=1).values.flip(1)
        self._weights: dict[tuple[int, bool], Tensor] = {}

    def weights(self, k: int, discounted: bool) -> Tensor:
        """E[w(rank)] of each sorted position, rank uniform within its tie block."""
        if k > self.depth and not self.whole:
            raise ValueError(f"these ranks go {self.depth} deep, not {k}")
        key = (k, discounted)
        if key not in self._weights:
            device = self.start.device
            if discounted:
                disc = 1.0 / torch.log2(torch.arange(k, device=device, dtype=torch.float64) + 2)
                prefix = torch.cat(
                    [torch.zeros(1, dtype=torch.float64, device=device), disc.cumsum(0)]
                )
            else:
                prefix = torch.arange(k + 1, device=device, dtype=torch.float64)
            lo, hi = self.start.clamp(max=k), self.end.clamp(max=k)
            span = (self.end - self.start).to(torch.float64)
            self._weights[key] = (prefix[hi] - prefix[lo]) / span
        return self._weights[key]

    def expected(self, values: Tensor, k: int, discounted: bool) -> Tensor:
        """Per row, Σ_items value · E[w(rank)] (see :func:`expected_topk`)."""
        v = values.gather(1, self.order).to(torch.float64)
        return (self.weights(k, discounted) * v).sum(dim=1)


def expected_topk(scores: Tensor, values: Tensor, k: int, discounted: bool) -> Tensor:
    """Per row, Σ_items value · E[w(rank)] with rank uniform within each block of tied scores and
    w(r) = 1(r < k) (or 1(r < k)/log2(r + 2) when ``discounted``)."""
    return TieRanks(scores, k).expected(values, k, discounted)


def ideal_dcg(values: Tensor, k: int) -> Tensor:
    top = values.to(torch.float64).topk(min(k, values.shape[1]), dim=1).values
    disc = 1.0 / torch.log2(
        torch.arange(top.shape[1], device=values.device, dtype=torch.float64) + 2
    )
    return (top * disc).sum(dim=1)


class _Intervention(Metric):
    """Recall or NDCG in expectation under one interventional distribution of the choice."""

    needs = "truth"
    scope = "pool"
    estimand: ClassVar[str] = ""
    discounted: ClassVar[bool] = False

    def applies(self, dataset: Any) -> bool:
        return dataset.truth is not None and dataset.truth.choice is not None

    def per_row(self, view: PoolView, k: int) -> Tensor:
        p = view.memo(
            self.estimand,
            lambda: truth_probabilities(view.dataset, view.rows, self.estimand, view.scores.device),
        )
        return view.ranks.expected(p, k, self.discounted)


def _intervention(name: str, label: str, estimand: str, description: str) -> type[Metric]:
    """The metric ``name`` (a recall, or an NDCG when the name says so) under ``estimand``."""
    attrs = {
        "name": name,
        "label": label,
        "estimand": estimand,
        "discounted": name.endswith("ndcg"),
        "description": description,
    }
    return type(label.replace("-", ""), (_Intervention,), attrs)


INTERVENTION_METRICS = tuple(
    _intervention(*row)
    for row in (
        (
            "cf_recall",
            "cf-Recall",
            "cf",
            "expected recall of the choice without the uploader's taste",
        ),
        ("cf_ndcg", "cf-NDCG", "cf", "expected NDCG of the choice without the uploader's taste"),
        (
            "bd_recall",
            "bd-Recall",
            "backdoor",
            "expected recall under the backdoor estimand Σ_u P(u) P(m | v, u)",
        ),
        ("bd_ndcg", "bd-NDCG", "backdoor", "expected NDCG under the backdoor estimand"),
        (
            "fit_recall",
            "fit-Recall",
            "fit",
            "expected recall of the choice by content alone (taste off, popularity flat)",
        ),
        ("fit_ndcg", "fit-NDCG", "fit", "expected NDCG of the choice by content alone"),
    )
)


class TrueNDCG(Metric):
    name, label = "true_ndcg", "true-NDCG"
    description = "NDCG with the true compatibility as graded relevance"
    needs = "truth"
    scope = "pool"

    def per_row(self, view: PoolView, k: int) -> Tensor:
        compat = view.memo(
            "compatibility",
            lambda: (
                torch.from_numpy(view.dataset.truth.compatibility(view.rows))
                .to(view.scores.device)
                .clamp_min(0)
            ),
        )
        ideal = ideal_dcg(compat, k)
        dcg = view.ranks.expected(compat, k, discounted=True)
        return torch.where(ideal > 0, dcg / ideal.clamp_min(1e-12), torch.zeros_like(dcg))


class BiasAmp(Metric):
    name, label = "bias_amp", "BiasAmp"
    description = "over-recommendation of the uploader's majority genre"
    higher_is_better = False
    needs = "uploaders"
    scope = "pool"
    bounds = None

    def per_row(self, view: PoolView, k: int) -> Tensor:
        in_major, share = view.memo("majority", lambda: _majority(view))
        return view.ranks.expected(in_major, k, discounted=False) / k - share


def _majority(view: PoolView) -> tuple[Tensor, Tensor]:
    """Per row, which music are of the uploader's majority genre, and that genre's share."""
    device = view.scores.device
    genre = torch.from_numpy(view.dataset.music_genre).to(device)
    prior = torch.from_numpy(view.dataset.video_prior[view.rows]).to(device)
    major = prior.argmax(dim=1)
    in_major = (genre[None, :] == major[:, None]).to(torch.float64)
    return in_major, prior.gather(1, major[:, None]).squeeze(1).to(torch.float64)


POOL_METRICS: tuple[Metric, ...] = (*(m() for m in INTERVENTION_METRICS), TrueNDCG(), BiasAmp())


@hookimpl
def register_metrics(register: Any) -> None:
    for metric in POOL_METRICS:
        register(metric)


class OracleAccumulator:
    """Collects the ``pool`` metrics chunk by chunk during one evaluation pass: those of
    ``metrics`` (default: the built-in oracle and bias metrics) that the data allows."""

    def __init__(
        self, dataset: Dataset, ks: tuple[int, ...], metrics: Iterable[Metric] = POOL_METRICS
    ) -> None:
        self.dataset = dataset
        self.ks = ks
        self.metrics = [m for m in metrics if m.scope == "pool" and m.applies(dataset)]
        self.values: dict[str, list[np.ndarray]] = {}
        self.rows = 0

    @property
    def active(self) -> bool:
        return bool(self.metrics)

    def add(self, rows: np.ndarray, scores: Tensor) -> None:
        """``scores``: (len(rows), n_music) final scores of these test videos over the whole pool."""
        self.rows += len(rows)
        view = PoolView(rows, scores, TieRanks(scores, max(self.ks)), self.dataset)
        for metric in self.metrics:
            for k in self.ks:
                value = metric.per_row(view, k)
                key = f"{metric.name}@{k}"
                self.values.setdefault(key, []).append(value.detach().cpu().numpy())

    def per_row(self) -> dict[str, np.ndarray]:
        """Each metric's value per evaluation row (in the task's row order)."""
        return {k: np.concatenate(v) for k, v in sorted(self.values.items())}

    def result(self) -> dict[str, float]:
        return {k: float(v.mean()) for k, v in self.per_row().items()}
