"""Datasets: the in-memory model, the synthetic world, loaders and splits."""

from benchkit.data.dataset import PGC, Dataset, Truth

__all__ = ["PGC", "Dataset", "Truth"]
