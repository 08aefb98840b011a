"""Every backbone on one world under both protocols: Recall/NDCG@K and seconds per epoch.

    python benchmarks/backbones.py                 # small preset, seed 1234, each card's epochs
    python benchmarks/backbones.py --preset tiny --backbones cmvae,cca

Each (backbone, protocol) pair is a separate `benchkit.api.run` (the protocol also selects the
epoch on validation). The world is biased by construction, so these are the numbers a researcher
would see on the default world — not a claim about real data.
"""

from __future__ import annotations

import argparse
import json
import time

from tabulate import tabulate

from benchkit.api import load_dataset, run
from benchkit.plugins import get_plugins


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--backbones", default="cevar,cmvbr,dscmr,uwml,dual_vae,cmvae,random,cca")
    parser.add_argument("--protocols", default="paper,full")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    plugins = get_plugins()
    data = load_dataset(preset=args.preset, plugins=plugins, log=print)
    rows = []
    for name in args.backbones.split(","):
        row: dict[str, object] = {"backbone": name}
        for protocol in args.protocols.split(","):
            t0 = time.perf_counter()
            res = run(
                name, "none", dataset=data, protocol=protocol, seed=args.seed, plugins=plugins
            )
            row[f"R@{args.k} {protocol}"] = round(res.metrics[f"recall@{args.k}"], 4)
            row[f"N@{args.k} {protocol}"] = round(res.metrics[f"ndcg@{args.k}"], 4)
            row[f"epochs {protocol}"] = res.training["epochs_run"]
            row["s/epoch"] = round(res.training["seconds_per_epoch"], 2)
            row[f"wall s {protocol}"] = round(time.perf_counter() - t0)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(tabulate(rows, headers="keys", tablefmt="github"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
