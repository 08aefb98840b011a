"""The ground floor: the contracts every other room stands on, importing nothing of benchkit
above it (errors, files and hashing are the only rooms beside it).

- ``params``: a hyperparameter's declaration (default, range, search space) and ``Configurable``.
- ``values``: the data that flows through a model (``DataSpec``, ``Batch``, ``Latent``, …).
- ``returns``: what each hook may return, checked at every call.
- ``methods``: ``Backbone`` and ``Strategy``.
- ``protocol``, ``metrics``: how a split becomes ranking tasks; what a metric declares.
- ``run``: what a run hands its plugins; ``executor``: where runs go.
- ``kinds``: the table of plugin kinds.

Plugins import the same names from :mod:`benchkit.interfaces`.
"""
