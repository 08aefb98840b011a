"""What each metric family is: its label, its direction, what it needs, how it aggregates.

Tables, statistics, claims and the command line read a metric's properties from here instead of
each keeping its own list: ``recall@25`` is the family ``recall`` at K = 25. A family a plugin
registers without declaring itself here is read as a weighted, higher-is-better metric of the
protocol's ranks.
"""

from __future__ import annotations

from dataclasses import dataclass


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


FAMILIES = {
    info.family: info
    for info in (
        MetricInfo("recall", "Recall", description="the observed choice in the top K"),
        MetricInfo("ndcg", "NDCG", description="the observed choice's discounted rank"),
        MetricInfo(
            "cf_recall",
            "cf-Recall",
            needs="truth",
            aggregation="rows",
            description="expected recall of the choice without the uploader's taste",
        ),
        MetricInfo("cf_ndcg", "cf-NDCG", needs="truth", aggregation="rows"),
        MetricInfo(
            "bd_recall",
            "bd-Recall",
            needs="truth",
            aggregation="rows",
            description="expected recall under the backdoor estimand Σ_u P(u) P(m | v, u)",
        ),
        MetricInfo("bd_ndcg", "bd-NDCG", needs="truth", aggregation="rows"),
        MetricInfo("fit_recall", "fit-Recall", needs="truth", aggregation="rows"),
        MetricInfo("fit_ndcg", "fit-NDCG", needs="truth", aggregation="rows"),
        MetricInfo(
            "true_ndcg",
            "true-NDCG",
            needs="truth",
            aggregation="rows",
            description="NDCG with the true compatibility as graded relevance",
        ),
        MetricInfo(
            "bias_amp",
            "BiasAmp",
            higher_is_better=False,
            needs="uploaders",
            aggregation="rows",
            description="over-recommendation of the uploader's majority genre",
            bounds=None,
        ),
    )
}


def metric_info(metric: str) -> MetricInfo:
    """The declaration of ``metric`` (``family@K`` or a family)."""
    family = metric.partition("@")[0]
    return FAMILIES.get(family) or MetricInfo(family, family, bounds=None)


def higher_is_better(metric: str) -> bool:
    return metric_info(metric).higher_is_better


def better_sign(metric: str) -> int:
    """+1 where higher is better, −1 where lower is: ``better_sign(m) * value`` ranks best first."""
    return 1 if higher_is_better(metric) else -1


def needs_truth(metric: str) -> bool:
    return metric_info(metric).truth


def metric_label(metric: str) -> str:
    """``cf_recall@25`` → ``cf-Recall@25``."""
    family, _, k = metric.partition("@")
    label = metric_info(family).label
    return f"{label}@{k}" if k else label
