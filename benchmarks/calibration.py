"""Calibration of benchkit's statistics, measured: does a test at α = 0.05 reject 5% of true nulls,
and do 95% intervals cover the truth 95% of the time?

1. **A/A comparisons.** CMVAE trained K times (training seeds only differ) on each of W tiny worlds,
   on T_random and T_diverse. Two runs of one method have no true difference, so every rejection
   is a false positive. The *new* test (benchkit's: a paired t-test over replicates, here groups
   of R = 5 worlds, one seed pair per group) is set against the *old* one (a paired sign flip over
   the test videos of one world and one run per row — what a table with one seed per row
   tested), and a sign flip over the uploaders of one world (cluster-aware, one run per row).
2. **A planted effect.** Two noisy versions of the world's Bayes-optimal ranker (the ``oracle``
   backbone with ``noise`` = 1 and 2: a known, controllable quality gap) on W worlds; their true
   values — and their true difference — are the means over a separate set of reference worlds.
   Coverage: the share of 95% intervals — a cell's (the hierarchical bootstrap) and a paired
   difference's (the t-interval) — that contain the truth, in groups of R worlds.

Runs go through the real pipeline (grids, the store at ``--out``: an interrupted benchmark
resumes). Ends with one JSON line: ``fpr_new``, ``fpr_old``, ``coverage`` and the number of
comparisons, with the rest of the figures beside them. ``--quick`` runs a small version in a few
minutes on 2 cores (the slow test suite runs it).

    python benchmarks/calibration.py            # 40 A/A worlds × 8 seeds, 100 planted worlds
    python benchmarks/calibration.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchkit.experiments.driver import run_grid
from benchkit.experiments.grid import load_grid
from benchkit.experiments.stats import (
    ALPHA,
    Cell,
    Replicate,
    contributions,
    paired_test,
    sign_flip_p,
    summarise,
)
from benchkit.spec import RunSpec

METRICS = ("recall@25", "cf_recall@25")
TEST_SETS = ("random", "diverse")
AA_WORLD, PLANTED_WORLD, REFERENCE_WORLD = 20000, 21000, 22000  # nobody tunes or reports here
GROUP = 5  # replicates per comparison, as in a table run with --replicates 5


def grid_file(folder: Path, name: str, rows: str, replicates: int, seeds: int) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nkind = "table"\nprotocol = "paper"\n'
        f"metrics = {json.dumps(list(METRICS))}\ntest_sets = {json.dumps(list(TEST_SETS))}\n"
        f'settings = ["ugc"]\nreplicates = {replicates}\nseeds = {seeds}\n{rows}'
    )
    return path


AA_ROWS = '[[rows]]\nlabel = "CMVAE"\nbackbone = "cmvae"\ndebias = "none"\n'
PLANTED_ROWS = (
    '[[rows]]\nlabel = "A"\nbackbone = "oracle"\ndebias = "none"\n'
    'set = { score = "cf", noise = 1.0 }\n'
    '[[rows]]\nlabel = "B"\nbackbone = "oracle"\ndebias = "none"\n'
    'set = { score = "cf", noise = 2.0 }\n'
)


def run(grid_path: Path, base: RunSpec, out: str, quiet: bool) -> Any:
    grid = load_grid(grid_path)
    say = (lambda _m: None) if quiet else (lambda m: print(m, file=sys.stderr))
    done = run_grid(grid, base, out, quiet=quiet, log=say)
    if done.failures:
        raise SystemExit(f"{len(done.failures)} runs failed: {next(iter(done.failures.values()))}")
    return done


def by_place(done: Any) -> dict[tuple[str, str, int, int], dict[str, Any]]:
    """(row, test set, replicate, seed index) → the run's result."""
    out = {}
    first_seed: dict[int, int] = {}
    for job in done.grid.jobs:
        first_seed[job.replicate] = min(first_seed.get(job.replicate, job.seed), job.seed)
    for job, key in zip(done.grid.jobs, done.keys, strict=True):
        out[(job.row, job.column[0], job.replicate, job.seed - first_seed[job.replicate])] = (
            done.results[key]
        )
    return out


def cell_of(values: dict[int, float], keys: dict[int, str]) -> Cell:
    cell = Cell()
    for r, v in values.items():
        cell.replicates[r] = Replicate(keys[r], {0: v})
    return cell


def aa_part(done: Any, worlds: int, seeds: int) -> dict[str, Any]:
    runs = by_place(done)
    new, old, cluster = [], [], []
    for metric in METRICS:
        for t in TEST_SETS:
            for i in range(0, seeds - 1, 2):
                j = i + 1
                for g in range(0, worlds - GROUP + 1, GROUP):
                    group = range(g, g + GROUP)
                    a = {r: runs[("CMVAE", t, r, i)]["metrics"][metric] for r in group}
                    b = {r: runs[("CMVAE", t, r, j)]["metrics"][metric] for r in group}
                    keys = {
                        r: runs[("CMVAE", t, r, i)]["record"]["dataset"]["eval_rows"] for r in group
                    }
                    test = paired_test([(cell_of(a, keys), 1.0), (cell_of(b, keys), -1.0)])
                    new.append(1.0 if test is not None and test.p < ALPHA else 0.0)
                for r in range(worlds):
                    ra, rb = runs[("CMVAE", t, r, i)], runs[("CMVAE", t, r, j)]
                    ca, cb = contributions(ra["ranks"], metric), contributions(rb["ranks"], metric)
                    assert ca is not None and cb is not None
                    diff = ca[0] - cb[0]
                    old.append(float(sign_flip_p(diff, seed=r * 1000 + i) < ALPHA))
                    clusters = ra["ranks"].clusters
                    sums = np.bincount(np.unique(clusters, return_inverse=True)[1], weights=diff)
                    cluster.append(float(sign_flip_p(sums, seed=r * 1000 + i) < ALPHA))
    return {"new": new, "old": old, "cluster": cluster}


def planted_part(evaluation: Any, reference: Any, worlds: int) -> dict[str, Any]:
    ref = by_place(reference)
    truth: dict[tuple[str, str], float] = {}
    truth_se: dict[tuple[str, str], float] = {}
    for metric in METRICS:
        for t in TEST_SETS:
            values = np.array(
                [
                    v["metrics"][metric]
                    for (row, ts, _, _), v in ref.items()
                    if row == "A" and ts == t
                ]
            )
            d = np.array(
                [
                    v["metrics"][metric] - ref[("B", ts, r, s)]["metrics"][metric]
                    for (row, ts, r, s), v in ref.items()
                    if row == "A" and ts == t
                ]
            )
            truth[(metric, t)], truth[(metric, t + ":diff")] = (
                float(values.mean()),
                float(d.mean()),
            )
            truth_se[(metric, t)] = float(values.std(ddof=1) / np.sqrt(values.size))
            truth_se[(metric, t + ":diff")] = float(d.std(ddof=1) / np.sqrt(d.size))
    grid = evaluation.grid
    cells: list[float] = []
    diffs: list[float] = []
    for g in range(0, worlds - GROUP + 1, GROUP):
        group = set(range(g, g + GROUP))
        pairs = [
            (j, k) for j, k in zip(grid.jobs, evaluation.keys, strict=True) if j.replicate in group
        ]
        jobs, keys = [j for j, _ in pairs], [k for _, k in pairs]
        summary = summarise(grid, keys, evaluation.results, jobs)
        for metric in METRICS:
            for t in TEST_SETS:
                a = summary[("A", (t, "ugc"), metric)]
                b = summary[("B", (t, "ugc"), metric)]
                assert a.ci is not None
                cells.append(float(a.ci[0] <= truth[(metric, t)] <= a.ci[1]))
                test = paired_test([(a, 1.0), (b, -1.0)])
                assert test is not None
                diffs.append(float(test.ci[0] <= truth[(metric, t + ":diff")] <= test.ci[1]))
    return {
        "cells": cells,
        "differences": diffs,
        "truth": {f"{m}/{t}": v for (m, t), v in truth.items()},
        "truth_se": {f"{m}/{t}": v for (m, t), v in truth_se.items()},
    }


def rate(xs: list[float]) -> tuple[float, float]:
    p = float(np.mean(xs)) if xs else float("nan")
    return p, float(np.sqrt(max(p * (1 - p), 1e-12) / max(1, len(xs))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="A small version (a few minutes).")
    ap.add_argument("--worlds", type=int, default=None, help="Worlds per part (multiple of 5).")
    ap.add_argument("--seeds", type=int, default=None, help="A/A training seeds per world.")
    ap.add_argument(
        "--planted-worlds",
        type=int,
        default=None,
        help="Worlds of the planted part (default 100; --quick: --worlds); its runs train "
        "nothing, so they are cheap.",
    )
    ap.add_argument("--out", default=None, help="Results store (resumable); default: temporary.")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    worlds = args.worlds or (10 if args.quick else 40)
    seeds = args.seeds or (4 if args.quick else 8)
    planted_worlds = args.planted_worlds or (worlds if args.quick else 100)
    if worlds % GROUP or worlds < GROUP or planted_worlds % GROUP or planted_worlds < GROUP:
        raise SystemExit(f"--worlds and --planted-worlds must be multiples of {GROUP}")
    if seeds < 2:
        raise SystemExit("--seeds must be at least 2")
    started = time.perf_counter()
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="benchkit-calibration-")
        out = tmp.name
    else:
        out = args.out
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    base = RunSpec(preset=args.preset)
    aa = run(
        grid_file(folder, "calibration_aa", AA_ROWS, worlds, seeds),
        base.replace(world_seed=AA_WORLD),
        out,
        args.quiet,
    )
    evaluation = run(
        grid_file(folder, "calibration_planted", PLANTED_ROWS, planted_worlds, 1),
        base.replace(world_seed=PLANTED_WORLD),
        out,
        args.quiet,
    )
    reference = run(
        grid_file(folder, "calibration_reference", PLANTED_ROWS, planted_worlds, 2),
        base.replace(world_seed=REFERENCE_WORLD),
        out,
        args.quiet,
    )
    null = aa_part(aa, worlds, seeds)
    planted = planted_part(evaluation, reference, planted_worlds)
    fpr_new, se_new = rate(null["new"])
    fpr_old, se_old = rate(null["old"])
    fpr_cluster, se_cluster = rate(null["cluster"])
    cover_cells, _ = rate(planted["cells"])
    cover_diffs, _ = rate(planted["differences"])
    coverage, se_cov = rate(planted["cells"] + planted["differences"])
    seconds = time.perf_counter() - started
    print(
        f"A/A: CMVAE on {worlds} {args.preset} worlds × {seeds} training seeds, T_random and T_diverse"
    )
    print(
        f"  new test (paired t over {GROUP} replicates): false-positive rate {fpr_new:.3f} "
        f"± {se_new:.3f} (MC s.e.) over {len(null['new'])} comparisons; goal ≤ "
        f"{ALPHA + 2 * se_new:.3f} (0.05 + 2 s.e.)"
    )
    print(
        f"  old test (sign flip over test videos, one run per row): {fpr_old:.3f} ± {se_old:.3f} "
        f"over {len(null['old'])} comparisons"
    )
    print(
        f"  sign flip over uploaders (one run per row): {fpr_cluster:.3f} ± {se_cluster:.3f} "
        f"over {len(null['cluster'])} comparisons"
    )
    print(
        f"planted effect: oracle + noise 1 vs 2 on {planted_worlds} worlds (truth from "
        f"{planted_worlds} × 2 others), intervals per group of {GROUP} worlds (a group's "
        f"{len(METRICS) * len(TEST_SETS)} metric × test set intervals share its worlds)"
    )
    for name, value in planted["truth"].items():
        print(f"  true {name}: {value:.4f} (± {planted['truth_se'][name]:.4f})")
    print(
        f"  coverage of 95% intervals: cells {cover_cells:.3f} ({len(planted['cells'])}), "
        f"differences {cover_diffs:.3f} ({len(planted['differences'])}); all {coverage:.3f} "
        f"± {se_cov:.3f}; goal ≥ 0.93"
    )
    print(f"wall time {seconds / 60:.1f} min on {os.cpu_count()} cores")
    print(
        json.dumps(
            {
                "fpr_new": fpr_new,
                "fpr_old": fpr_old,
                "fpr_cluster": fpr_cluster,
                "coverage": coverage,
                "coverage_cells": cover_cells,
                "coverage_differences": cover_diffs,
                "comparisons": len(null["new"]),
                "comparisons_old": len(null["old"]),
                "intervals": len(planted["cells"]) + len(planted["differences"]),
                "mc_se_new": se_new,
                "worlds": worlds,
                "planted_worlds": planted_worlds,
                "seeds": seeds,
                "seconds": round(seconds, 1),
            }
        )
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
