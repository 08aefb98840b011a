"""Debias strategies: the maths on hand-made inputs, composition, and the refusal of what cannot work."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from benchkit.api import run
from benchkit.errors import ConfigError
from benchkit.interfaces import Batch, Query
from benchkit.method import Method
from benchkit.nn import gaussian_kl
from benchkit_plugins.debias.calibration import calibrated_lists
from benchkit_plugins.debias.decrs import drift_weights
from benchkit_plugins.debias.du import DU
from benchkit_plugins.debias.ips import IPS
from benchkit_plugins.debias.kl_distill import release_kl


def test_gaussian_kl_matches_closed_form_and_torch():
    torch.manual_seed(0)
    mu_p, mu_q = torch.randn(5, 8), torch.randn(5, 8)
    lv_p, lv_q = torch.randn(5, 8) * 0.3, torch.randn(5, 8) * 0.3
    ours = gaussian_kl(mu_p, lv_p, mu_q, lv_q)
    ref = kl_divergence(Normal(mu_p, (0.5 * lv_p).exp()), Normal(mu_q, (0.5 * lv_q).exp())).sum(1)
    torch.testing.assert_close(ours, ref)
    # Equal unit variances: KL = ½ ‖μ_p − μ_q‖².
    zero = torch.zeros(5, 8)
    torch.testing.assert_close(
        gaussian_kl(mu_p, zero, mu_q, zero), 0.5 * (mu_p - mu_q).pow(2).sum(1)
    )
    assert gaussian_kl(mu_p, lv_p, mu_p, lv_p).abs().max() < 1e-6


def test_release_kl_pushes_means_apart():
    """The release's quirk 2 (docs/methods.md): with equal variances the released formula
    *decreases* as the means separate, while the true KL increases."""
    zero = torch.zeros(1, 4)
    near, far = torch.full((1, 4), 0.1), torch.full((1, 4), 1.0)
    assert release_kl(far, zero, zero, zero) < release_kl(near, zero, zero, zero)
    assert gaussian_kl(far, zero, zero, zero) > gaussian_kl(near, zero, zero, zero)


def hand_batch():
    prior = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.05, 0.95, 0.0]])
    genre = torch.tensor([0, 2, 0])  # uploader 3 picked a genre it almost never uses
    return Batch(
        video=torch.zeros(3, 2),
        music=torch.zeros(3, 2),
        video_idx=torch.arange(3),
        music_idx=torch.tensor([4, 5, 6]),
        genre=genre,
        prior=prior,
        propensity=torch.tensor([0.5, 0.25, 1.0]),
    )


def test_ips_weights_on_a_hand_made_batch(tiny):
    b = hand_batch()
    ips = IPS(propensity="genre")
    ips.mode = "genre"
    torch.testing.assert_close(ips.weights(b).anchor, torch.tensor([1 / 0.9, 1 / 0.5, 1 / 0.1]))
    ips = IPS(propensity="column")
    ips.mode = "column"
    torch.testing.assert_close(ips.weights(b).anchor, torch.tensor([2.0, 4.0, 1.0]))
    pop = IPS(propensity="popularity", gamma=2.0)
    from benchkit.interfaces import RunContext

    pop.prepare(tiny, RunContext(device=torch.device("cpu"), seed=0, plugins=None))
    n = torch.as_tensor(tiny.train_popularity, dtype=torch.float32).clamp_min(1)
    expect = ((n / n.max()) ** 1.5).clamp(0.1, 1.0)
    m = torch.tensor([0, 1, 2])
    got = pop.weights(
        Batch(video=torch.zeros(3, 1), music=torch.zeros(3, 1), video_idx=m, music_idx=m)
    ).anchor
    torch.testing.assert_close(got, 1 / expect[m])


def test_du_weights_on_a_hand_made_batch():
    b = hand_batch()
    w = DU(alpha=0.5, beta=0.5, clip=0.1).weights(b)
    torch.testing.assert_close(
        w.anchor, 1 / torch.tensor([0.9**0.5, 0.5**0.5, max(0.1, 0.05**0.5)])
    )
    # Cell (i, j): uploader of video i, genre of music j (genres 0, 2, 0); the diagonal pairs a
    # video with its own music: a positive, weighted 1 as a cell.
    d = b.prior[:, [0, 2, 0]]
    expect = 1 / (1 - d).pow(0.5).clamp(0.1, 1.0)
    expect.fill_diagonal_(1.0)
    torch.testing.assert_close(w.cell, expect)
    assert w.cell[0, 2] == pytest.approx(1 / math.sqrt(0.1))  # clipped at 0.1


def test_du_normalises_positive_and_negative_weights_apart():
    """Anchor (positive) weights to mean 1 over the pairs, cell (negative) weights to mean 1 over
    the valid cells, each on its own; a cell counts with the product."""
    from benchkit.interfaces import LossTerm, Weights
    from benchkit.method import reduce_term

    value = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 4.0], [0.0, 5.0, 6.0]])
    valid = value > 0
    anchor = torch.tensor([1.0, 2.0, 6.0])
    cell = torch.tensor([[9.0, 1.0, 3.0], [2.0, 9.0, 2.0], [4.0, 4.0, 9.0]])
    term = LossTerm(value, kind="cell", valid=valid)
    got = reduce_term(term, Weights(anchor=anchor, cell=cell))
    a = anchor / anchor.mean()
    c = torch.where(valid, cell, torch.zeros_like(cell))
    c = c / (c.sum() / valid.sum())
    rows = (value * a[:, None] * c).sum(dim=1) / valid.sum(dim=1)
    torch.testing.assert_close(got, rows.mean())
    # Joint normalisation (the old way) gives another number here.
    joint = valid * anchor[:, None] * cell
    joint = joint / (joint.sum() / valid.sum())
    assert not torch.isclose(got, ((value * joint).sum(1) / valid.sum(1)).mean())


def slow_calibration(scores, genres, prior, k, lam, alpha):
    """Greedy calibration written plainly, one list at a time, every candidate tried explicitly."""
    s = (scores - scores.min()) / (scores.max() - scores.min())
    chosen: list[int] = []
    g = len(prior)
    for _ in range(k):
        best, best_val = None, -math.inf
        for i in range(len(s)):
            if i in chosen:
                continue
            lst = [*chosen, i]
            q = np.bincount([genres[j] for j in lst], minlength=g) / len(lst)
            qt = (1 - alpha) * q + alpha * prior
            ckl = sum(p * math.log(p / qq) for p, qq in zip(prior, qt, strict=True) if p > 0)
            val = (1 - lam) * sum(s[j] for j in lst) - lam * ckl
            if val > best_val:
                best, best_val = i, val
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.9])
def test_calibration_equals_a_brute_force_greedy(lam):
    rng = np.random.default_rng(int(lam * 10))
    n, c, g, k = 6, 12, 3, 5
    scores = rng.random((n, c))
    genres = rng.integers(0, g, (n, c))
    prior = rng.dirichlet(np.ones(g), n)
    prior[0] = [1.0, 0.0, 0.0]
    fast = calibrated_lists(
        torch.tensor(scores), torch.tensor(genres), torch.tensor(prior), k, lam, 0.01
    ).numpy()
    for row in range(n):
        assert fast[row].tolist() == slow_calibration(
            scores[row], genres[row], prior[row], k, lam, 0.01
        )
    if lam == 0.0:  # pure relevance: the plain top-k
        assert (fast == np.argsort(-scores, axis=1)[:, :k]).all()


def test_calibration_breaks_ties_at_random_not_by_array_order():
    scores = torch.zeros(200, 10)
    genres = torch.zeros(200, 10, dtype=torch.long)
    prior = torch.tensor([[1.0]]).expand(200, 1)
    firsts = calibrated_lists(scores, genres, prior, 1, 0.5, 0.01)[:, 0]
    counts = torch.bincount(firsts, minlength=10)
    assert counts.min() > 5  # every candidate is picked first sometimes


def test_decrs_drift_weights_on_a_hand_made_history():
    # Uploader 0 switched genre half-way (maximal drift), 1 never did, 2 has one video, 3 drifted a bit.
    genres = np.array([0, 0, 1, 1, 2, 2, 2, 2, 1, 0, 0, 0, 1])
    uploaders = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3])
    eta = drift_weights(genres, uploaders, 4, 3, a=0.2, smoothing=0.01)
    assert eta[0] == pytest.approx(1.0) and eta[1] == 0.0 and eta[2] == 0.0
    assert 0.0 < eta[3] < 1.0

    # Uploader 3: halves [0, 0] and [0, 1]; check its raw symmetric KL by hand.
    def dist(h):
        return (np.bincount(h, minlength=3) + 0.01) / (len(h) + 0.03)

    p, q = dist(np.array([0, 0])), dist(np.array([0, 1]))
    kl3 = np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))
    p, q = dist(np.array([0, 0])), dist(np.array([1, 1]))
    kl0 = np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))
    assert eta[3] == pytest.approx((kl3 / kl0) ** 0.2)


def deconfounded(plugins, tiny, variant, prior):
    torch.manual_seed(0)
    bb = plugins.backbones.get("cmvae")(latent_dim=16)
    s = plugins.strategies.get("backdoor")(variant=variant)
    bb.build(tiny.spec())
    s.build(tiny.spec(), bb)
    s.confounder.prior_mean.copy_(torch.as_tensor(prior))
    m = Method(bb, [s]).eval()
    with torch.no_grad():  # a non-trivial mixing layer / interaction, as after training
        for p in s.parameters():
            p.add_(torch.randn_like(p))
    rows = torch.arange(20)
    q = Query(video_idx=rows, column_music_idx=torch.arange(tiny.n_music))
    codes = m.video_codes(torch.from_numpy(tiny.video_features[:20]))
    return m.score(codes, m.music_codes(torch.from_numpy(tiny.music_features)), q)


def test_reference_deconfounder_cannot_change_a_ranking_and_interaction_does(plugins, tiny):
    one, other = np.eye(tiny.n_genres)[0], np.eye(tiny.n_genres)[2]
    ref_a = deconfounded(plugins, tiny, "reference", one)
    ref_b = deconfounded(plugins, tiny, "reference", other)
    assert not torch.allclose(ref_a, ref_b)  # the scores move ...
    assert torch.equal(ref_a.argsort(dim=1), ref_b.argsort(dim=1))  # ... the rankings do not
    diff = ref_a - ref_b
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff))  # a per-video constant
    int_a = deconfounded(plugins, tiny, "interaction", one)
    int_b = deconfounded(plugins, tiny, "interaction", other)
    assert not torch.equal(int_a.argsort(dim=1), int_b.argsort(dim=1))


def test_debcm_drops_distillation_without_pgc_and_keeps_it_with(plugins, tiny):
    ugc = run("cmvae", "debcm", dataset=tiny, setting="ugc", epochs=1, plugins=plugins)
    assert ugc.method["strategies"] == ["backdoor"] and ugc.method["setting"] == "ugc"
    both = run("cmvae", "debcm", dataset=tiny, epochs=1, plugins=plugins)
    assert both.method["strategies"] == ["backdoor", "kl_distill"]
    assert both.method["setting"] == "ugc+pgc"


def test_pooled_training_for_the_plain_backbone(plugins, tiny):
    out = run("cmvae", "none", dataset=tiny, setting="ugc+pgc", epochs=1, plugins=plugins)
    assert out.training["train_pairs"] == tiny.splits["train"].size + tiny.pgc.splits["train"].size
    dscmr = run("dscmr", "none", dataset=tiny, setting="ugc+pgc", epochs=1, plugins=plugins)
    assert math.isfinite(dscmr.metrics["recall@25"])


@pytest.mark.parametrize(
    ("backbone", "debias", "setting", "message"),
    [
        ("cevar", "du", "auto", "weights in-batch cells, but backbone 'cevar' exposes only anchor"),
        ("cmvbr", "kl_distill", "auto", "needs a backbone with Gaussian latents"),
        ("cca", "ips", "auto", "fitted in closed form"),
        ("cmvae", "ips", "ugc+pgc", "no strategy of 'ips' uses the PGC data; add label_distill"),
        ("cmvae", "kl_distill", "ugc", "needs pgc"),
        ("cmvae", "debcm+backdoor", "auto", "appears twice"),
        ("cmvae", "ips", "both", "--setting: 'both' is not one of auto, ugc, ugc+pgc"),
    ],
)
def test_impossible_combinations_are_refused_before_training(
    plugins, tiny, backbone, debias, setting, message
):
    with pytest.raises(ConfigError) as err:
        run(backbone, debias, dataset=tiny, setting=setting, plugins=plugins)
    assert message in str(err.value)


def test_strategy_needs_what_the_data_lacks(plugins, tiny):
    bare = tiny.with_splits(tiny.splits)
    bare.video_uploader = None
    with pytest.raises(ConfigError, match="strategy 'du' needs uploaders"):
        run("cmvae", "du", dataset=bare, plugins=plugins)


def test_label_distill_target_and_head_on_a_hand_made_batch(plugins, tiny):
    from benchkit_plugins.debias.label_distill import refined_labels

    same = torch.tensor([[True, False, True], [False, True, False], [True, False, True]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [4.0, 6.0, 2.0], [0.0, 3.0, 5.0]])
    t_hat = teacher / 6.0  # min 0, max 6
    want = same.float() + 0.5 * t_hat  # y + c·t̂, not divided by 1 + c
    torch.testing.assert_close(refined_labels(same, teacher, 0.5), want)
    assert refined_labels(same, teacher, 1.0).max() == pytest.approx(2.0)
    # The head reads the deterministic (mean) scores: two passes with different sampling noise
    # give the same refine term.
    res = run("cmvae", "label_distill", dataset=tiny, epochs=1, plugins=plugins)
    assert res.training["strategies"]["label_distill"]["teacher"]["pgc_val_recall@25"] > 0


def test_label_distill_bridge_scores_through_the_backbones_score(plugins, tiny):
    res = run(
        "dscmr",
        "label_distill",
        dataset=tiny,
        epochs=1,
        overrides={"label_distill.bridge": True},
        plugins=plugins,
    )
    assert math.isfinite(res.metrics["recall@25"])


def test_decrs_acts_on_the_video_side_and_reaches_the_ranking(plugins, tiny):
    from benchkit_plugins.debias.decrs import fm_mediator

    torch.manual_seed(0)
    e = torch.randn(6, 8)
    z = torch.randn(5, 8)
    d = torch.softmax(torch.randn(1, 6), dim=1)
    # FM pairwise terms: z ⊙ Σ_g d_g e_g + Σ_{g<g'} d_g d_g' e_g ⊙ e_g'.
    pairs = sum(d[0, g] * d[0, h] * e[g] * e[h] for g in range(6) for h in range(g + 1, 6))
    torch.testing.assert_close(fm_mediator(z, d, e), z * (d @ e) + pairs)
    # In a trained DecRS, the confounder changes each video's ranking of the music (not by a
    # per-video constant): a different d̄ reorders the pool.
    bb = plugins.backbones.get("cmvae")(latent_dim=8)
    s = plugins.strategies.get("decrs")(mix=False)
    bb.build(tiny.spec())
    s.build(tiny.spec(), bb)
    m = Method(bb, [s]).eval()
    with torch.no_grad():
        s.confounder.embedding.weight.normal_()
    q = Query(video_idx=torch.arange(10), column_music_idx=torch.arange(tiny.n_music))
    video = torch.from_numpy(tiny.video_features[:10])
    music = torch.from_numpy(tiny.music_features)
    ranks = []
    for g in (0, 2):
        s.confounder.prior_mean.copy_(torch.eye(tiny.n_genres)[g])
        scores = m.score(m.video_codes(video), m.music_codes(music), q)
        ranks.append(scores.argsort(dim=1))
        if g == 0:
            first = scores
    assert not torch.equal(ranks[0], ranks[1])
    diff = scores - first
    assert not torch.allclose(diff, diff[:, :1].expand_as(diff))


def test_decrs_drift_follows_time_when_the_data_has_it(plugins, tiny):
    res = run("cmvae", "decrs", dataset=tiny, epochs=1, plugins=plugins)
    assert res.training["strategies"]["decrs"]["drift_order"] == "time"
    bare = tiny.with_splits(tiny.splits)
    bare.video_columns = {}
    res = run("cmvae", "decrs", dataset=bare, epochs=1, plugins=plugins)
    assert res.training["strategies"]["decrs"]["drift_order"] == "row order"


def test_teacher_has_its_own_budget_and_is_reported_beside_the_student(plugins, tiny):
    over = {"kl_distill.teacher_steps": 60, "kl_distill.teacher_batch_size": 64}
    res = run("cmvae", "kl_distill", dataset=tiny, epochs=1, overrides=over, plugins=plugins)
    teacher = res.training["strategies"]["kl_distill"]["teacher"]
    assert teacher["steps_run"] <= 60 and teacher["best_step"] <= teacher["steps_run"]
    assert 0 < teacher["pgc_val_recall@25"] <= 1
    assert set(teacher["test"]) >= {"recall@25", "cf_recall@25", "true_ndcg@25"}
    # The KL term's share of the loss is reported, and grows with its weight.
    small = res.training["loss_shares"]
    big = run(
        "cmvae",
        "kl_distill",
        dataset=tiny,
        epochs=1,
        overrides={**over, "kl_distill.weight": 50.0},
        plugins=plugins,
    ).training["loss_shares"]
    share = small["kl_distill.video"] + small["kl_distill.music"]
    assert 0 <= share < big["kl_distill.video"] + big["kl_distill.music"]


def test_teacher_recipe_is_part_of_its_cache_key(tiny):
    from benchkit.teacher import TeacherRecipe, teacher_key

    a = teacher_key(tiny, TeacherRecipe(), {"lr": 1e-4}, 0, "fp32")
    b = teacher_key(tiny, TeacherRecipe(steps=100), {"lr": 1e-4}, 0, "fp32")
    assert a != b
    with pytest.raises(ConfigError, match="teacher recipe"):
        TeacherRecipe(steps=0)


@pytest.mark.parametrize("variance", ["normalised", "free", "fixed"])
def test_cmvae_variance_treatments(plugins, tiny, variance):
    torch.manual_seed(0)
    bb = plugins.backbones.get("cmvae")(variance=variance, latent_dim=16)
    bb.build(tiny.spec())
    latent = bb.encode_video(torch.from_numpy(tiny.video_features[:32]))
    var = latent.logvar.exp().sum(dim=1)
    if variance == "normalised":  # ‖log σ²‖ = 1: the total variance cannot fall below ≈ D·e^(−1/√D)
        assert (var >= 16 * math.exp(-1 / 4) - 1e-4).all()
    elif variance == "fixed":
        torch.testing.assert_close(var, torch.ones(32))
    # The reference variant always keeps the release's treatment.
    ref = plugins.backbones.get("cmvae")(variant="reference", variance=variance)
    assert ref.variance == "normalised"
