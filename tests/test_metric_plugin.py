"""A metric added as one module (``tests/metric_plugin.py``, installed as a third party's
distribution) is reported by a run, ranked in its declared direction by the tables, and optimised
in that direction by tuning: nothing else names it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from benchkit.cli import cli

MODULE = Path(__file__).with_name("metric_plugin.py").read_text()
METRICS = "protocol.metrics=[recall,ndcg,mean_rank]"
TINY = ["--preset", "tiny", "--epochs", "1"]


def _install(install_plugin) -> None:
    install_plugin("bk-meanrank", {"mean_rank": "bk_meanrank"}, {"bk_meanrank": MODULE})


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_run_reports_the_plugin_metric(install_plugin):
    _install(install_plugin)
    out = json.loads(_ok(["run", *TINY, "--set", METRICS, "--set", "latent_dim=16", "--json"]))
    values = [out["metrics"][f"mean_rank@{k}"] for k in (10, 25)]
    assert all(1.0 <= v <= k + 1 for v, k in zip(values, (10, 25), strict=True))
    assert values[0] < values[1]  # capped at K + 1: a smaller K caps lower
    assert "mean_rank" in _ok(["list", "metrics"])


def test_tables_rank_the_plugin_metric_lowest_first(install_plugin, tmp_path):
    """The bold row of the mean-rank column is the one with the lowest mean rank; a table that
    read every metric as higher-is-better would make the other bold."""
    _install(install_plugin)
    grid = tmp_path / "g.toml"
    grid.write_text(
        'name = "g"\ntitle = "g"\nkind = "table"\nprotocol = "paper"\n'
        'metrics = ["recall@25", "mean_rank@25"]\ntest_sets = ["random"]\nsettings = ["ugc"]\n'
        + "".join(
            f'\n[[rows]]\nlabel = "{bb}"\nbackbone = "{bb}"\ndebias = "none"\n'
            'set = { "protocol.metrics" = ["recall", "ndcg", "mean_rank"] }\n'
            for bb in ("cmvae", "random")
        )
    )
    out = tmp_path / "out"
    _ok(["experiment", str(grid), *TINY, "-q", "--executor", "local", "--out", str(out)])
    frame = pd.read_csv(out / "g.csv").set_index("row")
    ranks = frame["mean_rank@25"]
    assert ranks.nunique() == 2
    assert frame["mean_rank@25_best"].to_dict() == {r: r == ranks.idxmin() for r in frame.index}
    assert "MeanRank@25" in (out / "g.md").read_text()


def test_tuning_minimises_a_lower_is_better_metric(install_plugin, tmp_path):
    import optuna

    _install(install_plugin)
    args = ["tune", *TINY, "--trials", "3", "--metric", "mean_rank@25", "--set", METRICS]
    _ok([*args, "--set", "latent_dim=16", "--out", str(tmp_path), "-q"])
    storage = f"sqlite:///{tmp_path / 'tune.sqlite'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    done = [t.value for t in study.trials if t.value is not None]
    assert study.best_value == min(done)
