"""Training and evaluation speed, measured (never asserted): one table per section.

    python benchmarks/train_speed.py                          # everything, small and paper presets
    python benchmarks/train_speed.py --presets small --backbones cmvae --skip memory,baseline
    python benchmarks/train_speed.py --threads 1     # as each run of a grid trains (2 cores, 2 jobs)

Sections:
- machine: the matrix-multiply peak of each precision asked for (``benchmarks/machine.py``;
  bfloat16 only where it is native — an emulated bfloat16 is skipped, never measured);
- train: for CMVAE + debcm (the PGC teacher's forward pass included) and every backbone: pairs per
  second, seconds per epoch, FLOPs per pair (counted by torch's FlopCounterMode over one forward and
  backward step), the achieved GFLOP/s and its share of the peak of the precision used, measured
  beside the row (the highest of the first measurement and one just before and after the row);
- baseline: the same CMVAE + debcm step fed by a straightforward per-sample
  ``torch.utils.data.DataLoader`` with per-item negative sampling (the release's loop), and the
  ratio to benchkit's loop;
- eval: a run's final evaluation on T_diverse (paper protocol and the world's oracle metrics), and
  test videos ranked per second under the ``full`` protocol against the dataset's pool and a
  1,000,000-music pool;
- memory: the peak resident set size of a whole ``benchkit run`` (one epoch) at the paper preset,
  measured in a child process with ``getrusage``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch
from machine import peaks as machine_peaks
from tabulate import tabulate

from benchkit.api import load_dataset, plan_run
from benchkit.data.dataset import Dataset
from benchkit.data.splits import apply_test_set
from benchkit.device import select_device
from benchkit.evaluate import FullProtocol, evaluate, rank_positives
from benchkit.flops import matmul_peak, step_flops_per_pair
from benchkit.interfaces import Batch, RunContext
from benchkit.method import Method
from benchkit.options import resolve_precision
from benchkit.pairs import ugc_pairs
from benchkit.plugins import get_plugins
from benchkit.spec import RunSpec
from benchkit.train import Trainer, fit

ALL = "cevar,cmvbr,dscmr,uwml,dual_vae,cmvae,cmvae+debcm"


FEATURES = "float32"  # feature storage (--features)


def build(name: str, data: Dataset, device: torch.device, precision: str) -> Method:
    """A method as `benchkit run` builds it (strategies prepared, the teacher trained or cached)."""
    plugins = get_plugins()
    backbone, _, debias = name.partition("+")
    spec = RunSpec(
        backbone=backbone,
        debias=debias or "none",
        precision=precision,
        device=str(device),
        features=FEATURES,
    )
    plan = plan_run(spec, dataset=data, plugins=plugins)
    torch.manual_seed(0)
    plan.backbone.build(data.spec())
    for s in plan.strategies:
        s.build(data.spec(), plan.backbone)
    method = Method(plan.backbone, plan.strategies).to(device)
    ctx = RunContext(
        device=device,
        seed=0,
        plugins=plugins,
        trainer=Trainer(
            plugins,
            device,
            0,
            patience=RunSpec().patience,
            precision=resolve_precision(precision, device),
        ),
    )
    for s in plan.strategies:
        s.prepare(data, ctx)
    return method


def peak_of(device: torch.device, precision: str) -> float:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return matmul_peak(device, dtype)


def train_rows(
    presets: list[str],
    names: list[str],
    precisions: list[str],
    epochs: int,
    device: torch.device,
    peaks: dict[str, float],
) -> list[dict[str, Any]]:
    rows = []
    plugins = get_plugins()
    for preset in presets:
        data = load_dataset(preset=preset, features=FEATURES, plugins=plugins, log=print)
        pairs = ugc_pairs(data, "train", device)
        for name in names:
            for precision in precisions:
                method = build(name, data, device, precision)
                batch_size = method.backbone.hparams["batch_size"]
                flops = step_flops_per_pair(method, pairs)
                fit(method, pairs, epochs=1, batch_size=batch_size, seed=0, precision=precision)
                # The peak beside the row, before and after it: a shared machine's throughput
                # drifts by a third from one minute to the next, so a peak measured once at the
                # start can put a row above 100% or well below its true share.
                peak = peak_of(device, precision)
                res = fit(
                    method, pairs, epochs=epochs, batch_size=batch_size, seed=1, precision=precision
                )
                peak = max(peak, peak_of(device, precision), peaks[precision])
                gflops = flops * res.pairs_per_second / 1e9
                rows.append(
                    {
                        "preset": preset,
                        "method": name,
                        "precision": precision,
                        "train pairs": len(pairs),
                        "s/epoch": round(res.seconds_per_epoch, 2),
                        "pairs/s": round(res.pairs_per_second),
                        "MFLOP/pair": round(flops / 1e6, 2),
                        "GFLOP/s": round(gflops, 1),
                        "peak": round(peak),
                        "% of peak": round(100 * gflops / peak, 1),
                    }
                )
                print(rows[-1], flush=True)
    return rows


class PerSample(torch.utils.data.Dataset):
    """The straightforward loop: one Python call per training pair, a random negative per item."""

    def __init__(self, data: Dataset) -> None:
        self.data = data
        self.rows = data.splits["train"]
        self.prior = data.video_prior
        assert data.music_genre is not None
        self.genre = data.music_genre

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        v = int(self.rows[i])
        m = int(self.data.video_music[v])
        neg = np.random.randint(self.data.n_music - 1)
        neg += neg >= m
        return (
            self.data.video_features[v],
            self.data.music_features[m],
            v,
            m,
            neg,
            int(self.genre[m]),
            self.prior[v],
        )


def baseline_row(
    preset: str, name: str, device: torch.device, precision: str, batches: int
) -> dict[str, Any]:
    data = load_dataset(preset=preset)
    method = build(name, data, device, precision)
    opt = method.backbone.configure_optimizer([p for p in method.parameters() if p.requires_grad])
    loader = torch.utils.data.DataLoader(PerSample(data), batch_size=1024, shuffle=True)
    method.train()
    seen, t0 = 0, time.perf_counter()
    for step, (v, m, vi, mi, _neg, g, prior) in enumerate(loader):
        if step == batches:
            break
        batch = Batch(
            video=v.to(device).float(),
            music=m.to(device).float(),
            video_idx=vi.to(device),
            music_idx=mi.to(device),
            genre=g.to(device),
            prior=prior.to(device).float(),
        )
        with torch.autocast(
            device.type,
            dtype=torch.bfloat16,
            enabled=resolve_precision(precision, device) == "bf16",
        ):
            loss, _ = method.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += batch.size
    return {
        "preset": preset,
        "method": name,
        "loop": "per-sample DataLoader",
        "pairs/s": round(seen / (time.perf_counter() - t0)),
    }


def eval_rows(preset: str, device: torch.device) -> list[dict[str, Any]]:
    plugins = get_plugins()
    data = load_dataset(preset=preset, plugins=plugins)
    method = build("cmvae", data, device, "fp32")
    method.eval()
    rows = []
    videos = data.video_features[data.splits["test"][:4000]]  # all of a small world's, if fewer
    n = len(videos)
    big = Dataset(
        name="pool-1M",
        video_features=videos,
        music_features=np.random.default_rng(0)
        .standard_normal((1_000_000, data.music_features.shape[1]), dtype=np.float32)
        .astype(np.float16),
        video_music=np.zeros(n, dtype=np.int64),
        splits={
            "train": np.arange(n // 2),
            "val": np.arange(n // 2, 3 * n // 4),
            "test": np.arange(3 * n // 4, n),
        },
    )
    # The final evaluation of a run on the world: ranks under the paper protocol plus the oracle
    # metrics (interventional recall, true NDCG, bias amplification) over the whole pool.
    diverse = apply_test_set(data, "diverse")
    t0 = time.perf_counter()
    evaluate(
        method, diverse, plugins.protocols.get("paper")(), plugins.metrics, "test", device, True
    )
    seconds = time.perf_counter() - t0
    n_test = len(diverse.splits["test"])
    rows.append(
        {
            "pool": f"{preset} T_diverse, paper protocol + oracle metrics",
            "test videos": n_test,
            "seconds": round(seconds, 2),
            "videos/s": round(n_test / seconds),
        }
    )
    print(rows[-1], flush=True)
    for ds, label in ((data, f"{preset} ({data.n_music:,} music)"), (big, "1,000,000 music")):
        task = FullProtocol().task(ds, "test")
        t0 = time.perf_counter()
        rank_positives(method, ds, task, device, "expected")
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "pool": label,
                "test videos": len(task.video_idx),
                "seconds": round(seconds, 2),
                "videos/s": round(len(task.video_idx) / seconds),
            }
        )
        print(rows[-1], flush=True)
    return rows


def memory_row(preset: str, precision: str) -> dict[str, Any]:
    code = (
        "from benchkit.api import run; "
        f"run('cmvae', 'debcm', preset='{preset}', epochs=1, precision='{precision}', "
        f"features='{FEATURES}')"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-c", code], check=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "preset": preset,
        "run": f"cmvae+debcm, 1 epoch, {FEATURES} features",
        "peak RSS (GB)": round(max(peak_kb, before) / 1024**2, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--backbones", default=ALL, help="methods, e.g. cmvae,cmvae+debcm")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--baseline-batches", type=int, default=30)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--features", default="float32", help="feature storage: float32|float16")
    parser.add_argument("--skip", default="", help="sections to skip: train,baseline,eval,memory")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: all of this process's; a grid's runs get cores / jobs each)",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    global FEATURES
    FEATURES = args.features
    device = select_device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    presets = args.presets.split(",")
    print(
        f"## machine: measuring the matmul peak of {device} ({torch.get_num_threads()} threads)",
        flush=True,
    )
    asked = args.precisions.split(",")
    peaks = machine_peaks(device, asked)
    precisions = [p for p in asked if p in peaks]
    for p in asked:
        if p not in peaks:
            print(f"{p}: not native on {device}; not measured", flush=True)
    print("matmul peak " + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peaks.items()), flush=True)
    if "train" not in skip:
        print("## train: pairs per second and share of peak", flush=True)
        rows = train_rows(
            presets, args.backbones.split(","), precisions, args.epochs, device, peaks
        )
        print(tabulate(rows, headers="keys", tablefmt="github"), flush=True)
    if "baseline" not in skip:
        print("## baseline: a per-sample DataLoader loop", flush=True)
        rows = [
            baseline_row(p, "cmvae+debcm", device, precisions[0], args.baseline_batches)
            for p in presets
        ]
        print(tabulate(rows, headers="keys", tablefmt="github"), flush=True)
    if "eval" not in skip:
        print("## eval: test videos ranked per second", flush=True)
        print(tabulate(eval_rows(presets[-1], device), headers="keys", tablefmt="github"))
    if "memory" not in skip:
        print("## memory: peak RSS of a whole run", flush=True)
        print(tabulate([memory_row(presets[-1], precisions[0])], headers="keys", tablefmt="github"))


if __name__ == "__main__":
    main()
