"""Stable content hashes: the identity of datasets, protocols and runs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (dict keys sorted, tuples as lists)."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def array_digest(h: Any, array: np.ndarray) -> None:
    """Feed an array's dtype, shape and bytes into hashlib object ``h``."""
    a = np.ascontiguousarray(array)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes() if not a.flags.c_contiguous else memoryview(a).cast("B"))  # type: ignore[arg-type]
