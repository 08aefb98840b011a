"""Dual-VAE (Shen et al., AAAI 2018, "Generating diverse and consistent QA pairs from contexts with
information-maximizing hierarchical conditional VAEs" line of dual VAEs for retrieval). docs/methods.md.

From the paper, not checked against code (none is public).

Each modality has its own VAE that reconstructs *its own* modality — the difference from CMVAE's
cross-generation: q(z_x | x) = N(μ_x, σ_x²) (the same L2-normalised Gaussian encoder as CMVAE, so the
two differ only in what they generate) and p(x | z_x) an MLP decoder with a linear output. Matching
uses the latent *means* with the fixed top-k hinge of DebCM (hardest negatives, same-music cells
masked), so that dot-product retrieval works:
L = L_match + β Σ_x [recon_x + KL(q(z_x | x) ‖ N(0, I))], β = 1, D = 128.

Loss granularity: ``cell`` (hinge cells); reconstruction and KL are per anchor.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from benchkit import hookimpl
from benchkit.interfaces import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    PROBABILITY,
    TRAINING_RANGES,
    Backbone,
    Batch,
    DataSpec,
    Latent,
    LossTerm,
    Output,
    Space,
)
from benchkit.nn import GaussianEncoder, hinge_pair, kl_to_standard, mlp, row_mse


class DualVAE(Backbone):
    name = "dual_vae"
    description = (
        "Dual-VAE (Shen et al. 2018): one VAE per modality, self-reconstruction, hinge on means"
    )
    loss_granularity = "cell"
    variational = True
    score_on_sample = False
    defaults = {
        "latent_dim": 128,
        "decoder_hidden": 512,
        "dropout": 0.2,
        "margin": 0.05,
        "hard_negatives": 40,
        "beta": 1.0,
        "lr": 1e-3,
        "weight_decay": 1e-3,
        "batch_size": 1024,
        "epochs": 50,
    }
    ranges = {
        **TRAINING_RANGES,
        "latent_dim": AT_LEAST_ONE,
        "decoder_hidden": AT_LEAST_ONE,
        "dropout": PROBABILITY,
        "margin": NON_NEGATIVE,
        "hard_negatives": AT_LEAST_ONE,
        "beta": NON_NEGATIVE,
    }
    search_space = {
        "lr": Space.log(1e-4, 1e-2),
        "weight_decay": Space.log(1e-5, 1e-2),
        "dropout": Space.uniform(0.0, 0.5),
        "margin": Space.uniform(0.01, 0.3),
        "beta": Space.log(1e-3, 1.0),
    }

    def build(self, spec: DataSpec) -> None:
        hp = self.hparams
        d, p, h = hp["latent_dim"], hp["dropout"], hp["decoder_hidden"]
        self.spec = spec
        self.video_encoder = GaussianEncoder(spec.video_dim, d, p)
        self.music_encoder = GaussianEncoder(spec.music_dim, d, p)
        self.video_decoder = mlp([d, h, spec.video_dim], dropout=p)  # video from its own code
        self.music_decoder = mlp([d, h, spec.music_dim], dropout=p)  # music from its own code

    def encode_video(self, x: Tensor) -> Latent:
        return self.video_encoder(x)

    def encode_music(self, x: Tensor) -> Latent:
        return self.music_encoder(x)

    def loss_terms(self, batch: Batch, out: Output) -> dict[str, LossTerm]:
        hp = self.hparams
        s, same = out.scores, batch.same_music  # scores of the means (score_on_sample = False)
        match_video, match_music = hinge_pair(s, same, hp["margin"], hp["hard_negatives"])
        recon_video = row_mse(self.video_decoder(out.video.code), batch.video)
        recon_music = row_mse(self.music_decoder(out.music.code), batch.music)
        beta = hp["beta"]
        return {
            "match_video": match_video,
            "match_music": match_music,
            "recon_video": LossTerm(recon_video, coef=beta),
            "recon_music": LossTerm(recon_music, coef=beta),
            "kl_video": LossTerm(kl_to_standard(out.video), coef=beta),
            "kl_music": LossTerm(kl_to_standard(out.music), coef=beta),
        }


@hookimpl
def register_backbones(register: Any) -> None:
    register(DualVAE)
