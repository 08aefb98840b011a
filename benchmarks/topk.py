"""Top-K recommendation over large pools: videos per second, share of the matmul peak, memory.

    python benchmarks/topk.py                         # pools of 3,000 / 100,000 / 1,000,000 music
    python benchmarks/topk.py --pools 3000 --videos 2000

For each pool size: a CMVAE package trained on the tiny world (its weights do not change the
cost) recommends the top 25 of a random pool for a batch of videos; the score products are
2·D FLOPs per (video, music), so the achieved GFLOP/s is compared with this machine's float32
matmul peak. Peak memory is the resident set size of a child process that runs one pool (it
holds the pool's features, its codes, and one chunk × block of scores).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).parent))
from machine import peaks

import benchkit
from benchkit.device import select_device


def one_pool(model: str, pool: int, videos: int, k: int, device: str) -> dict[str, float]:
    rec = benchkit.load(model, device=device)
    rng = np.random.default_rng(0)
    dim_v, dim_m = rec.card["data_spec"]["video_dim"], rec.card["data_spec"]["music_dim"]
    music = rng.standard_normal((pool, dim_m), dtype=np.float32)
    x = np.abs(rng.standard_normal((videos, dim_v), dtype=np.float32))
    p = rec.music_pool(music)
    rec.recommend(x[:64], k=k, pool=p)  # warm-up (and the pool's codes once)
    t0 = time.perf_counter()
    rec.recommend(x, k=k, pool=p)
    seconds = time.perf_counter() - t0
    latent = rec.embed_videos(x[:1]).shape[1]
    return {"seconds": seconds, "latent": latent}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--pools", default="3000,100000,1000000")
    parser.add_argument("--videos", type=int, default=4000)
    parser.add_argument("-k", type=int, default=25)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(
                one_pool(args.child[0], int(args.child[1]), args.videos, args.k, args.device)
            )
        )
        return
    device = select_device(args.device)
    peak = peaks(device, ["fp32"])["fp32"]
    print(
        f"device {device}, {torch.get_num_threads()} threads; fp32 matmul peak {peak:.0f} GFLOP/s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="benchkit-topk-") as tmp:  # the model, removed after
        folder = Path(tmp) / "model"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchkit.cli",
                "run",
                "--preset",
                "tiny",
                "--epochs",
                "2",
                "-q",
                "--save",
                str(folder),
            ],
            check=True,
            capture_output=True,
        )
        rows = []
        for pool in (int(p) for p in args.pools.split(",")):
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(folder),
                    str(pool),
                    "--videos",
                    str(args.videos),
                    "-k",
                    str(args.k),
                    "--device",
                    args.device,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            got = json.loads(out.stdout.strip().splitlines()[-1])
            rss = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
            gflops = 2 * got["latent"] * pool * args.videos / got["seconds"] / 1e9
            rows.append(
                {
                    "pool": f"{pool:,}",
                    "videos/s": round(args.videos / got["seconds"]),
                    "GFLOP/s": round(gflops, 1),
                    "% of peak": round(100 * gflops / peak, 1),
                    "peak RSS (GB)": round(rss / 1024**2, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        print(tabulate(rows, headers="keys", tablefmt="github"), flush=True)


if __name__ == "__main__":
    main()
