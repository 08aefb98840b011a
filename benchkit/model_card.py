"""What a model package must hold, checked before anything in it is used.

A package travels (e-mailed, copied, edited by hand, produced by another version): loading it must
not trust it. Every check here fails with one line naming the file, the field and what was wrong —
the card's own checksum, its schema, each array's dtype, width and length, ids, genres, finite
weights — and dimensions are compared with the arrays and weights that carry them before a single
layer is built, so that an absurd dimension in the card is refused instead of allocated.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from benchkit.errors import DataError

FORMAT = "benchkit-model/2"  # /1: before the card was checksummed and ids kept
FILES = ("weights.pt", "preprocess.npz", "pool.npz", "uploaders.npz")
CARD = "card.json"
CARD_KEYS = (
    "format",
    "benchkit",
    "torch",
    "backbone",
    "strategies",
    "data_spec",
    "genre_names",
    "features_norm",
    "run",
    "files",
    "checksum",
)
SPEC_KEYS = ("video_dim", "music_dim", "n_genres", "n_music", "n_uploaders")
COMPONENT_KEYS = ("name", "hparams", "plugin", "distribution", "version")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _canonical(card: dict[str, Any]) -> str:
    body = {k: v for k, v in card.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def seal(card: dict[str, Any]) -> dict[str, Any]:
    """The card in its JSON form with ``checksum`` = the SHA-256 of everything else in it: the card
    is covered like the files it lists (an edited hyperparameter is refused, not silently used)."""
    plain = json.loads(_canonical(card))
    plain["checksum"] = hashlib.sha256(_canonical(plain).encode()).hexdigest()
    return dict(plain)


# -- the target of --save ------------------------------------------------------------------------


def check_target(folder: Path | str) -> Path:
    """Refuse, before any training, a ``--save`` target the package cannot be written to: a file,
    a folder that holds other things than a model package, one of the package's names taken by a
    folder, a place without write permission."""
    out = Path(folder)
    where = f"--save {out}"
    if out.exists() and not out.is_dir():
        raise DataError(f"{where}: it is a file; name a folder for the model package")
    if out.is_dir():
        names = set(os.listdir(out))
        for name in (CARD, *FILES):
            if (out / name).is_dir():
                raise DataError(
                    f"{where}: {out / name} is a folder; the package writes a file there"
                )
        if names and CARD not in names:
            raise DataError(
                f"{where}: the folder holds other files and no model package; name a new or an "
                f"empty folder"
            )
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise DataError(f"{where}: {existing} is a file, so no folder can be made under it")
    try:  # what the package's writes will do, tried with a file that is removed at once
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".benchkit-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataError(
            f"{where}: cannot write in {existing} ({exc.strerror or exc}); choose another place"
        ) from None
    return out


# -- reading ---------------------------------------------------------------------------------------


def read_card(root: Path) -> dict[str, Any]:
    """The card, its schema and checksum checked, and every listed file against its hash."""
    path = root / CARD
    if not path.is_file():
        raise DataError(f"{root} is not a benchkit model package (no {CARD})")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: not a model card (unreadable JSON)") from None
    if isinstance(card, dict) and card.get("format") == "benchkit-model/1":
        raise DataError(
            f"{path}: a benchkit-model/1 package, from an older benchkit; train and --save it again"
        )
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} card")
    _check_schema(card, path)
    if hashlib.sha256(_canonical(card).encode()).hexdigest() != card["checksum"]:
        raise DataError(f"{path}: the card does not match its checksum (altered or damaged)")
    for name in FILES:
        file = root / name
        if not file.is_file():
            raise DataError(f"model package {root}: {name} is missing")
        if sha256(file) != card["files"][name]:
            raise DataError(
                f"model package {root}: {name} does not match its card (altered or damaged)"
            )
    return card


def _check_schema(card: dict[str, Any], path: Path) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise DataError(f"{path}: {what}")

    for key in CARD_KEYS:
        need(key in card, f"missing key {key!r}")
    extra = sorted(set(card) - set(CARD_KEYS))
    need(not extra, f"unexpected key {extra[0]!r}" if extra else "")
    files = card["files"]
    need(isinstance(files, dict), "'files' must map each file to its SHA-256")
    for name in FILES:
        digest = files.get(name)
        need(
            isinstance(digest, str) and len(digest) == 64,
            f"'files' gives no SHA-256 for {name}",
        )
    need(sorted(files) == sorted(FILES), f"'files' must list exactly {', '.join(FILES)}")
    spec = card["data_spec"]
    need(
        isinstance(spec, dict) and sorted(spec) == sorted(SPEC_KEYS),
        f"'data_spec' must hold exactly {', '.join(SPEC_KEYS)}",
    )
    for key in SPEC_KEYS:
        value = spec[key]
        need(
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31,
            f"data_spec.{key} must be a non-negative integer, got {value!r}",
        )
    need(spec["video_dim"] > 0 and spec["music_dim"] > 0, "data_spec: feature widths must be > 0")
    need(isinstance(card["strategies"], list), "'strategies' must be a list")
    components = [("backbone", card["backbone"])]
    components += [(f"strategies[{i}]", s) for i, s in enumerate(card["strategies"])]
    for key, value in components:
        need(isinstance(value, dict), f"{key} must be an object")
        missing = [k for k in COMPONENT_KEYS if k not in value]
        need(not missing, f"{key} lacks {', '.join(missing)}")
        need(isinstance(value["name"], str), f"{key}.name must be a string")
        need(isinstance(value["hparams"], dict), f"{key}.hparams must be an object")
    names = card["genre_names"]
    need(
        isinstance(names, list) and all(isinstance(n, str) for n in names),
        "'genre_names' must be a list of strings",
    )


def read_arrays(root: Path, name: str) -> dict[str, np.ndarray]:
    """The arrays of one ``.npz`` of the package: plain numbers and text only, never objects."""
    path = root / name
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{path}: holds Python objects; a model package holds plain arrays only"
            ) from None
        raise DataError(f"{path}: cannot be read ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def _array(
    arrays: dict[str, np.ndarray],
    key: str,
    where: str,
    kinds: str,
    shape: tuple[int | None, ...],
) -> np.ndarray:
    """``arrays[key]`` of a dtype kind in ``kinds`` and this ``shape`` (None: any length)."""
    if key not in arrays:
        raise DataError(f"{where}: no array {key!r}")
    a = arrays[key]
    if a.dtype.kind not in kinds:
        raise DataError(f"{where}: {key!r} has dtype {a.dtype}, expected {_kind_names(kinds)}")
    ok = a.ndim == len(shape) and all(
        s is None or s == n for s, n in zip(shape, a.shape, strict=False)
    )
    if not ok:
        parts = ["n" if s is None else str(s) for s in shape]
        want = f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"
        raise DataError(f"{where}: {key!r} has shape {a.shape}, expected {want}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataError(f"{where}: {key!r} holds NaN or inf")
    return a


def _kind_names(kinds: str) -> str:
    names = {"f": "floats", "i": "integers", "u": "integers", "U": "text"}
    return " or ".join(dict.fromkeys(names[k] for k in kinds))


def check_pool(arrays: dict[str, np.ndarray], spec: dict[str, int], where: str) -> None:
    """The package's music pool: the training music, as wide as the card says, genres known."""
    features = _array(arrays, "features", where, "f", (spec["n_music"], spec["music_dim"]))
    n = features.shape[0]
    genre = _array(arrays, "genre", where, "iu", (n,))
    check_genres(genre, spec["n_genres"], f"{where}: 'genre'")
    ids = _array(arrays, "ids", where, "iuU", (n,))
    if np.unique(ids).size != n:
        raise DataError(f"{where}: 'ids' lists a music twice")


def check_genres(genre: np.ndarray, n_genres: int, what: str) -> None:
    """Genres are the model's genre ids, 0 … n_genres − 1, or −1 (unknown); a bad row is named."""
    bad = np.flatnonzero((genre < -1) | (genre >= n_genres))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{what}: row {row} has genre {int(genre[row])}, but the model knows "
            f"{n_genres} genre(s) (0 … {n_genres - 1}, or -1 for unknown)"
        )


def check_uploaders(arrays: dict[str, np.ndarray], spec: dict[str, int], where: str) -> None:
    """Each training uploader's genre history d_u and d̄, and the uploaders' ids."""
    width = max(1, spec["n_genres"])
    prior = _array(arrays, "prior", where, "f", (None, width))
    mean = _array(arrays, "mean", where, "f", (None,))
    if prior.shape[0] and mean.shape != (spec["n_genres"],):
        raise DataError(f"{where}: 'mean' has shape {mean.shape}, expected ({spec['n_genres']},)")
    if prior.shape[0] not in (0, spec["n_uploaders"]):
        raise DataError(
            f"{where}: 'prior' has {prior.shape[0]} rows, expected {spec['n_uploaders']} uploaders"
        )
    if "ids" in arrays:
        ids = _array(arrays, "ids", where, "iuU", (prior.shape[0],))
        if np.unique(ids).size != ids.size:
            raise DataError(f"{where}: 'ids' lists an uploader twice")


def check_preprocess(
    arrays: dict[str, np.ndarray], spec: dict[str, int], kind: str, where: str
) -> None:
    """The fitted feature preprocessing: its kind, and z-score statistics of the right widths."""
    stored = _array(arrays, "kind", where, "U", ())
    if str(stored) != kind:
        raise DataError(f"{where}: 'kind' is {str(stored)!r}, the card says {kind!r}")
    if kind == "zscore":
        for modality in ("video", "music"):
            width = spec[f"{modality}_dim"]
            _array(arrays, f"{modality}_mean", where, "f", (width,))
            std = _array(arrays, f"{modality}_std", where, "f", (width,))
            if (std <= 0).any():
                raise DataError(f"{where}: '{modality}_std' must be positive")


def check_weights(state: dict[str, Any], where: str) -> None:
    """Every tensor finite: a package of NaN weights would recommend noise."""
    import torch

    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{where}: entry {key!r} is not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DataError(f"{where}: tensor {key!r} holds NaN or inf")


def check_shapes(expected: dict[str, tuple[int, ...]], state: dict[str, Any], where: str) -> None:
    """The weights fit the layers the card's dimensions build (compared before building them)."""
    missing = sorted(set(expected) - set(state))
    if missing:
        raise DataError(f"{where}: no tensor {missing[0]!r}, which the card's model needs")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise DataError(f"{where}: tensor {extra[0]!r} belongs to no layer of the card's model")
    for key, shape in expected.items():
        got = tuple(state[key].shape)
        if got != shape:
            raise DataError(
                f"{where}: tensor {key!r} has shape {got}, but the card's dimensions give {shape}"
            )


def check_dims_bounded(spec: dict[str, int], state: dict[str, Any], where: str) -> None:
    """Without the model's shapes (a plugin that cannot be built on the ``meta`` device), each
    feature width must at least fit in the weights that read it: a first layer holds ≥ width
    numbers, so a larger width is a damaged card, refused before it is allocated."""
    total = sum(int(v.numel()) for v in state.values())
    for key in ("video_dim", "music_dim"):
        if total and spec[key] > total:
            raise DataError(
                f"{where}: data_spec.{key} = {spec[key]:,} is more than the {total:,} numbers "
                f"the weights hold"
            )
