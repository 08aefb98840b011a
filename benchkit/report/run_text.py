"""One run's result as ``benchkit run`` prints it: each block of metrics under a line that says how
it was measured — the protocol's sampled or full-pool ranking, or the oracle metrics over the whole
pool — and on which test set, so that no number is read under another protocol's name."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

TEST_SETS = dict(
    given="the data's own split",
    random="a random 8:1:1 split",
    diverse="T_diverse, the most diverse uploaders' later videos",
    matching="T_matching, the best-matched videos",
)
NAMES = {"recall": "Recall", "ndcg": "NDCG"}


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def metric_table(metrics: dict[str, float]) -> str:
    """Rows = K; columns = the metrics (Recall and NDCG first)."""
    ks = sorted({int(k.split("@")[1]) for k in metrics})
    names = sorted(
        {k.split("@")[0] for k in metrics}, key=lambda n: ({"recall": 0, "ndcg": 1}.get(n, 2), n)
    )
    rows = [[k, *(metrics.get(f"{n}@{k}", float("nan")) for n in names)] for k in ks]
    return tabulate(
        rows, headers=["K", *(NAMES.get(n, n) for n in names)], floatfmt=".4f", tablefmt="github"
    )


def test_set_text(test_set: str) -> str:
    head, _, arg = test_set.partition(":")
    if head == "matching" and arg:
        return f"matching:{arg} (the videos best matched by column {arg!r})"
    if head == "ratio":
        return f"ratio:{arg} (Fig. 3's genre-ratio intervention)"
    return f"{test_set} ({TEST_SETS[head]})" if head in TEST_SETS else test_set


def protocol_text(protocol: dict[str, Any]) -> str:
    """How the protocol ranks and weights, from its resolved parameters."""
    params = protocol.get("params", {})
    if "n_negatives" in params:
        ranking = f"sampled: each positive among {params['n_negatives']} negatives"
    else:
        ranking = "full pool: each positive against every music"
    weighting = params.get("weighting")
    weights = {"inverse_popularity": "rows weighted by inverse popularity", "uniform": "rows alike"}
    parts = [ranking, weights.get(weighting, f"weighting {weighting}") if weighting else ""]
    if params.get("tie"):
        parts.append(f"ties {params['tie']}")
    return f"protocol {protocol['name']} (hash {protocol['hash']}) — " + "; ".join(
        p for p in parts if p
    )


def blocks(result: Any) -> list[tuple[str, dict[str, float]]]:
    """(heading, metrics) of each block: the protocol's own metrics, then the oracle and bias
    metrics (the world's truth, whole pool), when the data has them."""
    own = set(result.protocol.get("params", {}).get("metrics", ("recall", "ndcg")))
    protocol = {k: v for k, v in result.metrics.items() if k.split("@")[0] in own}
    oracle = {k: v for k, v in result.metrics.items() if k not in protocol}
    out = [(protocol_text(result.protocol), protocol)]
    if oracle:
        out.append(("oracle and bias metrics (the world's truth) — full pool; rows alike", oracle))
    return out


def run_report(result: Any, method: str) -> str:
    """The text ``benchkit run`` prints for ``result``."""
    tr = result.training
    rows = len(result.ranks.weights) if result.ranks is not None else None
    scored = f"split {result.split}" + (f", {plural(rows, 'video')}" if rows else "")
    lines = [
        f"method    {method}",
        f"dataset   {result.dataset['name']}  (fingerprint {result.dataset['fingerprint']})",
        f"test set  {test_set_text(str(result.dataset.get('test_set', 'given')))}, {scored}; "
        f"seed {result.seed}",
        f"training  {plural(tr['epochs_run'], 'epoch')}, best {tr['best_epoch']} "
        f"(val {tr['best_val']:.4f}); {tr['seconds_per_epoch']:.2f} s/epoch, "
        f"{tr['pairs_per_second']:,.0f} pairs/s on {result.environment['device']} "
        f"({tr['precision']}, {plural(tr['threads'], 'thread')})",
    ]
    for heading, metrics in blocks(result):
        lines += ["", heading, metric_table(metrics)]
    return "\n".join(lines)
