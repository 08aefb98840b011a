"""A table's speed as a share of the machine: every run counts its FLOPs, a grid runs its longest
runs first and says how long its workers sat idle at the end, and ``results --timing`` reports the
grid's utilisation."""

from __future__ import annotations

import json

from click.testing import CliRunner

from benchkit.api import run
from benchkit.cli import cli
from benchkit.experiments.driver import idle_tail, run_grid
from benchkit.experiments.grid import load_grid
from benchkit.experiments.store import Store
from benchkit.spec import RunSpec


def test_a_run_counts_its_work(tiny):
    res = run("cmvae", "none", dataset=tiny, epochs=2, threads=1)
    flops = res.training["flops"]
    pairs = res.training["train_pairs"]
    assert flops["per_pair"] > 0 and flops["validation"] > 0 and flops["test"] > 0
    assert flops["train"] == flops["per_pair"] * pairs * res.training["epochs_run"]
    assert flops["companions"] == 0  # a plain run trains nothing beside its model
    assert flops["total"] == flops["train"] + flops["validation"] + flops["test"]
    # A latent twice as wide costs more per pair: the count reads the model, not a constant.
    wide = run("cmvae", "none", dataset=tiny, epochs=1, threads=1, overrides={"latent_dim": 256})
    assert wide.training["flops"]["per_pair"] > flops["per_pair"]


def test_idle_tail_counts_each_worker_after_its_last_run():
    assert idle_tail([1.0, 2.0, 5.0, 6.0], 2) == 1.0  # one worker waits from 5 to 6
    assert idle_tail([3.0], 4) == 0.0
    assert idle_tail([], 2) == 0.0


def _grid(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(
        'name = "g"\ntitle = "g"\nkind = "table"\nprotocol = "paper"\nmetrics = ["recall@25"]\n'
        'test_sets = ["random"]\nsettings = ["ugc"]\n'
        '\n[[rows]]\nlabel = "Chance"\nbackbone = "random"\ndebias = "none"\n'
        '\n[[rows]]\nlabel = "CEVAR"\nbackbone = "cevar"\ndebias = "none"\n'
    )
    return load_grid(path)


def _finish_order(out) -> list[str]:
    frame = Store(str(out), read_only=True).frame("g")
    return list(frame.sort_values("training.finished_at")["row_label"])


def test_grids_run_longest_first_and_table_order_on_request(tmp_path):
    base = RunSpec(preset="tiny", epochs=1)
    longest = run_grid(_grid(tmp_path), base, str(tmp_path / "a"), executor="local", quiet=True)
    assert _finish_order(tmp_path / "a") == ["CEVAR", "Chance"]  # listed second, runs first
    assert longest.idle_tail == 0.0  # one worker: nobody waits
    run_grid(
        _grid(tmp_path), base, str(tmp_path / "b"), executor="local", quiet=True, order="table"
    )
    assert _finish_order(tmp_path / "b") == ["Chance", "CEVAR"]


def test_results_timing_reports_flops_and_utilisation(tmp_path):
    out = tmp_path / "a"
    run_grid(
        _grid(tmp_path), RunSpec(preset="tiny", epochs=1), str(out), executor="local", quiet=True
    )
    result = CliRunner().invoke(cli, ["results", "--out", str(out), "--timing"])
    assert result.exit_code == 0, result.output
    assert "GFLOP/run" in result.output and "GFLOP/s" in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("g: "))
    assert "TFLOP counted in 2 runs" in line and "matmul peak" in line
    record = Store(str(out), read_only=True).frame("g")["training.flops"].map(json.loads)
    assert all(r["total"] > 0 for r in record)
