"""A training that is provably the same as an earlier one is not run again: its result is reused.

Two trainings are the same when everything the loop reads is the same: the model's class, code
and hyperparameters, its weights and the random state as training starts, the training pairs,
the validation rows and protocol, the seed of the batch order, the patience, the precision, the
device and the number of threads (a matrix product's rounding depends on them). The key hashes all
of it, so a match is bitwise the same training, not a similar one. Where it pays: DecRS's plain
model is the grid's plain run of the same backbone, trained in the same recipe.

Only plain trained methods (a backbone alone, or with ``none``) are shared: a strategy, or a
closed-form fit (the oracle keeps the world's truth outside its weights), may hold state that the
weights do not show; so is a backbone whose source cannot be read. The trained weights, the random
state after training and the :class:`~benchkit.train.FitResult` are kept in one file per key under
``<cache>/trained``; ``BENCHKIT_SHARE=0`` turns sharing off (to measure what it saves).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchkit.errors import DataError
from benchkit.files import atomic_file
from benchkit.hashing import stable_hash
from benchkit.method import Method, NoDebias
from benchkit.options import machine, sharing


@functools.cache
def code_fingerprint() -> str:
    """A hash of benchkit's own source: a cached training never outlives a change of the loop."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _class_code(obj: Any) -> str | None:
    """A hash of the source files of ``obj``'s class and its bases outside benchkit (mixins in
    other plugin files included), or ``None`` when one cannot be read (a notebook's class)."""
    h = hashlib.sha256()
    for cls in type(obj).__mro__:
        if cls.__module__.startswith(("benchkit.", "torch", "builtins", "abc")):
            continue
        try:
            h.update(Path(inspect.getfile(cls)).read_bytes())
        except (OSError, TypeError):
            return None
    return h.hexdigest()


def _tensors(h: Any, tensors: dict[str, torch.Tensor]) -> None:
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _pairs(pairs: Any) -> dict[str, torch.Tensor]:
    """What a batch reads of the pairs, but the features (the dataset's fingerprint has those)."""
    parts = getattr(pairs, "parts", None) or [pairs]
    out = {}
    for i, p in enumerate(parts):
        for name in ("video_row", "music_row", "uploader", "genre", "prior", "propensity"):
            if getattr(p, name, None) is not None:
                out[f"{i}.{name}"] = getattr(p, name)
        out[f"{i}.offsets"] = torch.tensor([p.video_offset, p.music_offset])
        out[f"{i}.features"] = torch.tensor(
            [*p.video_features.shape, *p.music_features.shape, p.video_features.element_size()]
        )
        source = getattr(p, "dataset", None)
        out[f"{i}.source"] = torch.frombuffer(
            bytearray(str(getattr(source, "fingerprint", "")).encode() or b"-"), dtype=torch.uint8
        )
    return out


def training_key(
    method: Method, dataset: Any, protocol: Any, pairs: Any, recipe: dict[str, Any]
) -> str | None:
    """The hash that two identical trainings share, or ``None`` for a method that is not shared.
    ``recipe``: the trainer's seed, patience, precision and device."""
    if not sharing() or any(type(s) is not NoDebias for s in method.strategy_list):
        return None
    bb = method.backbone
    source = _class_code(bb)
    if bb.closed_form or source is None:
        return None
    h = hashlib.sha256()
    header = {
        "code": code_fingerprint(),
        "backbone": [type(bb).__module__, type(bb).__qualname__, source],
        "machine": machine(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
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
    _tensors(h, _random_state(torch.device(recipe["device"])))
    _tensors(h, _pairs(pairs))
    return h.hexdigest()[:24]


def _random_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The generators a training draws from: the CPU's, and its own GPU's where it runs on one."""
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_random_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def load_training(
    folder: Path, key: str, method: Method, device: torch.device, log: Any
) -> dict[str, Any] | None:
    """The stored result of training ``key`` (its weights loaded into ``method`` and the random
    state set to where that training left it), or ``None``. A damaged file is said and ignored,
    and leaves ``method`` and the random state as they were."""
    path = folder / f"{key}.pt"
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        result = json.loads(saved["result"])
        state, mine = saved["state"], method.state_dict()
        if set(state) != set(mine) or any(state[k].shape != mine[k].shape for k in mine):
            raise ValueError("its weights are not this model's")
        if "cpu" not in saved["rng"] or (device.type == "cuda" and "cuda" not in saved["rng"]):
            raise ValueError("no random state")
        int(result["epochs_run"]), list(result["history"])
    except Exception as exc:
        log(f"the stored training {path} is damaged ({type(exc).__name__}); training anew")
        return None
    method.load_state_dict(state)
    _set_random_state(saved["rng"], device)
    return dict(result)


def save_training(
    folder: Path, key: str, method: Method, result: Any, device: torch.device, log: Any
) -> None:
    """The trained weights, the random state now and ``result`` (a FitResult), in one file
    written atomically: a reader finds them whole and from one training, or finds none. An
    unwritable cache costs only the sharing."""
    saved = {
        "state": {k: v.detach().cpu() for k, v in method.state_dict().items()},
        "rng": _random_state(device),
        "result": json.dumps(asdict(result)),
    }
    try:
        with atomic_file(folder / f"{key}.pt") as tmp:
            torch.save(saved, tmp)
    except DataError as exc:
        log(
            f"{exc}; identical trainings will not be shared (set BENCHKIT_CACHE to a writable folder)"
        )
