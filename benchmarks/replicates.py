"""What replicates cost: a grid with one replicate against the same grid with N, on the same machine,
one after the other, each from an empty cache (its worlds and PGC teachers built inside the
measured time) and an empty store.

A replicate's world, split, truth and teacher are built once and shared by every row of the grid,
so N replicates should cost about N times one (the target: at most 1.1 N).

    python benchmarks/replicates.py                      # tiny Table 3, 1 against 5 replicates
    python benchmarks/replicates.py --grid fig4 --replicates 3 --preset tiny
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def timed(grid: str, preset: str, replicates: int, epochs: int | None) -> float:
    with tempfile.TemporaryDirectory(prefix="benchkit-replicates-") as tmp:
        env = {**os.environ, "BENCHKIT_CACHE": os.path.join(tmp, "cache")}
        args = [sys.executable, "-m", "benchkit.cli"]
        args += ["experiment", grid] if grid not in ("table3", "fig3", "fig4") else [grid]
        args += ["--preset", preset, "--replicates", str(replicates), "-q"]
        args += ["--out", os.path.join(tmp, "out")]
        if epochs is not None:
            args += ["--epochs", str(epochs)]
        started = time.perf_counter()
        res = subprocess.run(args, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{res.stderr[-2000:]}")
        return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", default="table3")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None, help="Cap every run's epochs.")
    args = ap.parse_args()
    one = timed(args.grid, args.preset, 1, args.epochs)
    print(f"{args.grid} ({args.preset}), 1 replicate: {one:.0f} s", flush=True)
    many = timed(args.grid, args.preset, args.replicates, args.epochs)
    ratio = many / one
    print(
        f"{args.grid} ({args.preset}), {args.replicates} replicates: {many:.0f} s = {ratio:.2f} × "
        f"one replicate (target ≤ {1.1 * args.replicates:.1f})"
    )
    print(
        json.dumps(
            {
                "grid": args.grid,
                "preset": args.preset,
                "one": round(one, 1),
                "replicates": args.replicates,
                "many": round(many, 1),
                "ratio": round(ratio, 3),
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
