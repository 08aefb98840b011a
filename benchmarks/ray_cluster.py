"""A grid on a Ray cluster of several nodes: its wall time against the ideal, sum of run times / workers.

    python benchmarks/ray_cluster.py                       # tiny Table 3 on 2 local nodes of 1 CPU
    python benchmarks/ray_cluster.py --nodes 2 --cpus 1 --preset tiny --replicates 1

The nodes are separate Ray node processes on this machine (``ray.cluster_utils.Cluster``: a head
and workers, each with its own raylet and object store, as on separate machines), each with
``--cpus`` CPUs; the grid is submitted to the cluster's address with one thread per run, as
``benchkit table3 --executor ray --address HOST:PORT`` does. The store and the cache are fresh
(a temporary folder), so the world and the PGC teachers are built inside the runs. The ratio
printed is wall / (the runs' own seconds summed / workers): 1.0 when the workers never wait.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", default="table3")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--replicates", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=1, help="CPUs of each node")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="benchkit-ray-cluster-") as tmp:
        os.environ["BENCHKIT_CACHE"] = os.path.join(tmp, "cache")  # the nodes inherit it
        from ray.cluster_utils import Cluster

        from benchkit.executors.ray import _loopback_only

        _loopback_only()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus})
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=args.cpus)
        cluster.wait_for_nodes()
        try:
            from benchkit.experiments.driver import run_grid
            from benchkit.experiments.grid import load_grid
            from benchkit.spec import RunSpec

            grid = load_grid(args.grid, replicates=args.replicates)
            base = RunSpec(preset=args.preset, world_seed=1000, threads=1)
            workers = args.nodes * args.cpus
            t0 = time.perf_counter()
            out = run_grid(
                grid,
                base,
                os.path.join(tmp, "out"),
                quiet=True,
                executor="ray",
                jobs=workers,
                address=cluster.address,
            )
            wall = time.perf_counter() - t0
        finally:
            import ray

            ray.shutdown()
            cluster.shutdown()
    runs = [r["record"]["training"]["wall_seconds"] for r in out.results.values()]
    ideal = sum(runs) / workers
    print(
        f"{args.grid} ({args.preset}, {args.replicates} replicate(s)) on {args.nodes} Ray nodes "
        f"of {args.cpus} CPU: {len(runs)} runs in {wall:.0f} s; the runs' own seconds "
        f"{sum(runs):.0f} / {workers} workers = {ideal:.0f} s; wall = {wall / ideal:.2f} × that"
    )
    print(
        json.dumps({"wall": wall, "run_seconds": sum(runs), "workers": workers, "runs": len(runs)})
    )


if __name__ == "__main__":
    main()
