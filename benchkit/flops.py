"""A run's floating-point work, counted, and the machine's matrix-multiply peak: the speed of a
table is its FLOPs over wall time × peak (``benchkit results --timing``).

FLOPs are those of torch's ``FlopCounterMode`` (matrix products and convolutions: the arithmetic
that dominates these models; elementwise work is not counted). Counting never changes a number:
the training step is counted on a copy of the trained method with the random state put back, and
evaluation under the counter runs the same operations.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")


def counted(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the FLOPs it did."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, float(counter.get_total_flops())


def step_flops_per_pair(method: Any, pairs: Any) -> float:
    """FLOPs of one training step (forward and backward) per training pair, on a batch of the
    method's batch size; 0 for a closed-form backbone."""
    if method.backbone.closed_form or len(pairs) < 2:
        return 0.0
    size = min(int(method.backbone.hparams["batch_size"]), len(pairs))
    device = pairs.device
    probe = copy.deepcopy(method).train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        batch = pairs.batch(torch.arange(size, device=device))

        def step() -> None:
            loss, _ = probe.loss(batch)
            loss.backward()

        _, flops = counted(step)
    return flops / size


def matmul_peak(
    device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 1.0
) -> float:
    """GFLOP/s of square ``n``×``n`` matmuls, repeated for about ``seconds`` after a warm-up."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        done += 1
    _sync(device)
    return 2 * n**3 * done / (time.perf_counter() - t0) / 1e9


@functools.cache
def machine_peak(precision: str = "fp32") -> float:
    """This machine's matmul peak on the CPU in ``precision`` (``fp32``, or ``bf16``: what runs
    that train in bf16 multiply in), with all of this process's threads (GFLOP/s), measured once
    per process."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return matmul_peak(torch.device("cpu"), dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
