"""How long the command line takes to answer: `benchkit --help`, `python -m benchkit --help` and
`benchkit list …`, each run several times in a fresh process; prints the median and the range, and
the machine's load (a shared machine's numbers say so).

    python benchmarks/start.py            # 7 runs of each
    python benchmarks/start.py --runs 15

`list` is measured as users meet it: the first call after installing (or changing) a plugin loads
the plugins and writes the catalogue; the later ones read it. Both are shown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "benchkit --help": ["benchkit", "--help"],
    "python -m benchkit --help": [sys.executable, "-m", "benchkit", "--help"],
    "benchkit list backbones": ["benchkit", "list", "backbones"],
    "benchkit list executors": ["benchkit", "list", "executors"],
}


def seconds(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("benchkit") is None:
        sys.exit("benchkit is not on PATH: install it first (pip install -e .)")
    cache = tempfile.mkdtemp(prefix="benchkit-start-")
    env = {**os.environ, "BENCHKIT_CACHE": cache}
    try:
        load = os.getloadavg()[0]
        print(f"{os.cpu_count()} cores, load average {load:.2f} (1 min) before the runs")
        first = seconds(COMMANDS["benchkit list backbones"], env)
        print(f"{'benchkit list backbones, first call (catalogue written)':<56} {first:6.2f} s")
        for label, cmd in COMMANDS.items():
            times = [seconds(cmd, env) for _ in range(args.runs)]
            print(
                f"{label:<56} {statistics.median(times):6.2f} s median "
                f"({min(times):.2f} … {max(times):.2f}, {args.runs} runs)"
            )
        print(f"load average {os.getloadavg()[0]:.2f} (1 min) after the runs")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
