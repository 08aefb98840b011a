"""What each hook of a backbone or a strategy may return, checked at every call.

:data:`RETURNS` says it once; :func:`check_returns` (called for every subclass) wraps each hook a
plugin overrides so that a wrong return is one :class:`PluginError` naming the plugin, the hook,
what was expected and what came, not a traceback thirty frames later. ``benchkit.contract`` prints
the same expectations into the plugin author's reference.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchkit.contracts.values import Latent, LossTerm, Weights
from benchkit.errors import PluginError

CONTRACT_TYPES = (
    "DataSpec",
    "Latent",
    "Batch",
    "Output",
    "LossTerm",
    "Weights",
    "Query",
    "RunContext",
)
BACKBONE_HOOKS = (
    "build",
    "encode_video",
    "encode_music",
    "score",
    "score_rows",
    "loss_terms",
)
# The hook points a strategy may override to act (``Strategy.hook_points`` reads them), in the
# order the reference lists them between the setup hooks and ``report``.
HOOK_POINTS = (
    "prepare",
    "weights",
    "adjust_music",
    "adjust_video",
    "adjust_score",
    "extra_loss",
    "rerank",
)
STRATEGY_HOOKS = ("check_backbone", "build", *HOOK_POINTS, "report")


@dataclass(frozen=True)
class Returns:
    """What a hook may return (``text``, as the reference says it) and the check of one call:
    ``check(value, args)`` is ``None`` when fine, else what is wrong with ``value``."""

    text: str
    check: Callable[[Any, tuple[Any, ...]], str | None]


def _tensor() -> Any:
    import torch

    return torch.Tensor


def _rows(value: Any) -> int | None:
    shape = getattr(value, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) else None


def _latent(value: Any, args: tuple[Any, ...]) -> str | None:
    if not isinstance(value, Latent) or not isinstance(value.mu, _tensor()):
        return "not a Latent"
    expected = _rows(getattr(args[0], "mu", args[0])) if args else None
    if value.mu.dim() != 2 or (expected is not None and value.mu.shape[0] != expected):
        return f"codes of shape {tuple(value.mu.shape)} for {expected} input rows"
    return None


def _matrix(rows_of: int, cols_of: int | None) -> Callable[[Any, tuple[Any, ...]], str | None]:
    """A (rows, columns) tensor: rows of ``args[rows_of]``, columns of ``args[cols_of]``."""

    def check(value: Any, args: tuple[Any, ...]) -> str | None:
        if not isinstance(value, _tensor()):
            return "not a Tensor"
        want = (_rows(args[rows_of]), _rows(args[cols_of]) if cols_of is not None else None)
        if value.dim() != 2 or value.shape[0] != want[0]:
            return f"shape {tuple(value.shape)}"
        if want[1] is not None and value.shape[1] != want[1]:
            return f"shape {tuple(value.shape)}"
        return None

    return check


def _same_shape(value: Any, args: tuple[Any, ...]) -> str | None:
    if not isinstance(value, _tensor()):
        return "not a Tensor"
    if tuple(value.shape) != tuple(args[0].shape):
        return f"shape {tuple(value.shape)} for scores of shape {tuple(args[0].shape)}"
    return None


def _terms(value: Any, args: tuple[Any, ...]) -> str | None:
    if not isinstance(value, dict):
        return "not a dict"
    for key, term in value.items():
        if not isinstance(key, str) or not isinstance(term, LossTerm):
            return f"entry {key!r} is not a LossTerm"
    return None


def _weights(value: Any, args: tuple[Any, ...]) -> str | None:
    return None if value is None or isinstance(value, Weights) else "not Weights"


def _instance(kind: type | tuple[type, ...], what: str) -> Callable[..., str | None]:
    def check(value: Any, args: tuple[Any, ...]) -> str | None:
        return None if isinstance(value, kind) else f"not {what}"

    return check


RETURNS: dict[str, dict[str, Returns]] = {
    "backbone": {
        "encode_video": Returns("a Latent, one code per input row", _latent),
        "encode_music": Returns("a Latent, one code per input row", _latent),
        "score": Returns("a (videos, music) Tensor", _matrix(0, 1)),
        "score_rows": Returns("a (videos, music) Tensor", _matrix(0, 1)),
        "loss_terms": Returns("a dict of name → LossTerm", _terms),
    },
    "strategy": {
        "check_backbone": Returns(
            "None, or why the backbone cannot work (a str)", _instance((str, type(None)), "a str")
        ),
        "weights": Returns("Weights, or None for no weights", _weights),
        "adjust_music": Returns("a Latent with the input's rows", _latent),
        "adjust_video": Returns("a Latent with the input's rows", _latent),
        "adjust_score": Returns("a Tensor of the scores' shape", _same_shape),
        "extra_loss": Returns("a dict of name → LossTerm (empty: none)", _terms),
        "rerank": Returns("a Tensor of the scores' shape", _same_shape),
        "report": Returns("a dict of JSON-able figures", _instance(dict, "a dict")),
    },
}


def _shown(value: Any) -> str:
    """A returned value, as a wrong-return message names it."""
    if isinstance(value, _tensor()):
        return f"a Tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        kinds = sorted({type(v).__name__ for v in value.values()})
        return f"a dict of {', '.join(kinds) or 'nothing'}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '…' if len(text) > 60 else text}"


def origin(cls: type) -> str:
    """Where a plugin class comes from: its module, and the distribution that installed it."""
    module = cls.__module__
    try:
        from importlib.metadata import packages_distributions

        dists = packages_distributions().get(module.split(".")[0], [])
    except Exception:
        dists = []
    return f"plugin module {module}" + (f" ({', '.join(dists)})" if dists else "")


def check_returns(cls: type, kind: str) -> None:
    """Wrap each hook ``cls`` defines so that every call's return is checked (:data:`RETURNS`)."""
    for hook, expect in RETURNS[kind].items():
        fn = cls.__dict__.get(hook)
        if fn is None or not inspect.isfunction(fn) or getattr(fn, "__isabstractmethod__", False):
            continue
        if getattr(fn, "__benchkit_checked__", False):
            continue
        setattr(cls, hook, _checked(fn, kind, hook, expect))


def _checked(fn: Any, kind: str, hook: str, expect: Returns) -> Any:
    @functools.wraps(fn)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        value = fn(self, *args, **kwargs)
        problem = expect.check(value, args)
        if problem is not None:
            cls = type(self)
            raise PluginError(
                f"{kind} {getattr(cls, 'name', '') or cls.__name__!r} ({origin(cls)}): {hook}() "
                f"must return {expect.text}; it returned {_shown(value)} ({problem})"
            )
        return value

    checked.__benchkit_checked__ = True  # type: ignore[attr-defined]
    return checked


# -- the reference --------------------------------------------------------------------------------
