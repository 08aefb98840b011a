"""UWML / PolyLoss (Wei et al., CVPR 2020, "Universal weighting metric learning for cross-modal
matching"). docs/methods.md.

Cosine scores of L2-normalised MLP embeddings (Linear → ReLU → dropout → Linear per modality; the
card leaves the encoder open, so it is the same two-layer shape for both sides). Per anchor i, first
with video anchors and then with music anchors: the informative negatives are
N_i = {j ≠ i : S_ij + δ > S_ii} (other copies of the anchor's music excluded); an anchor without one
is skipped; with n = max_{j ∈ N_i} S_ij,
ℓ_i = [0.2 S_ii² − 0.7 S_ii + 0.5]_+ + [0.9 n² − 0.4 n + 0.03]_+ and L = Σ ℓ_i / B (δ = 0.2).

The card gives no optimiser setting; benchkit uses Adam lr 1e-3, as for CMVAE. Loss granularity:
``cell`` — the positive polynomial is a per-anchor term and the mined negative a one-cell term,
so DU can weight them apart.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.nn import UnitCodes, mlp


def poly_terms(scores: Tensor, same: Tensor, margin: float) -> tuple[bk.LossTerm, bk.LossTerm]:
    """The positive and the mined-negative polynomial terms for the anchors of the rows."""
    pos = scores.diagonal()
    informative = ~same & (scores + margin > pos[:, None])
    has = informative.any(dim=1)
    hardest, col = scores.masked_fill(~informative, float("-inf")).max(dim=1)
    pos_loss = (0.2 * pos.pow(2) - 0.7 * pos + 0.5).clamp_min(0) * has
    neg = hardest.masked_fill(~has, 0.0)
    neg_loss = (0.9 * neg.pow(2) - 0.4 * neg + 0.03).clamp_min(0)
    return (
        bk.LossTerm(pos_loss),
        bk.LossTerm(
            neg_loss[:, None], kind="cell", cols=col[:, None], valid=has[:, None], row_reduce="sum"
        ),
    )


class UWML(UnitCodes, bk.Backbone):
    name = "uwml"
    description = "UWML (Wei et al. 2020): polynomial weighting of informative negatives"
    loss_granularity = "cell"
    params = {
        "embed_dim": bk.Param(128, bk.AT_LEAST_ONE),
        "hidden": bk.Param(1024, bk.AT_LEAST_ONE),
        "dropout": bk.Param(0.1, bk.PROBABILITY, bk.Space.uniform(0.0, 0.5)),
        "margin": bk.Param(0.2, bk.NON_NEGATIVE, bk.Space.uniform(0.05, 0.4)),
        **bk.training_params(1e-3, 0.0, 1024, 50, search=bk.LR_SEARCH),
    }

    def build(self, spec: bk.DataSpec) -> None:
        hp = self.hparams
        self.spec = spec
        dims = (hp["hidden"], hp["embed_dim"])
        self.video_net = mlp([spec.video_dim, *dims], dropout=hp["dropout"])
        self.music_net = mlp([spec.music_dim, *dims], dropout=hp["dropout"])

    def loss_terms(self, batch: bk.Batch, out: bk.Output) -> dict[str, bk.LossTerm]:
        s, same, margin = out.scores, batch.same_music, self.hparams["margin"]
        pos_v, neg_v = poly_terms(s, same, margin)
        pos_m, neg_m = poly_terms(s.T, same, margin)
        neg_m.transposed = True
        return {"pos_video": pos_v, "neg_video": neg_v, "pos_music": pos_m, "neg_music": neg_m}


@hookimpl
def register_backbones(register: Any) -> None:
    register(UWML)
