"""Errors a user can cause. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations


class BenchkitError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in benchkit."""

    exit_code = 1


class UnknownNameError(BenchkitError):
    """A backbone, strategy, dataset, protocol or metric name that no installed plugin provides."""

    exit_code = 2


class PluginError(BenchkitError):
    """A plugin broke the contract: bad name, wrong type, a name another plugin already took."""


class DataError(BenchkitError):
    """A dataset is missing, malformed or inconsistent."""


class ConfigError(BenchkitError):
    """Hyperparameters or options that do not fit the chosen method."""

    exit_code = 2
