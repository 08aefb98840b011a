"""This machine's matrix-multiply peaks, measured the same way by every benchmark.

A bfloat16 peak is measured only where bfloat16 is native (AVX512-BF16/AMX on a CPU, or a GPU):
emulated bfloat16 runs orders of magnitude slower and tells nothing about the machine.
"""

from __future__ import annotations

import time

import torch

from benchkit.options import native_bf16


def matmul_peak(
    device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.0
) -> float:
    """GFLOP/s of square ``n``×``n`` matmuls, repeated for about ``seconds`` after a warm-up."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        done += 1
    sync(device)
    return 2 * n**3 * done / (time.perf_counter() - t0) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peaks(device: torch.device, precisions: list[str]) -> dict[str, float]:
    """The peak of each precision asked for; bfloat16 only where it is native (else left out)."""
    out: dict[str, float] = {}
    for precision in precisions:
        if precision == "fp32":
            out["fp32"] = matmul_peak(device, torch.float32)
        elif precision == "bf16" and (device.type == "cuda" or native_bf16(device)):
            out["bf16"] = matmul_peak(device, torch.bfloat16)
    return out
