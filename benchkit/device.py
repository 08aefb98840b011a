"""Device selection and zero-copy tensors on it."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from benchkit.errors import ConfigError


def select_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU. ``cuda`` fails clearly where there is none."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {preference!r} requested but CUDA is not available; use --device cpu"
        )
    try:
        return torch.device(preference)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {preference!r}: {exc}") from None


def as_tensor(a: np.ndarray, device: torch.device) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device, non_blocking=True) if t.device != device else t
