"""A training that is provably the same as an earlier one is not run again: its result is reused.

Two trainings are the same when everything the loop reads is the same: the model's class, code
and hyperparameters, its weights and the random state as training starts, the training pairs,
the validation rows and protocol, the seed of the batch order, the patience, the precision, the
device and the number of threads (a matrix product's rounding depends on them). The key hashes all
of it, so a match is bitwise the same training, not a similar one. Where it pays: DecRS's plain
model is the grid's plain run of the same backbone, trained in the same recipe.

Only plain methods (a backbone alone, or with ``none``) are shared: a strategy may hold state that its
weights do not show. The trained weights, the random state after training and the
:class:`~benchkit.train.FitResult` are kept under ``<cache>/trained``; ``BENCHKIT_SHARE=0`` turns
sharing off (to measure what it saves).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchkit.errors import DataError
from benchkit.files import atomic_file, write_text
from benchkit.hashing import stable_hash
from benchkit.method import Method, NoDebias

ENV = "BENCHKIT_SHARE"


def enabled() -> bool:
    """Whether identical trainings are shared (``BENCHKIT_SHARE=0`` turns it off)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def _package_code() -> str:
    """A hash of benchkit's own source: a cached training never outlives a change of the loop."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _module_code(obj: Any) -> str:
    try:
        return hashlib.sha256(Path(inspect.getfile(type(obj))).read_bytes()).hexdigest()
    except (OSError, TypeError):
        return type(obj).__qualname__  # no source to read: the class's name, at least


def _tensors(h: Any, tensors: dict[str, torch.Tensor]) -> None:
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _pairs(pairs: Any) -> dict[str, torch.Tensor]:
    parts = getattr(pairs, "parts", None) or [pairs]
    out = {}
    for i, p in enumerate(parts):
        out[f"{i}.video_row"], out[f"{i}.music_row"] = p.video_row, p.music_row
        out[f"{i}.offsets"] = torch.tensor([p.video_offset, p.music_offset])
        out[f"{i}.dtype"] = torch.zeros(0, dtype=p.video_features.dtype)
    return out


def training_key(
    method: Method, dataset: Any, protocol: Any, pairs: Any, recipe: dict[str, Any]
) -> str | None:
    """The hash that two identical trainings share, or ``None`` for a method that is not shared.
    ``recipe``: the trainer's seed, patience, precision and device."""
    if not enabled() or any(not isinstance(s, NoDebias) for s in method.strategy_list):
        return None
    bb = method.backbone
    h = hashlib.sha256()
    header = {
        "code": _package_code(),
        "backbone": [type(bb).__module__, type(bb).__qualname__, _module_code(bb)],
        "hparams": bb.hparams,
        "data": dataset.fingerprint,
        "val": dataset.eval_fingerprint("val"),
        "protocol": protocol.fingerprint(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **recipe,
    }
    h.update(stable_hash(header).encode())
    _tensors(h, method.state_dict())
    _tensors(h, {"rng": torch.get_rng_state()})
    if torch.device(recipe["device"]).type == "cuda":
        _tensors(h, {f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    _tensors(h, _pairs(pairs))
    return h.hexdigest()[:24]


def load_training(folder: Path, key: str, method: Method, log: Any) -> dict[str, Any] | None:
    """The stored result of training ``key`` (its weights loaded into ``method`` and the random
    state set to where that training left it), or ``None``."""
    weights, record = folder / f"{key}.pt", folder / f"{key}.json"
    if not (weights.exists() and record.exists()):
        return None
    try:
        result = json.loads(record.read_text())
        saved = torch.load(weights, map_location="cpu", weights_only=True)
        method.load_state_dict(saved["state"])
        rng = saved["rng"]
    except Exception as exc:
        log(f"the stored training {weights} is damaged ({type(exc).__name__}); training anew")
        return None
    torch.set_rng_state(rng)
    if "cuda_rng" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return dict(result)


def save_training(folder: Path, key: str, method: Method, result: Any, log: Any) -> None:
    """The trained weights, the random state now, and ``result`` (a FitResult); an unwritable
    cache is said once and costs only the sharing."""
    saved = {
        "state": {k: v.detach().cpu() for k, v in method.state_dict().items()},
        "rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and any(p.is_cuda for p in method.parameters()):
        saved["cuda_rng"] = torch.cuda.get_rng_state_all()
    try:
        with atomic_file(folder / f"{key}.pt") as tmp:
            torch.save(saved, tmp)
        write_text(folder / f"{key}.json", json.dumps(asdict(result)))
    except DataError as exc:
        log(
            f"{exc}; identical trainings will not be shared (set BENCHKIT_CACHE to a writable folder)"
        )
