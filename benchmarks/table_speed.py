"""A table's speed as a share of the machine: the grid's counted FLOPs over its wall time × this
machine's matmul peak (of the runs' precision), its workers' idle time at the end — with
scheduling and sharing on (runs submitted longest first; identical trainings done once,
``benchkit.reuse``) against the same grid with both off (table order, ``BENCHKIT_SHARE=0``), each
from an empty cache and store, one after the other on the same machine.

    python benchmarks/table_speed.py                          # tiny Table 3, 1 replicate
    python benchmarks/table_speed.py --preset small --replicates 5

FLOPs are torch's count of matrix products (``benchkit.flops``): training steps, validation passes
and the final evaluation of every run; a world's PGC teacher, trained once and shared, is not in
them, so the share is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time
from benchkit.experiments.driver import run_grid
from benchkit.experiments.grid import load_grid
from benchkit.spec import RunSpec
grid = load_grid(sys.argv[1], replicates=int(sys.argv[3]))
base = RunSpec(preset=sys.argv[2], world_seed=1000)  # a reporting world, as table3 uses
t0 = time.perf_counter()
out = run_grid(grid, base, sys.argv[4], quiet=True, order=sys.argv[5])
wall = time.perf_counter() - t0
flops = sum(r["record"]["training"]["flops"]["total"] for r in out.results.values())
busy = sum(r["record"]["training"]["wall_seconds"] for r in out.results.values())
precisions = sorted({r["record"]["training"]["precision"] for r in out.results.values()})
print(json.dumps({"wall": wall, "flops": flops, "idle": out.idle_tail, "busy": busy,
                  "runs": out.ran, "precision": precisions[-1]}))
"""


ARMS = {"off": ("table", "0"), "on": ("longest", "1")}  # order of submission, sharing


def timed(grid: str, preset: str, replicates: int, arm: str) -> dict[str, float]:
    order, share = ARMS[arm]
    with tempfile.TemporaryDirectory(prefix="benchkit-table-speed-") as tmp:
        cache = os.path.join(tmp, "cache")
        env = {**os.environ, "BENCHKIT_CACHE": cache, "BENCHKIT_SHARE": share}
        args = [sys.executable, "-c", CHILD, grid, preset, str(replicates)]
        res = subprocess.run(
            [*args, os.path.join(tmp, "out"), order], env=env, capture_output=True, text=True
        )
        if res.returncode != 0:
            raise SystemExit(f"{grid} ({arm}) failed:\n{res.stderr[-2000:]}")
        return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    from benchkit.flops import machine_peak
    from benchkit.options import cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", default="table3")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--replicates", type=int, default=1)
    args = ap.parse_args()
    print(f"machine: {cores()} cores", flush=True)
    rows = {}
    for arm in ARMS:
        r = timed(args.grid, args.preset, args.replicates, arm)
        peak = machine_peak(r["precision"])  # after the grid, on a quiet machine
        workers = max(1, round(r["busy"] / max(r["wall"], 1e-9)))
        rows[arm] = {
            **r,
            "peak_gflops": peak,
            "utilisation": r["flops"] / (r["wall"] * peak * 1e9),
            "busy_workers": r["busy"] / r["wall"],
        }
        print(
            f"{args.grid} ({args.preset}, {args.replicates} replicate(s)), scheduling and sharing "
            f"{arm}: "
            f"{r['runs']} runs in {r['wall']:.0f} s; {r['flops'] / 1e12:.2f} TFLOP = "
            f"{100 * rows[arm]['utilisation']:.1f}% of the {r['precision']} matmul peak "
            f"({peak:.0f} GFLOP/s); idle at the end "
            f"{r['idle']:.0f} worker-s; busy {r['busy'] / r['wall']:.2f} of ~{workers} workers",
            flush=True,
        )
    saved = 1 - rows["on"]["wall"] / rows["off"]["wall"]
    print(f"scheduling and sharing save {100 * saved:.1f}% of the wall time")
    print(json.dumps({**rows, "saved": saved}))


if __name__ == "__main__":
    main()
