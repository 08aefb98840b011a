"""The plugin contract.

Every hook receives a ``register`` callback (the style of ``llm`` and tox 4) and calls it once per
thing it contributes. The callback validates on the spot (slug name, right type, no clash) and the
plugin manager remembers which plugin registered what, so errors and ``benchkit plugins`` can name
it. A plugin implements only the hooks it needs.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT = "benchkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callback a ``register_*`` hook receives."""

    def __call__(
        self, obj: Any, *, name: str | None = None, aliases: tuple[str, ...] = ()
    ) -> None: ...


@hookspec
def register_backbones(register: Register) -> None:
    """Register backbone classes: subclasses of ``benchkit.interfaces.Backbone`` that implement
    ``build``, ``encode_video``, ``encode_music`` and ``loss_terms``.

    When: once, when the plugins are loaded (any ``benchkit`` command, or ``load_plugins()``).
    ``register(cls)`` names the backbone ``cls.name``; ``register(cls, name=..., aliases=(...))``
    overrides or adds names. The registry checks the name (a lower-case slug), the type (a
    concrete ``Backbone`` subclass) and clashes (the error names both plugins); a plugin whose
    registration fails is reported by ``benchkit plugins`` and loads nothing.
    """


@hookspec
def register_strategies(register: Register) -> None:
    """Register debias strategies — subclasses of ``benchkit.interfaces.Strategy`` implementing
    any of its hook points — and stack aliases (``benchkit.interfaces.StackAlias``, e.g.
    ``debcm`` = ``backdoor`` + ``kl_distill?``, a trailing ``?`` marking an optional member).

    When: once, when the plugins are loaded. Same checks as ``register_backbones``.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset providers: instances of ``benchkit.interfaces.DatasetProvider`` whose
    ``load(**options)`` returns a ``benchkit.data.Dataset``. A provider with a ``detect(path)``
    method is offered every ``--data PATH``; the first that recognises the path loads it.

    When: once, when the plugins are loaded; ``load`` runs only when a run asks for the data.
    """


@hookspec
def register_protocols(register: Register) -> None:
    """Register evaluation protocols: subclasses of ``benchkit.interfaces.Protocol`` whose
    ``task(dataset, split)`` says which candidates each test video is ranked among and how rows
    are weighted. ``--protocol NAME`` selects one.

    When: once, when the plugins are loaded.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register ranking metrics: instances of ``benchkit.interfaces.Metric``, called with where
    each row's positive landed (``RankInfo``) and a cut-off K. A protocol lists the metrics it
    reports in its ``metrics`` hyperparameter.

    When: once, when the plugins are loaded.
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register grid executors: subclasses of ``benchkit.executors.Executor`` implementing
    ``submit(task)`` and ``collect()`` (yield an ``Outcome`` per task as it finishes; run each
    task with ``benchkit.executors.worker.run_task`` wherever it executes). ``--executor NAME``
    selects one; it is constructed with ``jobs``, ``address`` and ``quiet``.

    When: once, when the plugins are loaded; the executor is built when a grid runs.
    """


@hookspec
def on_run_event(event: str, run: dict[str, Any], payload: dict[str, Any]) -> None:
    """Observe a run as it goes — to log it to a tracker (MLflow, TensorBoard, a file).

    ``event`` is ``"run_start"`` (``payload``: the run's spec), ``"epoch_end"`` (the epoch's
    record: loss, each term's contribution and share, validation score, seconds) or ``"run_end"``
    (the run's record: metrics, training, hyperparameters). ``run`` identifies the run: its
    result key, backbone, debias stack, seed and dataset fingerprint.

    When: in whichever process trains the run (a grid's workers too). An observer that raises is
    reported once on the run's log and then left out of that run: it never stops training.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``benchkit`` command line: ``cli`` is its click group, so call
    ``cli.add_command(my_command)``.

    When: when the command line needs the plugins' commands — to run one of them, or to list
    them in ``benchkit --help`` — and by ``benchkit plugins``. The names and short help of the
    commands are remembered in benchkit's plugin catalogue, so that ``--help`` does not import the
    plugins again until one of them changes.
    """


HOOKS = (
    register_backbones,
    register_strategies,
    register_datasets,
    register_protocols,
    register_metrics,
    register_executors,
    on_run_event,
    register_commands,
)


def reference_markdown() -> str:
    """The hook reference as Markdown, generated from the specs above (``docs/plugins.md`` embeds
    it, and a test keeps the two equal)."""
    import inspect

    parts = []
    for hook in HOOKS:
        params = ", ".join(inspect.signature(hook).parameters)
        doc = inspect.cleandoc(hook.__doc__ or "")
        parts.append(f"### `{hook.__name__}({params})`\n\n{doc}\n")
    return "\n".join(parts)
