"""The paper's claims, each answered from the cells of Table 3 and Figs. 3–4 with its control.

Every claim is a contrast between cells — a difference of two rows, or of two groups of rows'
means — computed per replicate (the same worlds and test videos) and tested by the paired t-test
over replicates of :mod:`benchkit.experiments.stats`. Each is answered twice: on an observed
metric (the paper's Recall@25) and on the truth (cf-Recall@25: what the uploaders would have
picked without their taste), where the world has one. A verdict:

- ``holds``: the effect's 95% interval lies on the claimed side;
- ``fails``: it lies on the other side (for a "does not help" claim: the thing helps);
- ``inconclusive``: neither — or there is no test (one run per cell);
- ``not run``: the store lacks the claim's cells (only with ``--no-run``); the note says how to
  run them.

Beside each, the **control**: the positive control's gain over the baseline (CMVAE trained on the
counterfactual choices minus CMVAE) in the same cells — how large an effect the instrument can
show there. An inconclusive answer next to a control that is itself not significant says the
instrument could not have seen the effect; next to a large significant one, that the effect is
small if it exists. On data without truth there is no control (the footer of the output says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchkit.errors import ConfigError
from benchkit.experiments.stats import ALPHA, Cell, Contrast, Summary, headroom_test, paired_test
from benchkit.metrics import better_sign, metric_label

OBSERVED, TRUTH = "recall@25", "cf_recall@25"
GENERATIVE = ("Dual-VAE", "CMVAE")
MATCHING = ("CEVAR", "CMVBR", "DSCMR", "UWML")
NON_DEBIASED = (*MATCHING, *GENERATIVE)
DEBIASED = ("DebCM", "DebCM-IPS", "DebCM-DU", "DebCM-Calibration", "DebCM-DecRS")
TEST_SETS = {"diverse": "T_diverse", "matching": "T_matching"}
SETTINGS = {"ugc": "D_s", "ugc+pgc": "D_s ∪ D_t"}
NEEDED = {"table3": "table3", "fig3": "fig3", "fig4": "fig4"}  # grid → the command that runs it
NOT_RUN = "not run"  # the verdict of a claim whose cells the store lacks (``--no-run``)


@dataclass
class Finding:
    """One answer: a claim, in some cells, on one metric."""

    id: str
    claim: int
    statement: str
    cells: str
    metric: str
    verdict: str
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None
    units: int = 0
    unit: str = ""
    control: dict[str, Any] | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Evidence:
    """The summaries claims read, by grid name (``table3``, ``fig3``, ``fig4``)."""

    grids: dict[str, Any] = field(default_factory=dict)
    summaries: dict[str, Summary] = field(default_factory=dict)
    out: str = "benchkit-results"

    def cell(self, grid: str, row: str, column: tuple[str, ...], metric: str) -> Cell:
        summary = self.summaries.get(grid)
        cell = None if summary is None else summary.get((row, column, metric))
        if cell is None or not cell.n:
            where = f"{row} × {'/'.join(column)} × {metric_label(metric)}"
            raise ConfigError(
                f"the claims need the cell {where} of {grid}, which {self.out} does not hold; "
                f"run `benchkit {NEEDED.get(grid, 'experiment ' + grid)} --out {self.out}` "
                f"with the same options (or `benchkit claims` without --no-run)"
            )
        return cell

    def grid(self, name: str) -> Any:
        if name not in self.grids:
            raise ConfigError(
                f"the claims need {name}, which {self.out} does not hold; run `benchkit "
                f"{NEEDED.get(name, 'experiment ' + name)} --out {self.out}` (or `benchkit claims` "
                f"without --no-run)"
            )
        return self.grids[name]

    def has_metric(self, metric: str) -> bool:
        return any(
            c.n for s in self.summaries.values() for (_, _, m), c in s.items() if m == metric
        )


def verdict(test: Contrast | None, direction: int = 1, margin: float | None = None) -> str:
    """``direction`` +1: the claim is that the effect is positive (−1: negative). ``margin``: a
    claim that something does *not* help fails when it helps significantly (the interval above
    0, however small the help), holds when the interval stays below the margin, and is
    inconclusive otherwise."""
    if test is None:
        return "inconclusive"
    low, high = test.ci
    if margin is not None:
        if low > 0:
            return "fails"
        return "holds" if high <= margin else "inconclusive"
    if direction * low > 0 and direction * high > 0:
        return "holds"
    if direction * high < 0 and direction * low < 0:
        return "fails"
    return "inconclusive"


def _control(ev: Evidence, grid: str, column: tuple[str, ...], metric: str) -> dict[str, Any]:
    spec = ev.grids[grid]
    if not spec.controls:
        return {"note": "no controls in this grid"}
    base_row, pos_row = spec.controls["baseline"], spec.controls["positive"]
    summary = ev.summaries[grid]
    base, pos = summary.get((base_row, column, metric)), summary.get((pos_row, column, metric))
    if base is None or pos is None or not base.n or not pos.n:
        return {"note": "no control: the data has no truth (no counterfactual choices)"}
    test = paired_test([(pos, 1.0), (base, -1.0)])
    ok, why = headroom_test(test, metric)
    out: dict[str, Any] = {"what": f"{pos_row} − {base_row}", "cells": "/".join(column)}
    if test is None:
        out.update(effect=pos.mean - base.mean, note="no test (one run per cell)")
    else:
        out.update(effect=test.effect, ci_low=test.ci[0], ci_high=test.ci[1], p=test.p, headroom=ok)
        if not ok:
            out["note"] = why
    return out


def _finding(
    ev: Evidence,
    claim: int,
    key: str,
    statement: str,
    cells: str,
    metric: str,
    terms: list[tuple[Cell, float]],
    control: tuple[str, tuple[str, ...]] | None,
    direction: int = 1,
    margin_share: float | None = None,
    alpha: float = ALPHA,
) -> Finding:
    """Contrast Σ coef · cell and judge it (``direction`` in the metric's better direction) by
    its interval at level 1 − ``alpha``."""
    sign = better_sign(metric)
    test = paired_test(terms, alpha)
    ctrl = None if control is None else _control(ev, control[0], control[1], metric)
    margin = None
    if margin_share is not None:
        room = (ctrl or {}).get("effect") if (ctrl or {}).get("headroom") else None
        margin = margin_share * abs(room) if room is not None else 0.0
    if test is None:
        effect = sum(coef * cell.mean for cell, coef in terms)
        f = Finding(key, claim, statement, cells, metric, "inconclusive", effect=effect)
        f.note = "no test: fewer than two replicates (or seeds) in these cells"
    else:
        judged = verdict(
            Contrast(sign * test.effect, _signed(test.ci, sign), test.p, test.units, test.unit),
            direction,
            margin,
        )
        f = Finding(
            key,
            claim,
            statement,
            cells,
            metric,
            judged,
            effect=test.effect,
            ci_low=test.ci[0],
            ci_high=test.ci[1],
            p=test.p,
            units=test.units,
            unit=test.unit,
        )
        if margin is not None:
            f.note = f"'does not help' = its interval stays below {margin:+.4f}" + (
                " (a quarter of the positive control's headroom here)" if margin else ""
            )
    f.control = ctrl
    return f


def _signed(ci: tuple[float, float], sign: int) -> tuple[float, float]:
    low, high = sign * ci[0], sign * ci[1]
    return (min(low, high), max(low, high))


def _group(cells: list[Cell], coef: float) -> list[tuple[Cell, float]]:
    return [(c, coef / len(cells)) for c in cells]


def _groups(
    ev: Evidence,
    claim: int,
    metric: str,
    statement: str,
    better: tuple[str, ...],
    worse: tuple[str, ...],
    tag: str = "",
) -> list[Finding]:
    """The mean of the ``better`` rows minus the mean of the ``worse`` ones, per test set, D_s
    (``tag`` tells the ids of several such contrasts of one claim apart)."""
    out = []
    for t, name in TEST_SETS.items():
        column = (t, "ugc")
        ahead = [ev.cell("table3", r, column, metric) for r in better]
        behind = [ev.cell("table3", r, column, metric) for r in worse]
        out.append(
            _finding(
                ev,
                claim,
                f"{claim}.{tag}{name}.{metric}",
                statement,
                f"mean of {', '.join(better)} − mean of {', '.join(worse)}; {name}, D_s",
                metric,
                _group(ahead, 1.0) + _group(behind, -1.0),
                ("table3", column),
            )
        )
    return out


def claim_debiased_beat_non_debiased(ev: Evidence, metric: str) -> list[Finding]:
    """The paper's comparison, and the same against CMVAE alone: every debiased row is CMVAE with
    a strategy, so only the second separates debiasing from the backbone."""
    statement = "debiased methods beat non-debiased ones"
    return _groups(ev, 1, metric, statement, DEBIASED, NON_DEBIASED) + _groups(
        ev, 1, metric, f"{statement} (same backbone)", DEBIASED, ("CMVAE",), tag="CMVAE."
    )


def claim_generative_beat_matching(ev: Evidence, metric: str) -> list[Finding]:
    statement = "among non-debiased backbones, the generative ones beat the matching ones"
    return _groups(ev, 2, metric, statement, GENERATIVE, MATCHING)


def claim_pooling_pgc_does_not_help(ev: Evidence, metric: str) -> list[Finding]:
    out = []
    for t, name in TEST_SETS.items():
        pooled = [ev.cell("table3", r, (t, "ugc+pgc"), metric) for r in NON_DEBIASED]
        alone = [ev.cell("table3", r, (t, "ugc"), metric) for r in NON_DEBIASED]
        out.append(
            _finding(
                ev,
                3,
                f"3.{name}.{metric}",
                "pooling PGC into the non-debiased baselines' training (D_s ∪ D_t) does not help",
                f"mean over {', '.join(NON_DEBIASED)} of (D_s ∪ D_t − D_s); {name}",
                metric,
                _group(pooled, 1.0) + _group(alone, -1.0),
                ("table3", (t, "ugc")),
                margin_share=0.25,
            )
        )
    return out


def _best_other(ev: Evidence, column: tuple[str, ...], metric: str, me: str) -> str:
    grid, summary = ev.grids["table3"], ev.summaries["table3"]
    sign = better_sign(metric)
    others = [
        r
        for r in grid.rows
        if r != me
        and r not in grid.control_rows
        and (c := summary.get((r, column, metric))) is not None
        and c.n
    ]
    if not others:
        raise ConfigError("claim 4 needs other methods beside DebCM in table3")
    return max(others, key=lambda r: sign * summary[(r, column, metric)].mean)


def claim_debcm_best(ev: Evidence, metric: str) -> list[Finding]:
    out = []
    for setting, sname in SETTINGS.items():
        column = ("diverse", setting)
        debcm = ev.cell("table3", "DebCM", column, metric)
        rival = _best_other(ev, column, metric, "DebCM")
        out.append(
            _finding(
                ev,
                4,
                f"4.best.{sname}.{metric}",
                "DebCM is the best method on T_diverse",
                f"DebCM − the best other method ({rival}); T_diverse, {sname}",
                metric,
                [(debcm, 1.0), (ev.cell("table3", rival, column, metric), -1.0)],
                ("table3", column),
            )
        )
    pooled = ev.cell("table3", "DebCM", ("diverse", "ugc+pgc"), metric)
    alone = ev.cell("table3", "DebCM", ("diverse", "ugc"), metric)
    out.append(
        _finding(
            ev,
            4,
            f"4.teacher.{metric}",
            "DebCM's PGC teacher improves it further",
            "DebCM (D_s ∪ D_t) − DebCM (D_s); T_diverse",
            metric,
            [(pooled, 1.0), (alone, -1.0)],
            ("table3", ("diverse", "ugc+pgc")),
        )
    )
    return out


def claim_debcm_beats_decrs(ev: Evidence, metric: str) -> list[Finding]:
    grid = ev.grid("fig3")
    out = []
    for x, column in reversed(grid.points()):
        out.append(
            _finding(
                ev,
                5,
                f"5.X={x:g}.{metric}",
                "DebCM beats DecRS at every genre ratio (batch mean over global mean)",
                f"DebCM (D_s) − DecRS (D_s); genre ratio X = {x:g}",
                metric,
                [
                    (ev.cell("fig3", "DebCM (D_s)", column, metric), 1.0),
                    (ev.cell("fig3", "DecRS (D_s)", column, metric), -1.0),
                ],
                ("fig3", column),
            )
        )
    return out


def claim_interior_optimum(ev: Evidence, metric: str) -> list[Finding]:
    grid = ev.grid("fig4")
    sign = better_sign(metric)
    row = "DebCM (D_s ∪ D_t)"
    out = []
    for panel in grid.panels():
        points = grid.points(panel)
        ends, inner = [points[0], points[-1]], points[1:-1]
        cells = {x: ev.cell("fig4", row, c, metric) for x, c in points}
        best_in = max(inner, key=lambda p: sign * cells[p[0]].mean)[0]
        best_end = max(ends, key=lambda p: sign * cells[p[0]].mean)[0]
        name = TEST_SETS.get(panel[0], panel[0]) if panel else "test"
        found = _finding(
            ev,
            6,
            f"6.{name}.{metric}",
            "the teacher weight has an interior optimum",
            f"{row} on {name}: the best interior weight ({best_in:g}) − the better end "
            f"({best_end:g}, of {points[0][0]:g} and {points[-1][0]:g})",
            metric,
            [(cells[best_in], 1.0), (cells[best_end], -1.0)],
            ("fig4", dict(points)[best_in]) if grid.controls else None,
            # the best of the interior weights was picked on these same runs: its interval is
            # widened to 1 − α/k (Bonferroni over the k it was picked from)
            alpha=ALPHA / max(1, len(inner)),
        )
        widened = (
            f"interval at {100 * (1 - ALPHA / max(1, len(inner))):.1f}% (Bonferroni over the "
            f"{len(inner)} interior weights the best was picked from)"
        )
        found.note = "; ".join(part for part in (found.note, widened) if part)
        out.append(found)
    return out


CLAIMS: list[tuple[int, str, Callable[[Evidence, str], list[Finding]]]] = [
    (
        1,
        "Debiased methods beat non-debiased ones on T_diverse and T_matching (§5.5)",
        claim_debiased_beat_non_debiased,
    ),
    (
        2,
        "Among non-debiased backbones, the generative ones (Dual-VAE, CMVAE) beat the matching "
        "ones (§5.5)",
        claim_generative_beat_matching,
    ),
    (
        3,
        "Pooling PGC into the baselines' training (D_s ∪ D_t) does not help (§5.5)",
        claim_pooling_pgc_does_not_help,
    ),
    (
        4,
        "DebCM is best on T_diverse, and its PGC teacher improves it further (§5.5)",
        claim_debcm_best,
    ),
    (5, "Fig. 3: DebCM beats DecRS at every genre ratio (§5.6.1)", claim_debcm_beats_decrs),
    (6, "Fig. 4: the teacher weight has an interior optimum (§5.6.2)", claim_interior_optimum),
]


def answer(ev: Evidence, metrics: tuple[str, ...] = (OBSERVED, TRUTH)) -> list[Finding]:
    """Every claim on every metric the evidence holds (the truth only where the data has it).
    A claim whose cells the store lacks is answered ``not run``, its note naming the cells and
    the command that runs them; the others are still answered. A store with none of the
    cells is an error."""
    findings: list[Finding] = []
    if not any(ev.has_metric(m) for m in metrics):
        raise ConfigError(
            f"{ev.out} holds no run of Table 3, Fig. 3 or Fig. 4 with these options; "
            f"run `benchkit claims` without --no-run (same options) to run them"
        )
    for metric in metrics:
        if not ev.has_metric(metric):
            continue
        for number, statement, judge in CLAIMS:
            try:
                findings += judge(ev, metric)
            except ConfigError as missing:
                key = f"{number}.{metric}"
                findings.append(
                    Finding(key, number, statement, "–", metric, NOT_RUN, note=str(missing))
                )
    return findings


def overall(findings: list[Finding], claim: int, metric: str) -> str:
    """A claim's verdict on one metric: ``holds`` where every part holds, ``fails`` where any
    part fails, else ``inconclusive``."""
    verdicts = [f.verdict for f in findings if f.claim == claim and f.metric == metric]
    if not verdicts:
        return "–"
    if NOT_RUN in verdicts:
        return NOT_RUN
    if "fails" in verdicts:
        return "fails"
    return "holds" if all(v == "holds" for v in verdicts) else "inconclusive"


def report(findings: list[Finding], truth: bool) -> str:
    """The findings as text: a block per claim, a line per part and metric."""
    lines = []
    metrics = list(dict.fromkeys(f.metric for f in findings))
    for number, statement, _ in CLAIMS:
        mine = [f for f in findings if f.claim == number]
        if not mine:
            continue
        verdicts = ", ".join(f"{metric_label(m)}: {overall(findings, number, m)}" for m in metrics)
        lines.append(f"Claim {number}. {statement}\n  verdict — {verdicts}")
        for f in mine:
            if f.verdict == NOT_RUN:
                lines.append(f"  · {metric_label(f.metric)} | not run: {f.note}")
                continue
            effect = "–" if f.effect is None else f"{f.effect:+.4f}"
            ci = "" if f.ci_low is None else f" [{f.ci_low:+.4f}, {f.ci_high:+.4f}]"
            lines.append(f"  · {metric_label(f.metric)} | {f.cells}")
            lines.append(
                f"      {f.verdict:<12} effect {effect}{ci}"
                + ("" if f.p is None else f", p = {f.p:.3g} ({f.units} {f.unit})")
                + (f"; {f.note}" if f.note else "")
            )
            lines.append(f"      control: {_control_text(f.control)}")
        lines.append("")
    tail = (
        f"Effects are paired differences (per replicate: the same worlds and test videos), "
        f"tested by a t-test over replicates; [a, b]: 95% intervals; holds/fails: the interval "
        f"excludes 0 on the claimed/other side (α = {ALPHA})."
    )
    if not truth:
        tail += (
            " The data has no truth: the claims are answered on the observed metric only, and "
            "no control exists (there are no counterfactual choices to train one on)."
        )
    return "\n".join(lines) + tail


def _control_text(control: dict[str, Any] | None) -> str:
    if not control:
        return "none"
    if "effect" not in control:
        return control.get("note", "none")
    text = f"{control['what']} = {control['effect']:+.4f}"
    if control.get("ci_low") is not None:
        text += f" [{control['ci_low']:+.4f}, {control['ci_high']:+.4f}]"
        text += " (significant)" if control.get("headroom") else f" ({control.get('note', '')})"
    elif control.get("note"):
        text += f" ({control['note']})"
    return text + f" in {control['cells']}"


def as_json(findings: list[Finding]) -> dict[str, Any]:
    return {
        "claims": [
            {
                **f.to_dict(),
                "effect": _finite(f.effect),
                "ci_low": _finite(f.ci_low),
                "ci_high": _finite(f.ci_high),
            }
            for f in findings
        ],
        "verdicts": {
            str(n): {m: overall(findings, n, m) for m in dict.fromkeys(f.metric for f in findings)}
            for n, _, _ in CLAIMS
        },
    }


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


CLAIM_GRIDS = ("table3", "fig3", "fig4")
DEFAULT_REPLICATES = 3


def gather(
    base: Any,
    out: str,
    *,
    replicates: int | None = None,
    seeds: int | None = None,
    run: bool = True,
    executor: str = "auto",
    jobs: int | None = None,
    address: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] | None = None,
) -> Evidence:
    """Run (or, with ``run=False``, only read from the store at ``out``) the grids the claims
    read — Table 3, Fig. 3, Fig. 4 — with ``replicates`` each (default 3), writing their tables
    and figures beside the store."""
    from pathlib import Path

    from benchkit.experiments.report import run_and_write

    if not run and not (Path(out) / "results.sqlite").is_file():  # --no-run writes nothing
        raise ConfigError(f"{out} holds no results store; run `benchkit claims` without --no-run")
    ev = Evidence(out=out)
    for name in CLAIM_GRIDS:
        done, _ = run_and_write(
            name,
            base,
            out,
            replicates=replicates or DEFAULT_REPLICATES,
            seeds=seeds,
            executor=executor,
            jobs=jobs,
            address=address,
            quiet=quiet,
            log=log,
            only_stored=not run,
        )
        ev.grids[name] = done.grid
        ev.summaries[name] = done.summary
    return ev
