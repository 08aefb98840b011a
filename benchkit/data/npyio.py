"""Reading and writing ``.npy`` files without ever unpickling arbitrary objects.

The DebCM release stores some tables as NumPy *object* arrays, which ``np.load`` can only read with
``allow_pickle=True`` — that would run any code a crafted file carries. :func:`load_npy` reads such
files with an unpickler that only rebuilds arrays, lists and plain scalars.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchkit.errors import DataError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "list"),
    ("builtins", "tuple"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (
            (module, name) in _ALLOWED
            or (module == "numpy" and name.endswith("Dtype"))
            or (module == "numpy.dtypes" and name.endswith("DType"))
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_npy(path: Path | str, what: str = "") -> np.ndarray:
    """Load a ``.npy`` file; object arrays go through the array-only unpickler."""
    path = Path(path)
    label = f"{path}" + (f" ({what})" if what else "")
    check_file(path, label)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            if not dtype.hasobject:
                needed = int(np.prod(shape, dtype=object)) * dtype.itemsize + f.tell()
                size = path.stat().st_size
                if needed > size:  # a truncated file, or a header that lies about its size
                    raise DataError(
                        f"{label}: its header promises an array of shape {shape} "
                        f"({needed:,} bytes) but the file holds {size:,}; it is truncated or "
                        f"damaged"
                    )
                return np.load(path, allow_pickle=False)
            array = _ArrayOnlyUnpickler(f).load()
    except DataError:
        raise
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot read {label}: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{label} does not hold an array")
    return array


def check_file(path: Path, label: str) -> None:
    """One clear line for a path that is missing, not a file, or unreadable."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"missing file {label}") from None
    except OSError as exc:  # a symlink loop, say
        raise DataError(f"cannot read {label}: {exc.strerror or exc}") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{label} is not a file (a folder, or something else)")
    if not os.access(path, os.R_OK):
        raise DataError(f"cannot read {label}: permission denied")


def read_text(path: Path, what: str) -> str:
    """A text file as UTF-8, or one clear line."""
    check_file(path, f"{path} ({what})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} ({what}): not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None


def read_json(path: Path, what: str) -> Any:
    import json

    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} ({what}): not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None


def load_features(path: Path | str, what: str) -> np.ndarray:
    """A feature matrix from ``path``: 2-d, real, finite; returned as float32 (no copy if it is)."""
    a = load_npy(path, what)
    if a.ndim != 2:
        raise DataError(
            f"{path} ({what}): expected a 2-d array (rows × features), got shape {a.shape}"
        )
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"{path} ({what}): expected real numbers, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise DataError(
            f"{path} ({what}): NaN or inf in {int(bad.sum())} row(s), e.g. row "
            f"{int(np.flatnonzero(bad)[0])}; clean or drop them"
        )
    return a


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write one array (object arrays allowed: we wrote them, and we read them back safely)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=array.dtype.hasobject)


class AtomicDir:
    """Write a folder under a temporary name and rename it into place only when complete."""

    def __init__(self, target: Path | str) -> None:
        self.target = Path(target)
        if self.target.exists() and any(self.target.iterdir()):
            raise DataError(f"{self.target} exists and is not empty; choose another --out")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            if self.target.exists():
                self.target.rmdir()
            os.replace(self.tmp, self.target)
        else:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)
