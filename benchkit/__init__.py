"""benchkit: benchmark debiased cross-modal matching (DebCM and the baselines of its Table 3).

The package import is kept light (no torch): ``benchkit.hookimpl`` is all a plugin module needs at
import time. The Python API lives in :mod:`benchkit.api`.
"""

from benchkit.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
