"""Verdicts a reviewer can trust: controls without leaks, test sets that test what they say, the
textbook backdoor, replicates (of worlds and of splits), `benchkit compare` and the claims."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from benchkit.api import plan_run
from benchkit.cli import cli
from benchkit.data.describe import describe
from benchkit.data.splits import apply_test_set
from benchkit.data.synth import make_world, taste_at
from benchkit.errors import ConfigError
from benchkit.experiments import claims as c
from benchkit.experiments.stats import Cell, Contrast, Replicate
from benchkit.spec import RunSpec

TINY = ["--preset", "tiny", "--epochs", "1", "-q"]


def test_a_training_rows_prior_leaves_its_own_label_out(tiny):
    train = tiny.splits["train"]
    genre = tiny.music_genre[tiny.video_music]
    loo, in_sample = tiny.video_prior, tiny.with_priors("in-sample").video_prior
    upl = tiny.video_uploader
    for v in train[:200]:
        others = train[(upl[train] == upl[v]) & (train != v)]
        if others.size == 0:
            continue
        expected = np.bincount(genre[others], minlength=tiny.n_genres) / others.size
        assert np.allclose(loo[v], expected, atol=1e-6)
        mine = np.bincount(genre[np.r_[others, v]], minlength=tiny.n_genres) / (others.size + 1)
        assert np.allclose(in_sample[v], mine, atol=1e-6)  # the release's form: itself inside
    test = tiny.splits["test"]
    assert np.allclose(loo[test], in_sample[test])  # test videos were never in the history
    assert tiny.fingerprint != tiny.with_priors("in-sample").fingerprint
    plan = plan_run(RunSpec(preset="tiny", debias="ips", priors="in-sample"))
    assert plan.dataset.prior_kind == "in-sample"


def test_the_positive_control_never_reads_counterfactual_validation_labels():
    observed = plan_run(RunSpec(preset="tiny")).dataset
    control = plan_run(RunSpec(preset="tiny", labels="counterfactual")).dataset
    leaky = plan_run(RunSpec(preset="tiny", labels="counterfactual-val")).dataset
    cf = observed.truth.counterfactual
    for split, ds_labels in (
        ("train", cf),
        ("val", observed.video_music),
        ("test", observed.video_music),
    ):
        rows = observed.splits[split]
        assert np.array_equal(control.video_music[rows], ds_labels[rows]), split
    val = observed.splits["val"]
    assert np.array_equal(leaky.video_music[val], cf[val])  # the labelled upper bound does
    assert (cf[val] != observed.video_music[val]).any()  # … and it is a different thing
    # What a method reads besides its labels stays as observed: priors, test weights.
    assert np.allclose(control.video_prior, observed.video_prior)
    assert control.eval_fingerprint("test") == observed.eval_fingerprint("test")


def test_debcms_batch_mean_is_the_global_mean_in_all_but_name(tiny):
    """The paper's Monte Carlo estimate of E[d_u] over a batch of 1,024 pairs sits within a few
    hundredths (L1) of d̄, while a pair's own d_u is far from it: training with the batch mean is
    training with d̄ — the reason it adjusts nothing (docs/methods.md)."""
    priors = tiny.video_prior[tiny.splits["train"]]
    d_bar = tiny.prior_mean
    rng = np.random.default_rng(0)
    batch = [
        np.abs(priors[rng.choice(len(priors), 1024, replace=False)].mean(0) - d_bar).sum()
        for _ in range(100)
    ]
    assert np.mean(batch) < 0.04 and np.max(batch) < 0.1
    assert np.abs(priors - d_bar).sum(axis=1).mean() > 0.5


def test_the_textbook_backdoor_closes_headroom_on_a_strongly_confounded_world():
    from benchkit.api import run

    knobs = {"taste_strength": 4.0, "style_strength": 2.0}
    common = dict(
        preset="tiny", world=knobs, test_set="random", threads=1, precision="fp32", world_seed=1
    )
    plain = run("cmvae", "none", **common).metrics["cf_recall@25"]
    textbook = run("cmvae", "textbook_backdoor", **common).metrics["cf_recall@25"]
    ceiling = run("cmvae", "none", labels="counterfactual", **common).metrics["cf_recall@25"]
    assert ceiling - plain > 0.05  # there is headroom to close
    assert (textbook - plain) / (ceiling - plain) > 0.2


def test_t_diverse_holds_more_diverse_uploaders_than_a_random_split():
    for seed in (0, 1):
        world = make_world("tiny", seed=seed)
        choice = world.truth.choice
        taste = taste_at(
            choice.taste0[choice.video_uploader],
            choice.taste1[choice.video_uploader],
            choice.video_time,
        )
        entropy = -(taste * np.log(taste)).sum(axis=1)
        margins = {
            name: entropy[apply_test_set(world, name, seed=seed).splits["test"]].mean()
            - entropy.mean()
            for name in ("diverse", "diverse:entropy")
        }
        assert margins["diverse"] > 0.05 and margins["diverse"] > margins["diverse:entropy"]
    described = describe(apply_test_set(world, "diverse", seed=1))
    assert described["test_true_taste_entropy"] > described["random_split_true_taste_entropy"]


def test_the_taste_intervention_moves_only_the_test_choices(tiny):
    def top_genre_share(ds):
        test = ds.splits["test"]
        choice = ds.truth.choice
        top = choice.taste0[choice.video_uploader[test]].argmax(axis=1)
        return float(np.mean(ds.music_genre[ds.video_music[test]] == top))

    shares = []
    base = apply_test_set(tiny, "random", seed=3)
    for x in (0.0, 1.0, 3.0):
        ds = apply_test_set(tiny, f"taste:{x:g}", seed=3)
        for split in ("train", "val"):
            rows = ds.splits[split]
            assert np.array_equal(rows, base.splits[split])
            assert np.array_equal(ds.video_music[rows], base.video_music[rows])
        assert np.array_equal(ds.splits["test"], base.splits["test"])
        shares.append(top_genre_share(ds))
    assert shares[0] < shares[1] < shares[2]
    with pytest.raises(ConfigError, match="taste:X"):
        apply_test_set(tiny, "taste:abc")


def test_replicates_of_data_from_disk_redraw_the_validation_test_partition(tmp_path, tiny):
    from benchkit.data.reference import write_reference
    from benchkit.experiments.driver import job_spec
    from benchkit.experiments.grid import make_job

    path = write_reference(tiny, tmp_path / "ref")
    spec = RunSpec(data=str(path), epochs=1)
    job = make_job("CMVAE", ("given", "ugc"), replicate=1, seed=2234, test_set="given")
    assert job_spec(job, spec.replace(world_seed=7), replicates=2).test_set == "resplit"
    assert job_spec(job, spec, replicates=1).test_set == "given"
    given = plan_run(spec).dataset
    redrawn = [plan_run(spec.replace(test_set="resplit", world_seed=s)).dataset for s in (7, 8)]
    for ds in redrawn:
        assert np.array_equal(ds.splits["train"], given.splits["train"])
        for split in ("val", "test"):
            assert ds.splits[split].size == given.splits[split].size
        assert set(ds.splits["val"]) | set(ds.splits["test"]) == set(given.splits["val"]) | set(
            given.splits["test"]
        )
        # The release's stored negatives travel with their videos.
        test = ds.splits["test"]
        assert ds.negatives["test"].shape == (test.size, 100)
        assert not (ds.negatives["test"] == ds.video_music[test][:, None]).any()
    assert not np.array_equal(redrawn[0].splits["test"], redrawn[1].splits["test"])


def test_replicates_of_a_fixed_selection_are_refused_in_one_line(tmp_path, tiny):
    from benchkit.data.tables import write_tables

    path = write_tables(tiny, tmp_path / "tables")
    grid = tmp_path / "fixed.toml"
    grid.write_text(
        'name = "fixed"\nkind = "table"\nmetrics = ["recall@25"]\ntest_sets = ["matching:views"]\n'
        '[[rows]]\nlabel = "CMVAE"\nbackbone = "cmvae"\ndebias = "none"\n'
    )
    res = CliRunner().invoke(
        cli,
        [
            "experiment",
            str(grid),
            "--data",
            str(path),
            "--replicates",
            "2",
            "--epochs",
            "1",
            "-q",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code == 2
    assert "no room to redraw it" in res.output and "Traceback" not in res.output


@pytest.fixture(scope="module")
def replicated_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicated")
    res = CliRunner().invoke(
        cli,
        [
            "experiment",
            "tests/grids/tiny_table.toml",
            *TINY,
            "--replicates",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    return out, res.output


def test_a_replicated_table_names_its_design_and_its_test(replicated_store):
    out, printed = replicated_store
    assert "2 replicates: fresh worlds (world seeds 1000–1001)" in printed
    assert "paired t-test over the 2 replicates" in printed
    assert "t(1)" in printed
    import pandas as pd

    frame = pd.read_csv(out / "tiny_table.csv")
    assert {"recall@25_ci_low", "recall@25_ci_high", "recall@25_p_holm"} <= set(frame.columns)
    assert (frame["recall@25_ci_low"] <= frame["recall@25"]).all()
    assert (frame["replicates"] == 2).all()
    runs = pd.read_csv(out / "tiny_table.csv")
    assert len(runs) == 4  # 2 rows × 2 columns


def test_compare_two_rows_from_the_command_line_and_python(replicated_store, tmp_path):
    from benchkit.experiments.compare import compare

    out, _ = replicated_store
    res = CliRunner().invoke(cli, ["compare", "DebCM", "CMVAE", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "paired t-test over 2 replicates" in res.output and "diverse/ugc" in res.output
    frame = compare(str(out), "DebCM", "CMVAE", metrics=["recall@25"])
    assert set(frame["column"]) == {"diverse/ugc", "diverse/ugc+pgc"}
    line = frame.iloc[0]
    assert line["ci_low"] <= line["difference"] <= line["ci_high"] and line["units"] == 2
    res = CliRunner().invoke(cli, ["compare", "DebCM", "nobody", "--out", str(out)])
    assert res.exit_code == 2 and "no row 'nobody'" in res.output
    # Another design (one replicate of another world): refused in one line.
    other = tmp_path / "other"
    res = CliRunner().invoke(
        cli,
        [
            "experiment",
            "tests/grids/tiny_table.toml",
            *TINY,
            "--world-seed",
            "1005",
            "--out",
            str(other),
        ],
    )
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        cli, ["compare", "DebCM", "CMVAE", "--out", str(out), "--out-b", str(other)]
    )
    assert res.exit_code == 2 and "different replicate designs" in res.output


def _evidence() -> c.Evidence:
    """Table 3 cells of two replicates where debiased rows are better by 0.05 (with noise)."""
    from benchkit.experiments.grid import load_grid

    grid = load_grid("table3")
    rng = np.random.default_rng(0)
    summary = {}
    for row in grid.rows:
        for column in grid.columns:
            for metric in (c.OBSERVED, c.TRUTH):
                cell = Cell()
                good = row in c.DEBIASED or row in grid.control_rows
                for r in range(3):
                    rep = Replicate(f"w{r}-{column[0]}")
                    rep.values[0] = 0.3 + 0.05 * good + rng.normal(0, 0.002)
                    cell.replicates[r] = rep
                cell.control = row in grid.control_rows
                summary[(row, column, metric)] = cell
    return c.Evidence(grids={"table3": grid}, summaries={"table3": summary}, out="o")


def test_claim_verdicts_and_their_controls():
    ev = _evidence()
    found = c.claim_debiased_beat_non_debiased(ev, c.TRUTH)
    # The paper's groups on both test sets, then the same against CMVAE alone (same backbone):
    assert [f.verdict for f in found] == ["holds"] * 4
    assert [f.id for f in found][2:] == [
        f"1.CMVAE.{t}.{c.TRUTH}" for t in ("T_diverse", "T_matching")
    ]
    assert found[0].effect == pytest.approx(0.05, abs=0.005) and found[0].units == 3
    assert found[0].control["headroom"] is True
    generative = c.claim_generative_beat_matching(ev, c.TRUTH)
    assert {f.verdict for f in generative} == {"inconclusive"}  # no difference planted
    pooled = c.claim_pooling_pgc_does_not_help(ev, c.TRUTH)
    assert {f.verdict for f in pooled} == {"holds"}  # its interval stays below a quarter
    assert c.verdict(Contrast(-0.1, (-0.2, -0.01), 0.01, 5, "replicates")) == "fails"
    assert c.verdict(None) == "inconclusive"
    with pytest.raises(ConfigError, match=r"need fig3.*benchkit fig3 --out o"):
        c.claim_debcm_beats_decrs(ev, c.TRUTH)
    # From a store with Table 3 only, claims 1–4 are answered and 5–6 (Figs. 3–4) "not run":
    found = c.answer(ev, metrics=(c.TRUTH,))
    assert c.overall(found, 1, c.TRUTH) == "holds"
    assert {c.overall(found, n, c.TRUTH) for n in (5, 6)} == {c.NOT_RUN}
    text = c.report(found, truth=True)
    assert "not run: the claims need fig3" in text and "benchkit fig3 --out o" in text
    with pytest.raises(ConfigError, match="holds no run of Table 3"):
        c.answer(c.Evidence(out="o"))
    with pytest.raises(ConfigError, match="holds no results store"):
        c.gather(None, "no-such-folder", run=False)
    assert not os.path.exists("no-such-folder")
    del ev.summaries["table3"][("DebCM", ("diverse", "ugc"), c.TRUTH)]
    with pytest.raises(ConfigError, match="DebCM × diverse/ugc × cf-Recall@25 of table3"):
        c.claim_debcm_best(ev, c.TRUTH)


@pytest.mark.slow
def test_claims_from_the_command_line(tmp_path):
    args = ["claims", *TINY, "--replicates", "2", "--out", str(tmp_path), "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    found = json.loads(res.output)["claims"]
    assert {f["claim"] for f in found} == {1, 2, 3, 4, 5, 6}
    for f in found:
        assert f["verdict"] in ("holds", "fails", "inconclusive")
        assert {"id", "effect", "ci_low", "ci_high", "control"} <= set(f)
    again = CliRunner().invoke(cli, [*args[:-1], "--no-run"])
    assert again.exit_code == 0 and "Claim 6" in again.output
