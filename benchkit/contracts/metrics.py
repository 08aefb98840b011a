"""A metric declares itself: its name, label, direction, what it needs, how it aggregates.

Tables, statistics, claims, tuning and the command line read a metric's properties from its
declaration (``benchkit.metrics.metric_info``), so adding a metric is one module: a
:class:`Metric` subclass and the hook that registers it. ``recall@25`` is the family ``recall`` at
K = 25. Two scopes:

- ``candidates``: computed from where each row's positive landed among the protocol's candidates
  (:class:`RankInfo`), weighted by the protocol's row weights; the protocol's ``metrics`` list
  picks them (``--set protocol.metrics=[recall,ndcg,mrr]``).
- ``pool``: computed per row from the scores over the whole music pool (:class:`PoolView`), rows
  weighted uniformly; every registered one whose ``needs`` the data meets is reported beside the
  protocol's (the oracle and bias metrics of :mod:`benchkit.oracle` are such metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = ["Metric", "MetricInfo", "PoolView", "RankInfo"]

NEEDS = ("ranks", "uploaders", "truth")
SCOPES = ("candidates", "pool")


@dataclass(frozen=True)
class MetricInfo:
    """``needs``: ``ranks`` (any data), ``uploaders`` (genres and uploader histories) or
    ``truth`` (a world that records its choice model). ``aggregation``: ``weighted`` (Σ w·m over
    the protocol's rows, weights summing to 1) or ``rows`` (the plain mean over rows).
    ``bounds``: the values the metric can take (an interval is clipped to them), ``None`` where
    it has none."""

    family: str
    label: str
    higher_is_better: bool = True
    needs: str = "ranks"
    aggregation: str = "weighted"
    description: str = ""
    bounds: tuple[float, float] | None = (0.0, 1.0)

    @property
    def truth(self) -> bool:
        return self.needs == "truth"


#: Every family declared so far, by name (a :class:`Metric` subclass declares itself when its
#: module is imported; :mod:`benchkit.metrics` makes sure the installed ones are).
DECLARED: dict[str, MetricInfo] = {}


@dataclass
class RankInfo:
    """Where each row's positive landed: ``n_greater`` candidates scored strictly above it and
    ``n_equal`` other candidates tied with it; ``n_candidates`` per row. ``per_row`` holds each
    row's value of the row-averaged (oracle and bias) metrics, for paired tests on them;
    ``clusters`` each row's uploader (−1 unknown; ``None`` when the data has no uploaders), the
    unit a bootstrap resamples test videos in."""

    n_greater: np.ndarray
    n_equal: np.ndarray
    weights: np.ndarray
    n_candidates: int
    tie_policy: str = "expected"
    per_row: dict[str, np.ndarray] = field(default_factory=dict)
    clusters: np.ndarray | None = None


@dataclass
class PoolView:
    """A chunk of evaluation rows scored over the whole music pool, what a ``pool`` metric reads.

    ``rows``: the chunk's video rows; ``scores``: (rows, n_music) final scores; ``ranks``: their
    rank order with ties (``ranks.expected(values, k, discounted)`` is, per row,
    Σ_music value · E[w(rank)], rank uniform within a tie, w = 1(rank < k) or its log discount);
    ``dataset``: the data (its truth, genres, priors); ``memo``: a value computed once per chunk
    and shared by the metrics that need it (``view.memo("cf", lambda: …)``)."""

    rows: np.ndarray
    scores: Any
    ranks: Any
    dataset: Any
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


class Metric:
    """A ranking metric at cut-off K, declared once.

    Set ``name`` (the family), ``label`` (how tables name it), ``description``,
    ``higher_is_better``, ``needs`` (one of :data:`NEEDS`), ``scope`` (one of :data:`SCOPES`) and
    ``bounds``; implement :meth:`__call__` (``candidates``) or :meth:`per_row` (``pool``).

    Example::

        class MRR(Metric):
            name, label = "mrr", "MRR"
            description = "weighted reciprocal rank of the positive (ties: optimistic)"

            def __call__(self, ranks, k):
                rr = np.where(ranks.n_greater < k, 1.0 / (ranks.n_greater + 1), 0.0)
                return float(np.dot(ranks.weights, rr))
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    needs: ClassVar[str] = "ranks"
    scope: ClassVar[str] = "candidates"
    bounds: ClassVar[tuple[float, float] | None] = (0.0, 1.0)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.needs not in NEEDS or cls.scope not in SCOPES:
            raise TypeError(
                f"metric {cls.__name__}: needs is one of {', '.join(NEEDS)} and scope one of "
                f"{', '.join(SCOPES)}, not {cls.needs!r} / {cls.scope!r}"
            )
        if cls.name:
            DECLARED[cls.name] = cls.info()

    @classmethod
    def info(cls) -> MetricInfo:
        return MetricInfo(
            family=cls.name,
            label=cls.label or cls.name,
            higher_is_better=cls.higher_is_better,
            needs=cls.needs,
            aggregation="weighted" if cls.scope == "candidates" else "rows",
            description=cls.description,
            bounds=cls.bounds,
        )

    def __call__(self, ranks: RankInfo, k: int) -> float:
        """The metric at ``k`` over the protocol's rows (``candidates`` scope)."""
        raise NotImplementedError(f"metric {self.name!r} is computed over the pool")

    def applies(self, dataset: Any) -> bool:
        """Whether the data lets this metric be computed (``pool`` scope; default: its needs)."""
        return self.needs == "ranks" or bool(dataset.has(self.needs))

    def per_row(self, view: PoolView, k: int) -> Any:
        """Each row's value at ``k`` (a float tensor of the chunk's rows; ``pool`` scope)."""
        raise NotImplementedError(f"metric {self.name!r} is computed from the candidates")
