"""Top-K recommendation over large pools: videos per second, against a same-shape matmul and the
matmul peak; the share of the time that selection takes; memory.

    python benchmarks/topk.py                         # pools of 3,000 / 100,000 / 1,000,000 music
    python benchmarks/topk.py --pools 3000 --videos 2000

For each pool size: a CMVAE package trained on the tiny world (its weights do not change the
cost) recommends the top 25 of a random pool for a batch of videos (the pool's codes computed
once beforehand, as a package does for its own pool). The score products are 2·D FLOPs per
(video, music): the achieved GFLOP/s is compared with this machine's float32 matmul peak and
with the plain products of the same shapes (the same video chunks against the same music
blocks, into one reused buffer: what top-K would cost if selection were free), printed as
"N% of a same-shape matmul". The selection's share is timed inside ``benchkit.topk.top_k``.
Peak memory is the resident set size of a child process that runs one pool (it holds the pool's
features, its codes, and one chunk × block of scores).
"""

from __future__ import annotations

import argparse
import json
import math
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
from benchkit.topk import top_k

CHUNK, BLOCK = 1024, 4096  # top_k's default video chunk and music block


def same_shape_matmul(videos: int, pool: int, latent: int, device: torch.device) -> float:
    """Seconds of the products top-K computes, alone: the same chunks × blocks, one buffer."""
    gen = torch.Generator(device=device).manual_seed(0)
    v = torch.randn(CHUNK, latent, device=device, generator=gen)
    m = torch.randn(pool, latent, device=device, generator=gen)
    out = torch.empty(CHUNK, BLOCK, device=device)
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        for s in range(0, videos, CHUNK):
            rows = min(CHUNK, videos - s)
            for b in range(0, pool, BLOCK):
                cols = min(BLOCK, pool - b)
                torch.mm(v[:rows], m[b : b + cols].T, out=out[:rows, :cols])
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


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
    parts: dict[str, float] = {}  # the same ranking again, timed inside
    feats = rec._features(x, "video", "videos")
    idx, prior = rec._uploader_rows(None, videos)
    top_k(rec.method, feats, p, k, idx, prior, rec.device, video_chunk=CHUNK, seconds=parts)
    latent = rec.embed_videos(x[:1]).shape[1]
    matmul = same_shape_matmul(videos, pool, latent, rec.device)
    return {"seconds": seconds, "latent": latent, "matmul": matmul, **parts}


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
            share = got["matmul"] / got["seconds"]
            select = got["select"] / (got["select"] + got["score"])
            rows.append(
                {
                    "pool": f"{pool:,}",
                    "videos/s": round(args.videos / got["seconds"]),
                    "same-shape matmul (videos/s)": round(args.videos / got["matmul"]),
                    "of a same-shape matmul": f"{100 * share:.0f}% of a same-shape matmul",
                    "selection share": f"{100 * select:.0f}%",
                    "GFLOP/s": round(gflops, 1),
                    "% of peak": round(100 * gflops / peak, 1),
                    "peak RSS (GB)": round(rss / 1024**2, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        print(tabulate(rows, headers="keys", tablefmt="github"), flush=True)


if __name__ == "__main__":
    main()
