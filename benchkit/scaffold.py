"""``benchkit init plugin NAME``: a new plugin package, with its tests, from the example plugin.

The example plugin (``plugins/example`` in the repository; ``benchkit_plugins/example`` in a
wheel) is the one template: this copies it and renames what must be the new plugin's own — the
distribution, the import package, the entry point, the backbone (``NAME``) and the strategy
(``NAME_penalty``) — so that it installs beside the example, or a second one, without a clash.
The package also gets the contract reference (``CONTRACT.md``), generated from the code like the
one in the documentation.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from benchkit.errors import ConfigError
from benchkit.files import write_text

TEMPLATE = "example"
SKIP = ("__pycache__", ".egg-info", "build", "dist", ".pytest_cache")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def renames(name: str) -> list[tuple[str, str]]:
    """(text in the example, text in the new plugin), applied in order to every file."""
    package = f"benchkit_{name}"
    return [
        ("benchkit_example", package),
        ("benchkit-example", f"benchkit-{name.replace('_', '-')}"),
        ("popularity_penalty", f"{name}_penalty"),
        ("infonce", name),
        ('\nexample = "', f'\n{name} = "'),  # the entry point
        ('== "example"', f'== "{name}"'),  # the test that finds it through the entry point
        ('lists "example"', f'lists "{name}"'),  # the README
    ]


def _files(root: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for item in sorted(root.iterdir(), key=lambda p: p.name):
        if any(item.name.endswith(s) or item.name == s for s in SKIP):
            continue
        rel = f"{prefix}{item.name}"
        out += _files(item, rel + "/") if item.is_dir() else [(rel, item)]
    return out


def write_plugin(
    name: str, out: Path | str, taken: frozenset[str] | set[str] = frozenset()
) -> Path:
    """Write the plugin package ``name`` to the new folder ``out``; ``taken``: names other plugins
    already registered (a new plugin must not clash with them)."""
    if not NAME.match(name):
        raise ConfigError(
            f"plugin name {name!r}: use lower-case letters, digits and '_', starting with a letter "
            f"(it names the backbone, the package benchkit_{name} and the entry point)"
        )
    clash = sorted({name, f"{name}_penalty", name.replace("_", "-")} & set(taken))
    if clash:
        raise ConfigError(f"plugin name {name!r}: {clash[0]!r} is taken; choose another name")
    target = Path(out)
    if target.exists():
        raise ConfigError(f"{target} exists; name a new folder (--out)")
    source = resources.files("benchkit_plugins").joinpath(TEMPLATE)
    files = _files(source)
    if not files:
        raise ConfigError("the plugin template is missing from this installation of benchkit")
    found = dict.fromkeys((old for old, _ in renames(name)), 0)
    for rel, item in files:
        text = item.read_text(encoding="utf-8")
        for old, new in renames(name):
            found[old] += text.count(old)
            text = text.replace(old, new)
        path = rel.replace("benchkit_example", f"benchkit_{name}")
        if path == "tests/test_example.py":
            path = f"tests/test_{name}.py"
        write_text(target / path, text)
    missing = [old for old, n in found.items() if n == 0]
    if missing:  # the example changed under the template: a bug in benchkit, not the user's
        raise RuntimeError(f"the plugin template no longer contains {missing}")
    from benchkit.contract import reference_markdown

    write_text(
        target / "CONTRACT.md",
        "# The benchkit plugin contract\n\nWhat every hook receives and may return, generated "
        "from the benchkit that wrote this package.\n\n" + reference_markdown(),
    )
    return target
