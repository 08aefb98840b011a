"""The PGC teacher of the distillation strategies: trained once per (PGC data, recipe, seed).

A teacher is a backbone (CMVAE by default, found by name through the plugins) trained on the PGC
pairs with *its own* recipe — a budget in optimiser steps with its own batch size and learning
rate, validated every ``steps / evals`` steps on the PGC validation pairs (Recall@25 over the PGC
music pool), the best state kept — so that it converges whatever the student's epochs and batch
size. It is frozen and cached on disk by the PGC data, the recipe, the seed and the precision: a
table trains it once. :func:`teacher_report` evaluates it on the run's own test split, so a run
reports the teacher beside the student.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchkit.data.dataset import Dataset
from benchkit.errors import ConfigError, DataError, UnknownNameError
from benchkit.evaluate import FullProtocol, evaluate
from benchkit.files import atomic_file, write_text
from benchkit.hashing import stable_hash
from benchkit.interfaces import AT_LEAST_ONE, AT_LEAST_TWO, POSITIVE, Latent, Param, RunContext
from benchkit.method import Method
from benchkit.options import resolve_precision
from benchkit.pairs import pgc_pairs
from benchkit.reuse import code_fingerprint
from benchkit.spec import RunSpec
from benchkit.train import fit

_MEMO: dict[str, tuple[Method, dict[str, Any]]] = {}
_EVAL_MEMO: dict[str, dict[str, float]] = {}  # the files below, as read or written


@dataclass(frozen=True)
class TeacherRecipe:
    """How a teacher is trained: the backbone, its overrides, and a budget in optimiser steps."""

    backbone: str = "cmvae"
    lr: float = 1e-4
    steps: int = 4000
    batch_size: int = 256
    evals: int = 40
    patience: int = 10
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.evals < 1 or self.patience < 1:
            raise ConfigError(
                "teacher recipe: steps and evals must be at least 1, batch_size at least 2, "
                "patience at least 1"
            )
        if not self.lr > 0:
            raise ConfigError(f"teacher recipe: lr must be positive, got {self.lr}")


#: The ``teacher*`` hyperparameters of a strategy that distils from a PGC teacher.
TEACHER_PARAMS = {
    "teacher": Param("cmvae"),
    "teacher_lr": Param(1e-4, POSITIVE),
    "teacher_steps": Param(4000, AT_LEAST_ONE),
    "teacher_batch_size": Param(256, AT_LEAST_TWO),
}


def recipe_from(hparams: dict[str, Any], **overrides: Any) -> TeacherRecipe:
    """A strategy's ``teacher*`` hyperparameters (:data:`TEACHER_PARAMS`) as a recipe; the
    ``overrides`` set the teacher backbone's own hyperparameters (its latent size, say)."""
    return TeacherRecipe(
        backbone=hparams["teacher"],
        lr=hparams["teacher_lr"],
        steps=hparams["teacher_steps"],
        batch_size=hparams["teacher_batch_size"],
        overrides=overrides,
    )


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
    ds: Dataset, recipe: TeacherRecipe, hparams: dict[str, Any], seed: int, precision: str
) -> str:
    assert ds.pgc is not None
    return stable_hash(
        {
            "pgc": ds.pgc.fingerprint,
            "recipe": asdict(recipe),
            "hparams": hparams,
            "seed": seed,
            "precision": precision,
        }
    )[:20]


def train_teacher(ctx: RunContext, ds: Dataset, recipe: TeacherRecipe) -> Method:
    """A frozen teacher for ``ds``'s PGC pairs, from the in-process memo, the disk cache, or
    trained now (in a forked random state, so the student's run never depends on the cache)."""
    return _teacher(ctx, ds, recipe)[0]


def _teacher(
    ctx: RunContext, ds: Dataset, recipe: TeacherRecipe
) -> tuple[Method, dict[str, Any], str]:
    try:
        cls = ctx.plugins.backbones.get(recipe.backbone)
    except UnknownNameError as exc:
        raise ConfigError(
            f"the PGC teacher's backbone is not available: {exc}; name another with "
            f"<strategy>.teacher=NAME"
        ) from None
    probe = cls(**{**recipe.overrides, "lr": recipe.lr})
    if probe.closed_form:
        raise ConfigError(f"the PGC teacher must be trained; {recipe.backbone!r} is closed-form")
    precision = (
        ctx.trainer.precision
        if ctx.trainer is not None
        else resolve_precision(RunSpec().precision, ctx.device)
    )
    key = teacher_key(ds, recipe, probe.hparams, ctx.seed, precision)
    if key in _MEMO:
        memo, memo_info = _MEMO[key]
        return memo.to(ctx.device), memo_info, key
    pgc_ds = pgc_dataset(ds)
    assert ds.pgc is not None  # pgc_dataset refused data without it
    pgc = ds.pgc
    torch.manual_seed(ctx.seed)
    teacher = Method.assemble(probe, (), pgc_ds.spec(), ctx.device)
    folder = Path(ctx.cache_dir) / "teachers"
    weights, record = folder / f"{key}.pt", folder / f"{key}.json"
    cached = _load(teacher, weights, record, ctx)
    if cached is not None:
        info = cached
        ctx.log(
            f"PGC teacher {recipe.backbone} loaded from cache (PGC val recall@25 "
            f"{info['pgc_val_recall@25']:.4f})"
        )
    else:
        n = len(pgc_ds.splits["train"])
        ctx.log(
            f"training the PGC teacher ({recipe.backbone}, lr {recipe.lr:g}, {recipe.steps} steps "
            f"of {recipe.batch_size}) on {n} pairs"
        )
        with torch.random.fork_rng(devices=[] if ctx.device.type == "cpu" else None):
            torch.manual_seed(ctx.seed)
            metrics = ctx.plugins.metrics
            protocol = FullProtocol()

            def validate(m: Method) -> float:
                ev = evaluate(m, pgc_ds, protocol, metrics, "val", ctx.device)
                return ev.metrics[protocol.selection_metric]

            result = fit(
                teacher,
                pgc_pairs(pgc, "train", ctx.device),
                epochs=recipe.evals,
                batch_size=recipe.batch_size,
                steps_per_epoch=max(1, recipe.steps // recipe.evals),
                seed=ctx.seed,
                validate=validate,
                patience=recipe.patience,
                precision=precision,
                desc=f"teacher {recipe.backbone}",
                progress=getattr(ctx.trainer, "progress", False),
            )
        step = max(1, recipe.steps // recipe.evals)
        info = {
            "pgc_val_recall@25": result.best_score,
            "best_step": result.best_epoch * step,
            "steps_run": result.epochs_run * step,
            "recipe": asdict(recipe),
        }
        ctx.log(
            f"PGC teacher trained: PGC val recall@25 {result.best_score:.4f} "
            f"(best at step {info['best_step']} of {info['steps_run']})"
        )
        try:
            _save(teacher, info, weights, record)
        except DataError as exc:  # an unwritable cache: the teacher still serves this run
            ctx.log(f"{exc}; set BENCHKIT_CACHE to a writable folder to keep teachers")
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    _MEMO[key] = (teacher, info)
    while len(_MEMO) > 4:
        _MEMO.pop(next(iter(_MEMO)))
    return teacher, info, key


def _load(teacher: Method, weights: Path, record: Path, ctx: RunContext) -> dict[str, Any] | None:
    """The cached teacher's record (its weights loaded into ``teacher``), or ``None`` when there
    is none — or it is damaged, which is said once and then rebuilt."""
    if not (weights.exists() and record.exists()):
        return None
    try:
        info = json.loads(record.read_text())
        float(info["pgc_val_recall@25"])
        state = torch.load(weights, map_location=ctx.device, weights_only=True)
        teacher.load_state_dict(state)
    except Exception as exc:
        ctx.log(f"the cached teacher {weights} is damaged ({type(exc).__name__}); rebuilding it")
        return None
    return dict(info)


def _save(teacher: Method, info: dict[str, Any], weights: Path, record: Path) -> None:
    """Both files atomically, the record last: a reader finds both whole, or none."""
    with atomic_file(weights) as tmp:
        torch.save({k: v.cpu() for k, v in teacher.state_dict().items()}, tmp)
    write_text(record, json.dumps(info))


def teacher_report(ctx: RunContext, ds: Dataset, recipe: TeacherRecipe) -> dict[str, Any]:
    """The teacher's PGC validation score, and its metrics on the run's own evaluation split
    (with the oracle metrics where the data has truth): the teacher beside the student. The
    evaluation is made once per teacher, evaluation rows, protocol and threads, and kept beside
    the teacher: every student of a world and test set reads the same numbers."""
    teacher, info, key = _teacher(ctx, ds, recipe)
    out = {k: v for k, v in info.items() if k != "recipe"}
    if ctx.protocol is not None:
        eval_key = stable_hash(
            {
                "teacher": key,
                "code": code_fingerprint(),  # a fixed metric or evaluation is evaluated anew
                "metrics": sorted(ctx.plugins.metrics.names()),
                "rows": ds.eval_fingerprint(ctx.split),
                "protocol": ctx.protocol.fingerprint(),
                "device": ctx.device.type,
                "threads": torch.get_num_threads(),
            }
        )[:20]
        path = Path(ctx.cache_dir) / "teachers" / f"{key}.eval-{eval_key}.json"
        scores = _EVAL_MEMO.get(str(path)) or _read_eval(path)
        if scores is None:
            ev = evaluate(
                teacher, ds, ctx.protocol, ctx.plugins.metrics, ctx.split, ctx.device, True
            )
            keys = ("recall@25", "ndcg@25", "cf_recall@25", "true_ndcg@25", "bias_amp@25")
            scores = {k: ev.metrics[k] for k in keys if k in ev.metrics}
            with contextlib.suppress(DataError):  # an unwritable cache: evaluated again next time
                write_text(path, json.dumps(scores))
        _EVAL_MEMO[str(path)] = scores
        out[ctx.split] = dict(scores)
    return out


def _read_eval(path: Path) -> dict[str, float] | None:
    try:
        scores = json.loads(path.read_text())
        return {str(k): float(v) for k, v in scores.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return None


class FrozenEncodings:
    """A frozen teacher's encoder outputs (μ, log σ²) for every video and music of a dataset,
    computed once, in the run's precision, before the student trains.

    A held teacher is in eval mode and never trained, so its encoding of a video is a function of
    the video's features: encoding each batch again, every epoch, was about a tenth of a DebCM or
    label-distillation step (a 2,048-wide batch norm, a cast and a product per step). The teacher
    has no strategies, so its codes are its encoders' means. A batch whose ids fall outside
    the dataset (the PGC rows of pooled pairs) is encoded as before. The values are the per-batch
    ones within the rounding of a product taken over another number of rows. The one pass that
    fills the table (about one epoch's teacher work) is not in the run's FLOP count."""

    def __init__(
        self, teacher: Method, dataset: Dataset, device: torch.device, precision: str
    ) -> None:
        self.teacher = teacher
        bb = teacher.backbone
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            self.video = _encode_all(bb.encode_video, dataset.video_features, device)
            self.music = _encode_all(bb.encode_music, dataset.music_features, device)

    @classmethod
    def for_run(cls, teacher: Method, dataset: Dataset, ctx: RunContext) -> FrozenEncodings:
        """The table in the precision the run trains in (fp32 where no trainer is set)."""
        precision = ctx.trainer.precision if ctx.trainer is not None else "fp32"
        return cls(teacher, dataset, ctx.device, precision)

    def video_of(self, idx: torch.Tensor, features: torch.Tensor) -> Latent:
        return _rows_or_encode(self.video, idx, features, self.teacher.backbone.encode_video)

    def music_of(self, idx: torch.Tensor, features: torch.Tensor) -> Latent:
        return _rows_or_encode(self.music, idx, features, self.teacher.backbone.encode_music)

    @torch.no_grad()
    def scores(
        self,
        video_idx: torch.Tensor,
        video: torch.Tensor,
        music_idx: torch.Tensor,
        music: torch.Tensor,
    ) -> torch.Tensor:
        """(B, B') teacher scores of videos against music (its backbone's ``score`` of the means)."""
        v, m = self.video_of(video_idx, video).mu, self.music_of(music_idx, music).mu
        return self.teacher.backbone.score(v, m)


@torch.no_grad()
def _encode_all(encode: Any, features: Any, device: torch.device, rows: int = 4096) -> Latent:
    parts = [
        encode(torch.as_tensor(features[s : s + rows], device=device).float())
        for s in range(0, len(features), rows)
    ]
    mu = torch.cat([p.mu for p in parts])
    logvar = None if parts[0].logvar is None else torch.cat([p.logvar for p in parts])
    return Latent(mu=mu, logvar=logvar)


@torch.no_grad()
def _rows_or_encode(
    table: Latent, idx: torch.Tensor, features: torch.Tensor, encode: Any
) -> Latent:
    n = table.mu.shape[0]
    if idx.numel() and int(idx.min()) >= 0 and int(idx.max()) < n:
        return Latent(mu=table.mu[idx], logvar=None if table.logvar is None else table.logvar[idx])
    return encode(features)
