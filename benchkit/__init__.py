"""benchkit: benchmark debiased cross-modal matching (DebCM and the baselines of its Table 3).

The package import is kept light (no torch): ``benchkit.hookimpl`` is all a plugin module needs at
import time. The Python API lives in :mod:`benchkit.api`; ``benchkit.load(DIR)`` opens a model
package written by ``benchkit run --save DIR`` (:mod:`benchkit.model`).
"""

from typing import Any

from benchkit.hookspecs import hookimpl
from benchkit.version import __version__

__all__ = ["__version__", "hookimpl", "load"]


def load(folder: Any, device: str = "auto") -> Any:
    """A trained model package (see :func:`benchkit.model.load`), ready to recommend."""
    from benchkit.model import load as load_model

    return load_model(folder, device=device)
