"""Output that says what it measured: every metric block under its protocol and test set, true
defaults, errors that name the option to change, exact row matching, legends that fit."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from benchkit.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_the_run_table_labels_each_block_and_the_test_set():
    res = invoke("run", "--preset", "tiny", "--epochs", "1", "--threads", "1", "-q")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "test set  given (the data's own split), split test, " in out
    assert "1 epoch, best 1" in out and re.search(r"\((bf16|fp32), 1 thread\)", out)
    assert "threads" not in out and "1 epochs" not in out
    sampled, oracle = out.split("\nprotocol paper ")[1].split("\noracle and bias metrics")
    assert sampled.startswith("(hash ") and "sampled: each positive among 100 negatives" in sampled
    assert "Recall" in sampled and "NDCG" in sampled
    assert "cf_recall" not in sampled and "cf_recall" in oracle  # no block mixes the two
    assert oracle.startswith(" (the world's truth) — full pool")
    res = invoke("run", "--preset", "tiny", "--epochs", "1", "-p", "full", "--test-set", "diverse")
    assert "full pool: each positive against every music" in res.stdout
    assert "test set  diverse (T_diverse" in res.stdout


@pytest.mark.parametrize(
    ("kind", "default"),
    [("executors", "auto"), ("protocols", "paper"), ("backbones", "cmvae"), ("strategies", "none")],
)
def test_list_marks_the_true_default(kind, default):
    res = invoke("list", kind)
    assert res.exit_code == 0, res.output
    marked = [line.split()[0] for line in res.stdout.splitlines() if "(the default)" in line]
    assert marked == [default]


def test_too_many_negatives_names_the_option_to_change():
    res = invoke("run", "--preset", "tiny", "--epochs", "1", "--set", "protocol.n_negatives=500")
    assert res.exit_code == 2
    assert "--set protocol.n_negatives=119 (at most 119)" in res.output
    assert res.output.count("\n") == 1


@pytest.fixture(scope="module")
def two_rows(tmp_path_factory):
    """A store of a grid whose row labels share a prefix ("CMVAE" and "CMVAE wide")."""
    root = tmp_path_factory.mktemp("rows")
    grid = root / "rows.toml"
    grid.write_text(
        'name = "rows"\ntitle = "Rows"\nkind = "table"\nprotocol = "full"\n'
        'metrics = ["recall@25"]\ntest_sets = ["random"]\nsettings = ["ugc"]\n'
        '[[rows]]\nlabel = "CMVAE"\nbackbone = "cmvae"\ndebias = "none"\n'
        "set = { latent_dim = 8 }\n"
        '[[rows]]\nlabel = "CMVAE wide"\nbackbone = "cmvae"\ndebias = "none"\n'
        "set = { latent_dim = 16 }\n"
    )
    out = root / "res"
    args = ["experiment", str(grid), "--preset", "tiny", "--epochs", "1", "-q"]
    res = invoke(*args, "--executor", "local", "--out", str(out))
    assert res.exit_code == 0, res.output
    return root, out


def test_row_matches_a_label_exactly(two_rows):
    root, out = two_rows
    res = invoke("results", "--out", str(out), "--curves", str(root / "c.png"), "--row", "CMVAE")
    assert res.exit_code == 0, res.output
    assert re.search(r"\(1 runs?\)", res.stdout), res.stdout  # not "CMVAE wide" too
    res = invoke("results", "--out", str(out), "--curves", str(root / "c.png"), "--row", "CMV")
    assert res.exit_code == 1
    assert "the rows are: CMVAE, CMVAE wide (--row matches a label exactly)" in res.output


def test_curve_legends_fit_the_figure(monkeypatch, tmp_path):
    import benchkit.report.figures as figures

    kept, close = [], figures.plt.close
    monkeypatch.setattr(figures.plt, "close", kept.append)
    label = "CMVAE + backdoor + kl_distill (D_s ∪ D_t) T_diverse/ugc+pgc s{}"
    history = [{"epoch": e, "loss": 1 / (e + 1), "val": 0.2 + 0.01 * e} for e in range(1, 9)]
    for n in (1, 7, 30):
        figures.curves_figure([(label.format(i), history) for i in range(n)], tmp_path / "c.png")
        fig = kept.pop()
        renderer = fig.canvas.get_renderer()
        box = fig.legends[0].get_window_extent(renderer)
        page = fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0, n
        for ax in fig.axes:  # the legend covers no panel
            assert box.y1 <= ax.get_tightbbox(renderer).y0, n
        close(fig)
