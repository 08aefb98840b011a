"""The plugin author's reference, read from the code (``docs/plugins.md``).

Every contract type's fields (from the annotations and the string under each field in
:mod:`benchkit.interfaces`), each hook's signature and example (from its docstring) and what it
may return (:data:`benchkit.contracts.returns.RETURNS`, the table checked at every call). A test
keeps the document equal to :func:`reference_markdown` and runs every example.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

from benchkit import interfaces
from benchkit.contracts.returns import (
    BACKBONE_HOOKS,
    CONTRACT_TYPES,
    RETURNS,
    STRATEGY_HOOKS,
)

__all__ = ["CONTRACT_TYPES", "examples", "fields", "hook", "reference_markdown", "split_doc"]


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
