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

from benchkit import hookimpl
from benchkit import interfaces as bk
from benchkit.nn import GaussianCodes, GaussianEncoder, hinge_pair, kl_to_standard, mlp, row_mse


class DualVAE(GaussianCodes, bk.Backbone):
    name = "dual_vae"
    description = (
        "Dual-VAE (Shen et al. 2018): one VAE per modality, self-reconstruction, hinge on means"
    )
    loss_granularity = "cell"
    variational = True
    score_on_sample = False
    params = {
        "latent_dim": bk.Param(128, bk.AT_LEAST_ONE),
        "decoder_hidden": bk.Param(512, bk.AT_LEAST_ONE),
        "dropout": bk.Param(0.2, bk.PROBABILITY, bk.Space.uniform(0.0, 0.5)),
        "margin": bk.Param(0.05, bk.NON_NEGATIVE, bk.Space.uniform(0.01, 0.3)),
        "hard_negatives": bk.Param(40, bk.AT_LEAST_ONE),
        "beta": bk.Param(1.0, bk.NON_NEGATIVE, bk.Space.log(1e-3, 1.0)),
        **bk.training_params(1e-3, 1e-3, 1024, 50, search=bk.OPTIMISER_SEARCH),
    }

    def build(self, spec: bk.DataSpec) -> None:
        hp = self.hparams
        d, p, h = hp["latent_dim"], hp["dropout"], hp["decoder_hidden"]
        self.spec = spec
        self.video_encoder = GaussianEncoder(spec.video_dim, d, p)
        self.music_encoder = GaussianEncoder(spec.music_dim, d, p)
        self.video_decoder = mlp([d, h, spec.video_dim], dropout=p)  # video from its own code
        self.music_decoder = mlp([d, h, spec.music_dim], dropout=p)  # music from its own code

    def loss_terms(self, batch: bk.Batch, out: bk.Output) -> dict[str, bk.LossTerm]:
        hp = self.hparams
        s, same = out.scores, batch.same_music  # scores of the means (score_on_sample = False)
        match_video, match_music = hinge_pair(s, same, hp["margin"], hp["hard_negatives"])
        recon_video = row_mse(self.video_decoder(out.video.code), batch.video)
        recon_music = row_mse(self.music_decoder(out.music.code), batch.music)
        beta = hp["beta"]
        return {
            "match_video": match_video,
            "match_music": match_music,
            "recon_video": bk.LossTerm(recon_video, coef=beta),
            "recon_music": bk.LossTerm(recon_music, coef=beta),
            "kl_video": bk.LossTerm(kl_to_standard(out.video), coef=beta),
            "kl_music": bk.LossTerm(kl_to_standard(out.music), coef=beta),
        }


@hookimpl
def register_backbones(register: Any) -> None:
    register(DualVAE)
