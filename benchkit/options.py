"""A run's machine-dependent options, each resolved once from its spec, with one default each.

The spec says what was asked (``device="auto"``, ``precision="auto"``, ``threads=None``); a plan
resolves it here, once, into :class:`RunOptions`, and everything downstream (the trainer, the
teacher, the result's key and environment) reads the resolved values; nothing re-derives them.
Defaults live in the spec (:mod:`benchkit.spec`); the cores a worker gets live in
:func:`threads_for`.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from typing import Any

import torch

from benchkit.device import select_device
from benchkit.errors import ConfigError
from benchkit.spec import PRECISIONS, RunSpec

#: What ``precision`` resolves to.
RESOLVED_PRECISIONS = ("fp32", "bf16")


def cores() -> int:
    """The machine's CPU cores (``os.cpu_count``: what grids have always divided, so that the
    threads in a run's key stay the same)."""
    return os.cpu_count() or 1


def threads_for(jobs: int) -> int:
    """The threads each of ``jobs`` concurrent runs gets on this machine (executors, tuning)."""
    return max(1, cores() // max(1, jobs))


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 autocast pays off on ``device``: on CPUs that multiply bfloat16 natively
    (AVX512-BF16/AMX) it trains 1.3–2.9× faster; on a GPU these models are too small to gain (an
    H200 trained CMVAE 8% *slower* in bf16), so ``auto`` keeps float32 there."""
    if device.type != "cpu":
        return False
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if probe is not None and probe():
        return True
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; none where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


def machine() -> dict[str, Any]:
    """What rounds arithmetic differently on another machine sharing a cache folder (the keys of
    shared work hold it): the CPU's vector instructions, its architecture, the GPUs and their
    settings."""
    out: dict[str, Any] = {
        "isa": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4"))),
        "arch": platform.machine(),
    }
    if torch.cuda.is_available():
        out["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out["cuda"] = torch.version.cuda
        out["tf32"] = [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]
    return out


def sharing() -> bool:
    """Whether work that is provably the same is done once and reused — identical trainings
    (:mod:`benchkit.reuse`), the world's truth on the same test videos
    (:func:`benchkit.oracle.truth_probabilities`); ``BENCHKIT_SHARE=0`` turns it off."""
    return os.environ.get("BENCHKIT_SHARE", "1").strip().lower() not in ("0", "false", "no", "off")


def worker_memory(jobs: int) -> int:
    """The resident memory (bytes) above which a grid's worker process is replaced by a fresh one
    after its run: this machine's memory over ``jobs`` + 1 (the driver's share), at least 2 GiB;
    ``BENCHKIT_WORKER_MEMORY`` (GiB) overrides it. A worker keeps datasets and teachers between
    runs, and what a run leaves behind (a plugin's leak, a fragmented heap) stays with it: at the
    paper preset two workers grew past 10 GB each and the OOM killer took runs."""
    raw = os.environ.get("BENCHKIT_WORKER_MEMORY", "").strip()
    if raw:
        try:
            gib = float(raw)
        except ValueError:
            raise ConfigError(
                f"BENCHKIT_WORKER_MEMORY is a number of GiB (e.g. 6), not {raw!r}"
            ) from None
        if not gib > 0:
            raise ConfigError(f"BENCHKIT_WORKER_MEMORY must be positive, got {raw!r}")
        return int(gib * 2**30)
    return max(2**31, physical_memory() // (jobs + 1))


def physical_memory() -> int:
    """This machine's memory in bytes (2**62 where the system does not say: no limit)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 2**62


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` on CPUs with native bfloat16, else ``fp32``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


@dataclass(frozen=True)
class RunOptions:
    """The resolved options of one run."""

    device: torch.device
    precision: str  # fp32 or bf16
    threads: int
    patience: int
    seed: int


def resolve(spec: RunSpec) -> RunOptions:
    """Resolve ``spec``'s options on this machine (``threads``: the spec's, else this process's)."""
    device = select_device(spec.device)
    return RunOptions(
        device=device,
        precision=resolve_precision(spec.precision, device),
        threads=spec.threads or torch.get_num_threads(),
        patience=spec.patience,
        seed=spec.seed,
    )
