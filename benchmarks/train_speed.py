"""Training speed of a backbone on the synthetic world: seconds per epoch and pairs per second.

    python benchmarks/train_speed.py                       # cmvae at the small and paper presets
    python benchmarks/train_speed.py --presets tiny --backbone cmvae --epochs 3

Times whole training epochs through the same loop ``benchkit run`` uses (validation excluded), after
one warm-up epoch, and prints the machine's float32 matrix-multiply peak measured in the same run so
the figures can be read as a share of it. Numbers are measured, never asserted in tests.
"""

from __future__ import annotations

import argparse
import time

import torch
from tabulate import tabulate

from benchkit.api import load_dataset, parse_stack
from benchkit.device import select_device, ugc_pairs
from benchkit.method import Method
from benchkit.plugins import get_plugins
from benchkit.train import fit


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Achieved float32 GFLOP/s of a large square matmul: the practical peak of this machine."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def measure(
    backbone: str,
    debias: str,
    preset: str,
    epochs: int,
    device: torch.device,
    overrides: dict[str, object],
) -> dict[str, object]:
    plugins = get_plugins()
    data = load_dataset(plugins, preset, 0, log=print)
    torch.manual_seed(0)
    bb = plugins.backbones.get(backbone)(**overrides)
    bb.build(data.spec())
    strategies = [cls() for cls, _ in parse_stack(debias, plugins)]
    for s in strategies:
        s.build(data.spec(), bb)
    method = Method(bb, strategies).to(device)
    pairs = ugc_pairs(data, "train", device)
    batch = bb.hparams["batch_size"]
    fit(method, pairs, epochs=1, batch_size=batch, seed=0)  # warm-up
    result = fit(method, pairs, epochs=epochs, batch_size=batch, seed=1)
    return {
        "preset": preset,
        "backbone": f"{backbone}+{debias}",
        "train pairs": len(pairs),
        "batch": batch,
        "s/epoch": round(result.seconds_per_epoch, 3),
        "pairs/s": round(result.pairs_per_second),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backbone", default="cmvae")
    parser.add_argument("--debias", default="none")
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = select_device(args.device)
    peak = matmul_peak(device)
    print(
        f"device {device}, {torch.get_num_threads()} threads, float32 matmul peak "
        f"{peak:.0f} GFLOP/s (2048³)"
    )
    rows = [
        measure(args.backbone, args.debias, p, args.epochs, device, {})
        for p in args.presets.split(",")
    ]
    print(tabulate(rows, headers="keys", tablefmt="github"))


if __name__ == "__main__":
    main()
