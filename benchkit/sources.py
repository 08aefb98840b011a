"""Where a run's data comes from: the synthetic world or a dataset on disk, loaded once per
process and shared by the runs that need the same data (a grid's column, a worker's next job)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchkit.data.dataset import Dataset
from benchkit.data.features import with_feature_dtype, with_normalised_features
from benchkit.data.io import open_dataset, read_pgc_any
from benchkit.data.splits import apply_test_set
from benchkit.errors import ConfigError
from benchkit.plugins import Plugins, get_plugins
from benchkit.spec import RunSpec

Log = Callable[[str], None]


class DatasetCache:
    """Datasets by what decides them (:meth:`RunSpec.data_key`), a few at a time: a grid's runs
    and a worker's successive jobs share one load of each world and each test-set split."""

    def __init__(self, size: int = 6) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Dataset] = OrderedDict()

    def normalised(self, spec: RunSpec, plugins: Plugins, log: Log | None = None) -> Dataset:
        """:meth:`get`, with the features preprocessed as ``spec.features_norm`` says (kept too:
        every row of a grid's column shares one normalisation of its data)."""
        stamp = (_stamp(spec.data), _stamp(spec.pgc))
        key = (*spec.data_key(), stamp, "norm", spec.features_norm)
        if key not in self._items:
            ds = with_normalised_features(self.get(spec, plugins, log), spec.features_norm)
            self._put(key, ds)
        self._items.move_to_end(key)
        return self._items[key]

    def get(self, spec: RunSpec, plugins: Plugins, log: Log | None = None) -> Dataset:
        stamp = (_stamp(spec.data), _stamp(spec.pgc))  # files changed on disk: load them again
        key = (*spec.data_key(), stamp)
        if key not in self._items:
            base_spec = spec.replace(test_set="given", features="float32")
            base_key = (*base_spec.data_key(), stamp)
            if base_key not in self._items:
                self._put(base_key, _load_source(base_spec, plugins, log))
            ds = apply_test_set(self._items[base_key], spec.test_set, seed=spec.world_seed)
            self._put(key, with_feature_dtype(ds, spec.features))
        self._items.move_to_end(key)
        return self._items[key]

    def _put(self, key: tuple[Any, ...], ds: Dataset) -> None:
        self._items[key] = ds
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


DATASETS = DatasetCache()


def _stamp(path: str | None) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of every file under ``path``: changes when the data on disk change."""
    if path is None:
        return ()
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _load_source(spec: RunSpec, plugins: Plugins, log: Log | None) -> Dataset:
    if spec.data is not None:
        if spec.world:
            raise ConfigError("--world changes the synthetic world; it cannot apply to --data")
        return open_dataset(
            plugins,
            spec.data,
            pgc=spec.pgc,
            normalise_weights=spec.normalise_weights,
            seed=spec.world_seed,  # the split of tables that bring none
        )
    data = plugins.datasets.get("synth").load(
        preset=spec.preset, seed=spec.world_seed, log=log, **dict(spec.world)
    )
    if spec.pgc is not None:
        data = replace(data, pgc=read_pgc_any(spec.pgc))
    return data


def load_dataset(
    spec: RunSpec | None = None,
    *,
    plugins: Plugins | None = None,
    log: Log | None = None,
    **options: Any,
) -> Dataset:
    """The data a run of ``spec`` (or of these RunSpec ``options``) sees: the dataset at ``data``
    (any layout a dataset plugin detects) or the synthetic world at ``preset``, re-split by
    ``test_set``, features stored as ``features``."""
    spec = (spec or RunSpec()).replace(**options)
    return DATASETS.get(spec, plugins or get_plugins(), log)
