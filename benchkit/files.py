"""Writing files so that nothing is ever half-written: a temporary file beside the target, renamed
onto it only once it is complete (a rename is atomic on one file system)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchkit.errors import DataError


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """A temporary path to write to; it replaces ``path`` when the block ends without an error
    and is removed otherwise. The folder is created if missing; an unwritable place is one clear
    :class:`DataError`."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise DataError(f"cannot write {target} ({exc.strerror or exc})") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # what a plain open() would have given it
        os.replace(tmp, target)
    except OSError as exc:  # a full disk, a file too large: the old file is left as it was
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"cannot write {target} ({exc.strerror or exc}); it is unchanged") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_root() -> Path:
    """Where benchkit keeps worlds, teachers and the plugin catalogue: ``$BENCHKIT_CACHE`` or
    ``~/.cache/benchkit``."""
    root = os.environ.get("BENCHKIT_CACHE") or os.path.join(Path.home(), ".cache", "benchkit")
    return Path(root)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path | str, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
