"""This machine's matrix-multiply peaks, measured the same way by every benchmark.

A bfloat16 peak is measured only where bfloat16 is native (AVX512-BF16/AMX on a CPU, or a GPU):
emulated bfloat16 runs orders of magnitude slower and tells nothing about the machine.
"""

from __future__ import annotations

import torch

from benchkit.flops import matmul_peak
from benchkit.options import native_bf16


def peaks(device: torch.device, precisions: list[str]) -> dict[str, float]:
    """The peak of each precision asked for; bfloat16 only where it is native (else left out)."""
    out: dict[str, float] = {}
    for precision in precisions:
        if precision == "fp32":
            out["fp32"] = matmul_peak(device, torch.float32)
        elif precision == "bf16" and (device.type == "cuda" or native_bf16(device)):
            out["bf16"] = matmul_peak(device, torch.bfloat16)
    return out
