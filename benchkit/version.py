"""The version of benchkit (one place: the package root and the records read it here)."""

__version__ = "0.3.0"
