"""The plugin contract, read from the code: what each hook receives and may return, checked at
every call and written out as the plugin author's reference.

Two things come from one place here, so that they cannot disagree. :data:`RETURNS` says what every
hook of a backbone or a strategy may return; :func:`check_returns` (called for every subclass)
wraps each hook a plugin overrides so that a wrong return is one :class:`PluginError` naming the
plugin, the hook, what was expected and what came — not a traceback thirty frames later — and
:func:`reference_markdown` prints the same expectations into ``docs/plugins.md`` beside each
contract type's fields (from the annotations and the string under each field in
:mod:`benchkit.interfaces`) and each hook's signature and example (from its docstring). A test
keeps the document equal to this output and runs every example.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    from benchkit.interfaces import Latent

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
    from benchkit.interfaces import LossTerm

    if not isinstance(value, dict):
        return "not a dict"
    for key, term in value.items():
        if not isinstance(key, str) or not isinstance(term, LossTerm):
            return f"entry {key!r} is not a LossTerm"
    return None


def _weights(value: Any, args: tuple[Any, ...]) -> str | None:
    from benchkit.interfaces import Weights

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


def _class_node(cls: type) -> ast.ClassDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    node = tree.body[0]
    assert isinstance(node, ast.ClassDef)
    return node


def fields(cls: type) -> list[tuple[str, str, str]]:
    """(name, type, meaning) of each annotated field of a contract type, in order: the type as
    the code writes it, the meaning from the string literal under the field."""
    body = _class_node(cls).body
    out = []
    for i, item in enumerate(body):
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            if "ClassVar" in ast.unparse(item.annotation):
                continue
            after = body[i + 1] if i + 1 < len(body) else None
            doc = ""
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                doc = " ".join(str(after.value.value).split())
            out.append((item.target.id, ast.unparse(item.annotation), doc))
    return out


def split_doc(doc: str) -> tuple[str, str]:
    """(the text, the example) of a docstring whose example follows ``Example::``."""
    text, _, example = inspect.cleandoc(doc).partition("Example::")
    return " ".join(text.split()), textwrap.dedent(example).strip("\n")


def hook(cls: type, name: str) -> tuple[str, str, str]:
    """(signature, text, example) of a hook of :class:`Backbone` or :class:`Strategy`."""
    node = next(
        n for n in _class_node(cls).body if isinstance(n, ast.FunctionDef) and n.name == name
    )
    args = [
        f"{a.arg}: {ast.unparse(a.annotation)}" if a.annotation else a.arg
        for a in node.args.args[1:]
    ]
    returns = ast.unparse(node.returns) if node.returns else "None"
    text, example = split_doc(ast.get_docstring(node) or "")
    return f"{name}({', '.join(args)}) -> {returns}", text, example


def examples() -> dict[str, str]:
    """Every example of the reference, by ``Type`` or ``Class.hook`` (the tests run them)."""
    from benchkit import interfaces

    out = {name: split_doc(getattr(interfaces, name).__doc__ or "")[1] for name in CONTRACT_TYPES}
    for cls, hooks in (
        (interfaces.Backbone, BACKBONE_HOOKS),
        (interfaces.Strategy, STRATEGY_HOOKS),
    ):
        for name in hooks:
            out[f"{cls.__name__}.{name}"] = hook(cls, name)[2]
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """The contract reference of ``docs/plugins.md``: every contract type's fields and example,
    then every hook's signature, what it may return (checked at each call) and example."""
    from benchkit import interfaces

    parts = []
    for name in CONTRACT_TYPES:
        cls = getattr(interfaces, name)
        text, example = split_doc(cls.__doc__ or "")
        rows = "\n".join(f"| `{f}` | `{_cell(t)}` | {_cell(doc)} |" for f, t, doc in fields(cls))
        parts.append(
            f"### `{name}`\n\n{text}\n\n| field | type | meaning |\n|---|---|---|\n{rows}\n\n"
            f"```python\n{example}\n```\n"
        )
    for kind, cls, hooks in (
        ("backbone", interfaces.Backbone, BACKBONE_HOOKS),
        ("strategy", interfaces.Strategy, STRATEGY_HOOKS),
    ):
        for name in hooks:
            signature, text, example = hook(cls, name)
            expect = RETURNS[kind].get(name)
            returns = f"\n\nReturns {expect.text} (checked at every call)." if expect else ""
            parts.append(
                f"### `{cls.__name__}.{signature}`\n\n{text}{returns}\n\n"
                f"```python\n{example}\n```\n"
            )
    return "\n".join(parts)
