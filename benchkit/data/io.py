"""Opening datasets from disk: the DebCM release layout and generic tables, as dataset plugins.

``open_dataset(path)`` asks each registered dataset provider that can ``detect`` a path (the two
built-in ones here, or a third party's) to load it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchkit.data.dataset import PGC, Dataset
from benchkit.data.reference import is_reference, read_pgc, read_reference
from benchkit.data.tables import _read_pgc, is_tables, read_tables
from benchkit.errors import DataError
from benchkit.hookspecs import hookimpl
from benchkit.interfaces import DatasetProvider


class DiskLayout(DatasetProvider):
    """A dataset on disk in one layout: ``detect(path)`` recognises it, ``read(**options)`` loads
    it (``path``; ``pgc``, ``normalise_weights`` and a run's ``seed`` where the layout reads them)."""

    def __init__(
        self,
        name: str,
        description: str,
        detect: Callable[[Path], bool],
        read: Callable[..., Dataset],
    ) -> None:
        self.name, self.description = name, description  # type: ignore[misc]
        self.detect, self._read = detect, read

    def load(self, **options: Any) -> Dataset:
        return self._read(**options)


LAYOUTS = (
    DiskLayout(
        "reference",
        "the DebCM release layout (data_matching/, data_pgc/)",
        is_reference,
        lambda path, pgc=None, normalise_weights=False, **_: read_reference(
            path, pgc=pgc, normalise_weights=normalise_weights
        ),
    ),
    DiskLayout(
        "tables",
        "interaction table (CSV/Parquet) + feature arrays (.npy) + music genres",
        is_tables,
        # A run passes its world seed: the split of tables that bring none.
        lambda path, seed=0, **_: read_tables(path, seed=seed),
    ),
)


def read_pgc_any(path: Path | str) -> PGC:
    """PGC clips in either format: ``data_pgc/`` (train.npy …) or a tables ``pgc/`` folder."""
    p = Path(path)
    if (p / "pairs.csv").exists() or (p / "pairs.parquet").exists():
        return _read_pgc(p)
    if (p / "train.npy").exists():
        return read_pgc(p)
    raise DataError(f"{p}: no PGC data (expected data_pgc/train.npy … or pgc/pairs.csv)")


def open_dataset(
    plugins: Any, path: Path | str, pgc: Path | str | None = None, **options: Any
) -> Dataset:
    """Load ``path`` with the first dataset provider that recognises it; ``pgc`` adds PGC clips."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    from benchkit.faults import plugin_faults

    for entry in plugins.datasets.entries():
        detect = getattr(entry.obj, "detect", None)
        with plugin_faults(plugins):  # a provider that raises is named, in one line
            found = detect is not None and detect(p)
            ds = entry.obj.load(path=p, **options) if found else None
        if ds is not None:
            return replace(ds, pgc=read_pgc_any(pgc)) if pgc is not None else ds
    kinds = ", ".join(e.name for e in plugins.datasets.entries() if hasattr(e.obj, "detect"))
    raise DataError(
        f"{p}: not a dataset layout benchkit knows ({kinds}); see 'Bring your own "
        f"data' in the README"
    )


@hookimpl
def register_datasets(register: Any) -> None:
    for layout in LAYOUTS:
        register(layout)
