"""CMVAE (Yi et al., TMM 2021) — the backbone of DebCM. docs/methods.md: CMVAE, and the release's quirks.

Per modality a Gaussian encoder h = Dropout(BN(x)), μ = l2norm(W_μ h), logσ² = l2norm(W_ℓ h) and a
decoder x̂ = ReLU(W · Dropout(BN(z))). Generation is *crossed*: music features are reconstructed from
the video code and video features from the (possibly deconfounded) music code. Matching is a
bidirectional top-k hinge on the in-batch dot products of the sampled codes.

Variants (hyperparameter ``variant``):

- ``paper`` (default): the fixed hinge mean_i TopK_j [δ − S_ii + S_ij]_+ over the k *hardest*
  negatives, with cells that pair a video with another copy of its own music masked out
  (the release's quirks 1 and 4 fixed; docs/methods.md).
- ``reference``: the released loss exactly — the margin terms enter with a minus sign, i.e.
  −mean TopK_j [S_ii − S_ij − δ]_+ (the *easiest* negatives; a pair that violates the margin gets no
  gradient), and same-music cells are kept as negatives.

``variance`` treats the encoders' log-variance (:class:`benchkit.nn.GaussianEncoder`): ``normalised``
as released (L2-normalised, so a sampled code carries far more noise than its mean has signal),
``free`` or ``fixed``. It applies to the paper variant; ``reference`` always uses the release's.

Adapted to precomputed features: the text/PoE branch is left out (TT-150k-genre has visual features
only for PGC, as the paper does). Loss granularity: ``cell`` (each hinge cell is exposed, so IPS can
weight anchors and DU cells); KL and reconstruction are per-anchor terms.
"""

from __future__ import annotations

from typing import Any

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.nn import (
    VARIANCES,
    Decoder,
    GaussianCodes,
    GaussianEncoder,
    hinge_pair,
    kl_to_standard,
    row_mse,
)

VARIANTS = ("paper", "reference")


class CMVAE(GaussianCodes, bk.Backbone):
    name = "cmvae"
    description = (
        "CMVAE (Yi et al. 2021): cross-generation VAE with a top-k hinge; DebCM's backbone"
    )
    loss_granularity = "cell"
    variational = True
    params = {
        "variant": bk.Param("paper", VARIANTS),
        "variance": bk.Param("fixed", VARIANCES),
        "latent_dim": bk.Param(128, bk.AT_LEAST_ONE),
        "dropout": bk.Param(0.2, bk.PROBABILITY, bk.Space.uniform(0.0, 0.5)),
        "margin": bk.Param(0.05, bk.NON_NEGATIVE, bk.Space.uniform(0.01, 0.3)),
        "hard_negatives": bk.Param(40, bk.AT_LEAST_ONE),
        "music_loss_weight": bk.Param(1.0, bk.NON_NEGATIVE),
        "recon_weight": bk.Param(1.0, bk.NON_NEGATIVE),
        "kl_weight": bk.Param(1.0, bk.NON_NEGATIVE),
        **bk.training_params(1e-3, 1e-3, 1024, 50, search=bk.OPTIMISER_SEARCH),
    }

    @property
    def variance(self) -> str:
        """The log-variance treatment in effect: the release's under ``variant=reference``."""
        return "normalised" if self.hparams["variant"] == "reference" else self.hparams["variance"]

    def build(self, spec: bk.DataSpec) -> None:
        d, p = self.hparams["latent_dim"], self.hparams["dropout"]
        self.spec = spec
        self.video_encoder = GaussianEncoder(spec.video_dim, d, p, self.variance)
        self.music_encoder = GaussianEncoder(spec.music_dim, d, p, self.variance)
        self.video_decoder = Decoder(d, spec.video_dim, p)  # video from the music code
        self.music_decoder = Decoder(d, spec.music_dim, p)  # music from the video code

    def loss_terms(self, batch: bk.Batch, out: bk.Output) -> dict[str, bk.LossTerm]:
        hp = self.hparams
        variant = hp["variant"]
        sign = 1.0 if variant == "paper" else -1.0
        s, same = out.scores, batch.same_music
        match_video, match_music = hinge_pair(s, same, hp["margin"], hp["hard_negatives"], variant)
        recon_music = row_mse(self.music_decoder(out.video_scored.code), batch.music)
        recon_video = row_mse(self.video_decoder(out.music_scored.code), batch.video)
        terms = {
            "match_video": match_video.scaled(sign),
            "match_music": match_music.scaled(sign * hp["music_loss_weight"]),
            "recon_video": bk.LossTerm(recon_video, coef=hp["recon_weight"]),
            "recon_music": bk.LossTerm(recon_music, coef=hp["recon_weight"]),
        }
        if self.variance != "fixed":
            # With a fixed σ² and an L2-normalised μ, KL(q ‖ N(0, I)) is the same constant for
            # every code: no gradient, only an offset that would hide the other terms' sizes.
            terms["kl_video"] = bk.LossTerm(kl_to_standard(out.video), coef=hp["kl_weight"])
            terms["kl_music"] = bk.LossTerm(kl_to_standard(out.music), coef=hp["kl_weight"])
        return terms


@hookimpl
def register_backbones(register: Any) -> None:
    register(CMVAE)
