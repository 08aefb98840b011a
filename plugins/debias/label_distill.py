"""Label-based distillation — KDCRec's refine label (Liu et al., SIGIR 2020). docs/methods.md.

A teacher trained on the PGC pairs (uniform, professionally matched data) and then frozen refines
the labels of every training cell — the positive and the in-batch negatives: y' = y + c·t̂, with
t̂ the teacher's score min-max normalised in the batch and c = 1 (y = 1 for the pair's own music and
for other copies of it, 0 otherwise). The student learns them through a pointwise linear head
κ·s + b on its *deterministic* scores (the posterior means, strategies' score terms included) with
a squared error (κ, b learned). ``bridge=True`` adds KDCRec's bridge strategy: B random
(video, music) pairs per step and λ₂ (s_student − s_teacher)² (λ₂ = 0.1), each side scored with its
own backbone's ``score`` (a dot product for CMVAE, a cosine for DSCMR).

This is how the paper gives the PGC to every debias baseline in the D_s ∪ D_t setting ("imputed
labels combined with the original labels through a weighting parameter"). The teacher has its own
recipe (``teacher_*``; :mod:`benchkit.teacher`) and is reported beside the student.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.data.dataset import Dataset
from benchkit.device import as_tensor
from benchkit.teacher import (
    TEACHER_PARAMS,
    FrozenEncodings,
    recipe_from,
    teacher_report,
    train_teacher,
)


def refined_labels(same_music: torch.Tensor, teacher: torch.Tensor, c: float) -> torch.Tensor:
    """y + c·t̂ for a batch: y the (B, B) same-music indicator, t̂ the teacher's scores min-max
    normalised over the batch."""
    t_hat = (teacher - teacher.min()) / (teacher.max() - teacher.min()).clamp_min(1e-12)
    return same_music.to(teacher.dtype) + c * t_hat


class LabelDistill(bk.Strategy):
    name = "label_distill"
    description = "label distillation (KDCRec refine label): teacher-refined soft labels from PGC"
    requires = frozenset({"pgc"})
    params = {
        "c": bk.Param(1.0, bk.NON_NEGATIVE, bk.Space.log(0.1, 10.0)),
        "weight": bk.Param(1.0, bk.NON_NEGATIVE, bk.Space.log(0.01, 10.0)),
        "bridge": bk.Param(False),
        "bridge_weight": bk.Param(0.1, bk.NON_NEGATIVE),
        "teacher_latent_dim": bk.Param(128, bk.AT_LEAST_ONE),
        **TEACHER_PARAMS,
    }

    def __init__(self, **hparams: Any) -> None:
        super().__init__(**hparams)
        self._report: dict[str, Any] = {}
        self._encodings: FrozenEncodings | None = None

    def check_backbone(self, backbone: bk.Backbone) -> str | None:
        if backbone.closed_form:
            return f"strategy {self.name!r} adds a training loss; {backbone.name!r} has none"
        return None

    def build(self, spec: bk.DataSpec, backbone: bk.Backbone) -> None:
        self.head_scale = nn.Parameter(torch.tensor(1.0))
        self.head_bias = nn.Parameter(torch.tensor(0.0))
        self.hold("student", backbone, freeze=False)  # the bridge scores with it

    def prepare(self, dataset: Dataset, ctx: bk.RunContext) -> None:
        recipe = recipe_from(self.hparams, latent_dim=self.hparams["teacher_latent_dim"])
        teacher = train_teacher(ctx, dataset, recipe)
        self.hold("teacher", teacher)  # frozen, cached apart
        self._encodings = FrozenEncodings.for_run(teacher, dataset, ctx)
        self._report = {"teacher": teacher_report(ctx, dataset, recipe)}
        if self.hparams["bridge"]:
            self.hold("pool_video", as_tensor(dataset.video_features, ctx.device))
            self.hold("pool_music", as_tensor(dataset.music_features, ctx.device))
            self.hold("pool_train", as_tensor(dataset.splits["train"], ctx.device))

    def extra_loss(self, batch: bk.Batch, out: bk.Output) -> dict[str, bk.LossTerm]:
        encodings = self._encodings
        assert encodings is not None, "prepare() runs before training"
        t = encodings.scores(batch.video_idx, batch.video, batch.music_idx, batch.music)
        target = refined_labels(batch.same_music, t, self.hparams["c"])
        pred = self.head_scale * out.mean_scores + self.head_bias
        terms = {
            "refine": bk.LossTerm((pred - target).pow(2), kind="cell", coef=self.hparams["weight"])
        }
        if self.hparams["bridge"]:
            terms["bridge"] = self._bridge(batch.size, encodings)
        return terms

    def _bridge(self, b: int, encodings: FrozenEncodings) -> bk.LossTerm:
        videos, music = self.held("pool_video"), self.held("pool_music")
        train = self.held("pool_train")
        vi = train[torch.randint(len(train), (b,), device=train.device)]
        mi = torch.randint(music.shape[0], (b,), device=train.device)
        v, m = videos[vi].float(), music[mi].float()
        student: bk.Backbone = self.held("student")
        s = student.score(student.encode_video(v).mu, student.encode_music(m).mu).diagonal()
        t = encodings.scores(vi, v, mi, m).diagonal()
        return bk.LossTerm((s - t).pow(2), coef=self.hparams["bridge_weight"])

    def report(self) -> dict[str, Any]:
        return self._report


@hookimpl
def register_strategies(register: Any) -> None:
    register(LabelDistill)
