"""Device selection and zero-copy tensors on it."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from benchkit.errors import ConfigError


def select_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU. ``cuda`` fails clearly where there is none; a
    device that cannot train (``meta``, a GPU index that does not exist) is refused in one line."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {preference!r}; use auto, cpu or cuda[:N]")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {preference!r} requested but CUDA is not available; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {preference!r}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {preference!r} requested but MPS is not available")
    return device


def as_tensor(a: np.ndarray, device: torch.device) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device, non_blocking=True) if t.device != device else t
