"""benchkit's optional parts (pip extras): what each one adds and the module it brings, so that a
missing one is one line saying which ``pip install`` fixes it — never an ImportError's page."""

from __future__ import annotations

import importlib
from typing import Any

from benchkit.errors import ConfigError

# extra → (the module it installs, what needs it); README's table of extras lists the same.
EXTRAS = {
    "tune": ("optuna", "benchkit tune and a grid's --tune"),
    "parquet": ("pyarrow", ".parquet datasets, inputs, recommendations and exports"),
    "ray": ("ray", "--executor ray"),
    "mlflow": ("mlflow", "logging every run to MLflow (BENCHKIT_MLFLOW)"),
    "plots": ("matplotlib", "figures: fig3, fig4, figure grids, results --curves"),
}


def missing(extra: str, what: str) -> ConfigError:
    """The one-line error for ``what`` without the ``extra``."""
    module = EXTRAS[extra][0]
    return ConfigError(f"{what} needs {module}: pip install 'benchkit[{extra}]'")


def require(extra: str, what: str) -> Any:
    """The extra's module, imported; or :func:`missing` raised."""
    try:
        return importlib.import_module(EXTRAS[extra][0])
    except ImportError:
        raise missing(extra, what) from None
