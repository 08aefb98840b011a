"""The dataset a run hands to plugins: read-only, so that no plugin can change another run's data.

A grid's runs share one load of each dataset (:class:`benchkit.sources.DatasetCache`), so a strategy
that wrote into the arrays it was given would change the numbers of every later run. Each run
therefore sees :func:`share` of its dataset — every array a read-only view, every dict a read-only
mapping, no attribute settable — and a plugin that writes fails at once, named. What a view cannot
guard (a tensor made from an array shares its memory) is caught after the run by
:func:`checksums`: the run fails and the cache is dropped. A strategy that must write declares
``writes_dataset = True`` and gets a private copy instead.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
import zlib
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import numpy as np

from benchkit.data.dataset import Dataset

# benchkit hands read-only arrays to torch on purpose (torch.from_numpy shares their memory, which
# the checksums guard); torch's warning about it would only be noise.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


class SharedDataset(Dataset):
    """A dataset as plugins see it during a run: its attributes cannot be set."""

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_sealed"):
            raise AttributeError(
                f"dataset.{name} cannot be set: the dataset is shared by every run and read-only"
            )
        super().__setattr__(name, value)


def _frozen(value: Any, private: bool) -> Any:
    """``value`` with every array in it read-only (a view) — or copied, when ``private``."""
    if isinstance(value, np.ndarray):
        if private:
            return value.copy()
        view = value.view()
        view.flags.writeable = False
        return view
    if isinstance(value, (dict, MappingProxyType)):
        inner = {k: _frozen(v, private) for k, v in value.items()}
        return inner if private else MappingProxyType(inner)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        clone = copy.copy(value)
        clone.__dict__.update({k: _frozen(v, private) for k, v in value.__dict__.items()})
        return clone
    return value


def share(ds: Dataset, private: bool = False) -> Dataset:
    """``ds`` as a run hands it to plugins: read-only views of the same memory (no copy), or —
    ``private`` — a writable copy of every array."""
    state = {k: _frozen(v, private) for k, v in ds.__dict__.items()}
    if private:
        out = copy.copy(ds)
        out.__dict__.update(state)
        return out
    shared = SharedDataset.__new__(SharedDataset)
    shared.__dict__.update(state)
    shared.__dict__["_sealed"] = True
    return shared


def _arrays(value: Any, name: str) -> Iterator[tuple[str, np.ndarray]]:
    if isinstance(value, np.ndarray):
        yield name, value
    elif isinstance(value, (dict, MappingProxyType)):
        for k, v in value.items():
            yield from _arrays(v, f"{name}[{k!r}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for k, v in value.__dict__.items():
            yield from _arrays(v, f"{name}.{k}")


def checksums(ds: Dataset) -> dict[str, int]:
    """A CRC-32 of every array of ``ds`` (cached statistics included), by where it lives: cheap
    (memory speed), and enough to see that a run changed one."""
    out = {}
    for key, value in ds.__dict__.items():
        for name, a in _arrays(value, key):
            data = np.ascontiguousarray(a)
            out[name] = zlib.crc32(data.view(np.uint8).reshape(-1).data) if data.size else 0
    return out


def changed(ds: Dataset, before: dict[str, int]) -> list[str]:
    """The arrays of ``ds`` whose checksum is no longer ``before``'s."""
    now = checksums(ds)
    return [name for name, crc in before.items() if now.get(name) != crc]
