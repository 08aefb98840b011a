"""Follow the plugin tutorial of docs/plugins.md literally: write its files into a new folder and
run its commands. ``python tests/tutorial.py`` runs ``pip install .`` for real (CI does this);
the test suite calls :func:`follow` with ``install_target`` to install into a throw-away folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def steps(doc: Path = DOC) -> list[tuple[str, str]]:
    """The tutorial as ("file", path + content) and ("run", command) steps, in order."""
    text = doc.read_text().split("## Tutorial", 1)[1].split("\n## ", 1)[0]
    out: list[tuple[str, str]] = []
    pending_file = None
    for block in re.finditer(r"(File `([^`]+)`[^\n]*\n\n)?```(\w+)\n(.*?)```", text, re.S):
        name, lang, body = block.group(2), block.group(3), block.group(4)
        if lang == "console":
            out += [("run", line[2:]) for line in body.splitlines() if line.startswith("$ ")]
        elif name or pending_file:
            out.append(("file", f"{name}\n{body}"))
    return out


def follow(root: Path, install_target: Path | None = None) -> list[str]:
    """Carry out the tutorial under ``root``; return each command's output."""
    cwd = root
    env = dict(os.environ)
    if install_target is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(install_target), env.get("PYTHONPATH", "")])
    outputs = []
    for kind, payload in steps():
        if kind == "file":
            name, body = payload.split("\n", 1)
            (cwd / name).write_text(body)
            continue
        if payload.startswith("mkdir ") and " && cd " in payload:
            folder = payload.split(" && cd ")[1].strip()
            cwd = root / folder
            cwd.mkdir(parents=True)
            continue
        cmd = payload.split()
        if cmd[:2] == ["pip", "install"]:
            cmd = [sys.executable, "-m", "pip", "install", "-q", *cmd[2:]]
            if install_target is not None:
                cmd[5:5] = ["--no-deps", "--no-build-isolation", "--target", str(install_target)]
        elif cmd[0] == "benchkit":
            cmd = [sys.executable, "-m", "benchkit.cli", *cmd[1:]]
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"tutorial step {payload!r} failed:\n{done.stdout}\n{done.stderr}")
        outputs.append(done.stdout)
    test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if test.returncode != 0:
        raise RuntimeError(f"the tutorial's test failed:\n{test.stdout}\n{test.stderr}")
    outputs.append(test.stdout)
    return outputs


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for out in follow(Path(tmp)):
            print(out)
    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "-q", "-y", "my-benchkit-plugin"], check=False
    )
    print("the plugin tutorial works as written")
