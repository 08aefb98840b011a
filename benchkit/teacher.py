"""The PGC teacher of the distillation strategies: trained once per (PGC data, recipe, seed).

A teacher is a backbone (CMVAE by default, found by name through the plugins) trained on the PGC
pairs with the run's own recipe, validated on the PGC validation pairs (Recall@25 over the PGC music
pool), frozen, and cached on disk — a table trains it once. Its validation figure is logged.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchkit.data.dataset import Dataset
from benchkit.errors import ConfigError, DataError
from benchkit.hashing import stable_hash
from benchkit.interfaces import RunContext
from benchkit.method import Method
from benchkit.pairs import pgc_pairs

_MEMO: dict[str, Method] = {}


def pgc_dataset(ds: Dataset) -> Dataset:
    """The PGC pairs as a dataset of their own (one row per pair), to validate a teacher on."""
    if ds.pgc is None:
        raise DataError(f"{ds.name}: no PGC data")
    pgc = ds.pgc
    val = pgc.splits["val"]
    return Dataset(
        name=f"{ds.name}/pgc",
        video_features=pgc.video_features[pgc.pairs[:, 0]],
        music_features=pgc.music_features,
        video_music=pgc.pairs[:, 1],
        splits={"train": pgc.splits["train"], "val": val, "test": val},
        music_genre=pgc.music_genre,
        genre_names=ds.genre_names,
        content_id=pgc.fingerprint,
    )


def teacher_key(
    ds: Dataset, backbone: str, hparams: dict[str, Any], seed: int, precision: str = "fp32"
) -> str:
    assert ds.pgc is not None
    return stable_hash(
        {
            "pgc": ds.pgc.fingerprint,
            "backbone": backbone,
            "hparams": hparams,
            "seed": seed,
            "precision": precision,
        }
    )[:20]


def train_teacher(
    ctx: RunContext, ds: Dataset, backbone: str = "cmvae", **overrides: Any
) -> Method:
    """A frozen teacher for ``ds``'s PGC pairs (from the in-process memo, the disk cache, or
    trained now). ``overrides`` set the teacher's hyperparameters (the card: CMVAE, lr 1e-4)."""
    cls = ctx.plugins.backbones.get(backbone)
    probe = cls(**overrides)
    precision = getattr(ctx.trainer, "precision", "fp32")
    key = teacher_key(ds, backbone, probe.hparams, ctx.seed, precision)
    if key in _MEMO:
        return _MEMO[key].to(ctx.device)
    pgc_ds = pgc_dataset(ds)
    torch.manual_seed(ctx.seed)
    probe.build(pgc_ds.spec())
    teacher = Method(probe).to(ctx.device)
    folder = Path(ctx.cache_dir) / "teachers"
    weights, record = folder / f"{key}.pt", folder / f"{key}.json"
    if weights.exists() and record.exists():
        teacher.load_state_dict(torch.load(weights, map_location=ctx.device, weights_only=True))
        info = json.loads(record.read_text())
        ctx.log(f"PGC teacher {backbone} loaded from cache (val recall@25 {info['val']:.4f})")
    else:
        ctx.log(f"training the PGC teacher ({backbone}) on {len(pgc_ds.splits['train'])} pairs")
        with torch.random.fork_rng(devices=[] if ctx.device.type == "cpu" else None):
            result = _fit_teacher(ctx, teacher, pgc_ds, ds, backbone)
        ctx.log(
            f"PGC teacher trained: val recall@25 {result.best_score:.4f} "
            f"(epoch {result.best_epoch})"
        )
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save({k: v.cpu() for k, v in teacher.state_dict().items()}, f)
        os.replace(tmp, weights)
        record.write_text(
            json.dumps(
                {
                    "val": result.best_score,
                    "epoch": result.best_epoch,
                    "backbone": backbone,
                    "hparams": probe.hparams,
                }
            )
        )
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    _MEMO[key] = teacher
    while len(_MEMO) > 4:
        _MEMO.pop(next(iter(_MEMO)))
    return teacher


def _fit_teacher(
    ctx: RunContext, teacher: Method, pgc_ds: Dataset, ds: Dataset, backbone: str
) -> Any:
    assert ds.pgc is not None
    torch.manual_seed(ctx.seed)
    if ctx.trainer is None:
        raise ConfigError("a PGC teacher needs the run's trainer (RunContext.trainer)")
    return ctx.trainer.fit(
        teacher,
        pgc_ds,
        protocol="full",
        pairs=pgc_pairs(ds.pgc, "train", ctx.device),
        desc=f"teacher {backbone}",
    )


def teacher_scores(teacher: Method, video: torch.Tensor, music: torch.Tensor) -> torch.Tensor:
    """(B, B) teacher scores of a batch's videos against its music."""
    with torch.no_grad():
        return teacher.backbone.score(teacher.video_codes(video), teacher.music_codes(music))
