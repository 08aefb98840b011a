"""Datasets: the in-memory model, the synthetic world, loaders and splits."""

from benchkit.data.dataset import PGC, Dataset
from benchkit.data.truth import Truth

__all__ = ["PGC", "Dataset", "Truth"]
