"""Experiment grids: expansion, the store, resuming after a kill, statistics, outputs, executors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from benchkit.cli import cli
from benchkit.errors import ConfigError
from benchkit.experiments.driver import choose_executor, run_grid
from benchkit.experiments.grid import load_grid, paper_table3
from benchkit.experiments.stats import sign_flip_p
from benchkit.experiments.store import Store
from benchkit.report.figures import dodge
from benchkit.report.tables import render
from benchkit.spec import RunSpec

GRIDS = Path(__file__).parent / "grids"
TINY = ["--preset", "tiny", "--epochs", "2", "-q"]
TINY_SPEC = RunSpec(preset="tiny", epochs=1)


def test_builtin_grids_expand_to_the_papers_runs():
    t3 = load_grid("table3", seeds=3)
    assert len(t3.rows) == 16 and t3.columns == [
        (t, s) for t in ("diverse", "matching") for s in ("ugc", "ugc+pgc")
    ]
    assert len(t3.jobs) == 16 * 4 * 3
    assert t3.controls == {"baseline": "CMVAE", "positive": "CMVAE (cf labels)"}
    assert t3.control_rows == {"Oracle (cf)", "CMVAE (cf labels)"}
    assert {"cf_recall@25", "bd_recall@25", "true_ndcg@25"} <= set(t3.metrics)
    assert {"Popularity", "CCA", "Backdoor (textbook)"} <= set(t3.rows)
    ips = {j.setting: j.debias for j in t3.jobs if j.row == "DebCM-IPS"}
    assert ips == {"ugc": "ips", "ugc+pgc": "ips+label_distill"}
    f3 = load_grid("fig3")
    assert {j.test_set for j in f3.jobs} == {"ratio:0.8", "ratio:0.7", "ratio:0.6", "ratio:0.5"}
    assert {"CMVAE", "Backdoor (textbook)", "CMVAE (cf labels)"} <= set(f3.rows)
    taste = load_grid("fig3_taste")
    assert {j.test_set for j in taste.jobs} == {"taste:0", "taste:0.5", "taste:1", "taste:1.5"}
    f4 = load_grid("fig4")
    debcm = [j for j in f4.jobs if j.row == "DebCM (D_s ∪ D_t)"]
    weights = sorted({j.overrides_dict()["kl_distill.weight"] for j in debcm})
    fixed = [j for j in f4.jobs if j.row == "CMVAE"]  # drawn across: one run per replicate
    assert (
        len({(j.test_set, j.replicate, j.overrides_dict().get("kl_distill.weight")) for j in fixed})
        == 6
    )
    assert weights == [0, 5e-7, 5e-6, 5e-5, 5e-4, 5e-3, 5e-2, 5e-1, 5, 50, 500] and f4.x_log
    assert f4.panels() == [("diverse",), ("matching",)] and f4.replicates == 3
    # Three replicates, each with its own training seed (and, from the base, its own world).
    assert {(j.replicate, j.seed) for j in f4.jobs} == {(0, 1234), (1, 2234), (2, 3234)}
    assert {j.spec(RunSpec(world_seed=1000)).world_seed for j in f4.jobs} == {1000, 1001, 1002}
    paper = paper_table3()
    assert paper["diverse"]["ugc"]["DebCM"] == [0.2887, 0.0990, 0.4047, 0.1164]
    assert set(paper["matching"]["ugc+pgc"]) == set(t3.rows) - {
        "Oracle (cf)",
        "CMVAE (cf labels)",
        "Popularity",
        "CCA",
        "Backdoor (textbook)",
    }


def test_replicates_expand_and_bad_counts_are_one_line(tmp_path):
    grid = load_grid(GRIDS / "tiny_table.toml", replicates=3, seeds=2)
    assert len(grid.jobs) == 2 * 2 * 3 * 2
    assert [j.replicate for j in grid.jobs] == sorted(j.replicate for j in grid.jobs)
    assert len({j.seed for j in grid.jobs}) == 6  # every replicate has its own seeds
    with pytest.raises(ConfigError, match="--replicates must be from 1"):
        load_grid(GRIDS / "tiny_table.toml", replicates=0)
    res = CliRunner().invoke(
        cli, ["table3", "--replicates", "0", "--preset", "tiny", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "--replicates" in res.output
    assert not (tmp_path / "o").exists()  # nothing written


def test_bad_grid_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "x"\nkind = "table"\nmetrics = ["recall@25"]\n[[rows]]\nlabel = "a"\n'
        'backbone = "cmvae"\ndebias = "none"\ncolour = "red"\n'
    )
    with pytest.raises(ConfigError, match=r"rows\[0\]: unknown key\(s\) colour"):
        load_grid(bad)
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_grid(bad)
    with pytest.raises(ConfigError, match="no such grid file"):
        load_grid(tmp_path / "missing.toml")


def test_sign_flip_test():
    import itertools

    assert sign_flip_p(np.zeros(10)) == 1.0
    # Exact for few pairs: against every sign pattern, enumerated by hand.
    d = np.array([0.3, 0.1, -0.05, 0.2, 0.25, 0.15])
    patterns = np.array(list(itertools.product([-1.0, 1.0], repeat=d.size)))
    exact = np.mean(np.abs(patterns @ d) >= abs(d.sum()) - 1e-12)
    assert sign_flip_p(d) == pytest.approx(exact)
    assert sign_flip_p(np.array([0.1, -0.1, 0.2, -0.2])) == pytest.approx(1.0)
    # Monte Carlo for many pairs: against the randomisation distribution itself.
    rng = np.random.default_rng(0)
    d = rng.normal(0.002, 0.05, 3000)
    flips = rng.choice([-1.0, 1.0], size=(20000, d.size))
    mc = np.mean(np.abs(flips @ d) >= abs(d.sum()))
    assert sign_flip_p(d) == pytest.approx(mc, abs=0.03)


def test_sign_flip_agrees_with_scipy():
    """The vectorised sign flip (the calibration benchmark's "old test") estimates what scipy's
    generic one does: the exact p-value equals scipy's; the Monte Carlo p-value agrees with its
    normal approximation within resampling error."""
    from scipy import stats as sp

    def total(x, axis=-1):
        return np.sum(x, axis=axis)

    d = np.array([0.3, 0.1, -0.05, 0.2, 0.25, 0.15, -0.12, 0.01])
    ref = sp.permutation_test((d,), total, permutation_type="samples", vectorized=True)
    assert sign_flip_p(d) == pytest.approx(ref.pvalue, abs=1e-12)
    # Many pairs: the null of Σ s_i d_i is then close to N(0, Σ d_i²); the Monte Carlo p-value
    # (2,000 patterns: standard error ≤ 0.023) must match its normal approximation.
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.0007, 0.0015, 0.003):
        d = rng.normal(shift, 0.05, 5000)
        normal = 2 * sp.norm.sf(abs(d.sum()) / np.sqrt(np.sum(d**2)))
        assert sign_flip_p(d, seed=1) == pytest.approx(normal, abs=0.06)
    assert sign_flip_p(np.full(50, 0.01)) == pytest.approx(2 / 2001)


def test_holm():
    from benchkit.experiments.stats import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.2, 0.001]) == pytest.approx([0.2, 0.002])


def _run_cli(args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "benchkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ},
        timeout=600,
    )


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux; none elsewhere)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited


def test_killed_grid_resumes_and_matches_an_uninterrupted_run(tmp_path):
    grid = str(GRIDS / "tiny_table.toml")
    full = _run_cli(["experiment", grid, *TINY, "--out", str(tmp_path / "full"), "--format", "csv"])
    assert full.returncode == 0, full.stderr
    killed_out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchkit.cli", "experiment", grid, *TINY, "--out", str(killed_out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "BENCHKIT_SHARE": "0"},  # trained, not reused from the full run
    )
    store = killed_out / "results.sqlite"
    deadline = time.time() + 300
    finished = 0
    while time.time() < deadline and proc.poll() is None:
        if store.exists():
            with sqlite3.connect(store) as con:
                try:
                    finished = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                except sqlite3.OperationalError:
                    finished = 0
            if finished >= 1:
                break
        time.sleep(0.2)
    workers = _children(proc.pid)  # the process executor's pool (the default on 2 cores)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= finished < 4, "the grid should be killed part-way"
    gone = time.time() + 30
    while time.time() < gone and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "workers outlived their killed driver"
    resumed = _run_cli(
        [
            "experiment",
            grid,
            "--preset",
            "tiny",
            "--epochs",
            "2",
            "--out",
            str(killed_out),
            "--format",
            "csv",
        ]
    )
    assert resumed.returncode == 0, resumed.stderr
    skipped = int(resumed.stderr.split(" taken from the store")[0].split(", ")[-1])
    assert skipped >= finished
    assert resumed.stdout == full.stdout  # the same table, to the last digit


def test_tables_figures_and_results_export(tmp_path):
    out = tmp_path / "res"
    runner = CliRunner()
    res = runner.invoke(
        cli, ["experiment", str(GRIDS / "tiny_figure.toml"), *TINY, "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "Recall@25" in res.stdout and "| w=0.05" in res.stdout
    for name in (
        "tiny_figure.png",
        "tiny_figure.pdf",
        "tiny_figure.md",
        "tiny_figure.tex",
        "tiny_figure.csv",
    ):
        assert (out / name).stat().st_size > 500 or name.endswith(("md", "csv", "tex"))
    frame = pd.read_csv(out / "tiny_figure.csv", dtype={"column": str})
    assert set(frame["column"]) == {"0.05", "5e-05"} and frame["seeds"].eq(1).all()
    res = runner.invoke(
        cli, ["results", "--out", str(out), "--export", str(tmp_path / "r.parquet")]
    )
    assert res.exit_code == 0 and pd.read_parquet(tmp_path / "r.parquet").shape[0] == 2
    res = runner.invoke(cli, ["results", "--out", str(out)])
    assert "tiny_figure" in res.stdout and "recall@25" in res.stdout
    runs = Store(out, read_only=True).frame()
    res = runner.invoke(cli, ["results", "--out", str(out), "--timing"])
    assert res.exit_code == 0, res.output
    lines = [
        line for line in res.stdout.splitlines() if line.startswith("| ") and "row" not in line
    ]
    assert len(lines) == len(runs) == 2  # one row label per x value of the figure
    for line, (_, run) in zip(lines, runs.iterrows(), strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        best, ran = float(cells[3]), float(cells[4])
        assert (best, ran) == (run["training.best_epoch"], run["training.epochs_run"])
        assert 1 <= best <= ran
    wall = runs["training.wall_seconds"].sum() / 60
    assert f"2 runs, {wall:.1f} min of run time in all" in res.stdout
    res = runner.invoke(cli, ["results", "--out", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "no results store" in res.stderr


def test_paper_numbers_and_formats(tmp_path, plugins):
    grid = load_grid(GRIDS / "tiny_table.toml")
    run = run_grid(grid, TINY_SPEC, str(tmp_path), quiet=True, plugins=plugins)
    paper = {"diverse": {"ugc": {"DebCM": [0.2887, 0.0990, 0.4047, 0.1164]}}}
    md = render(grid, run.summary, "md", paper)
    assert "(0.2887)" in md and "**" in md
    latex = render(grid, run.summary, "latex", paper)
    assert "\\textbf{" in latex and "\\begin{tabular}" in latex
    csv = render(grid, run.summary, "csv", paper)
    assert "paper" in csv.splitlines()[0]


def test_process_executor_matches_local(tmp_path, plugins):
    grid = load_grid(GRIDS / "tiny_figure.toml")
    one_thread = TINY_SPEC.replace(threads=1)
    local = run_grid(grid, one_thread, str(tmp_path / "a"), quiet=True, plugins=plugins)
    pool = run_grid(
        grid,
        TINY_SPEC,
        str(tmp_path / "b"),
        quiet=True,
        executor="process",
        jobs=2,
        plugins=plugins,
    )
    # Two workers on two cores: one thread per run, the same keys as local runs on one thread,
    # and the same numbers to the last bit.
    assert local.keys == pool.keys
    for key in local.keys:
        assert local.results[key]["metrics"] == pool.results[key]["metrics"]
        assert pool.results[key]["record"]["training"]["threads"] == 1


def test_auto_executor_runs_one_process_per_core_on_a_cpu(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert choose_executor("auto", None, "cpu") == ("process", 2)
    assert choose_executor("auto", 1, "auto") == ("process", 1)
    assert choose_executor("auto", None, "cuda:0") == ("process", 2)  # no CUDA: the cores
    assert choose_executor("auto", None, "cpu", own_plugins=True) == ("local", 1)
    assert choose_executor("local", 3, "cpu") == ("local", 1)
    assert choose_executor("ray", None, "cpu") == ("ray", 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert choose_executor("auto", None, "cpu") == ("process", 4)  # a copy of the data each
    assert choose_executor("process", 16, "cpu") == ("process", 16)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert choose_executor("auto", None, "cpu") == ("local", 1)


def test_runs_share_the_gpus_several_at_a_time(monkeypatch):
    import torch

    from benchkit.executors.process import worker_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert choose_executor("auto", None, "auto") == ("process", 8)  # 4 runs on each of 2 GPUs
    assert choose_executor("auto", None, "cuda:1") == ("process", 4)  # one named GPU
    assert choose_executor("auto", 3, "cuda") == ("process", 3)
    assert choose_executor("auto", None, "cpu") == ("process", 4)  # runs on the CPU: the cores
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert choose_executor("auto", None, "auto") == ("process", 2)  # a core for each run
    # workers spread round robin over the GPUs, unless the runs name theirs
    assert [worker_gpu(slot, "auto", 2) for slot in range(4)] == ["0", "1", "0", "1"]
    assert worker_gpu(1, "cuda:1", 2) is None and worker_gpu(3, "auto", 1) is None


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="reads /proc")
def test_a_pinned_worker_sees_its_gpu_alone(monkeypatch):
    import multiprocessing as mp
    from pathlib import Path

    from benchkit.executors.process import _Worker

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    worker = _Worker(mp.get_context("spawn"), slot=1, gpu="1")
    try:
        environ = Path(f"/proc/{worker.process.pid}/environ").read_bytes().split(b"\0")
        assert b"CUDA_VISIBLE_DEVICES=1" in environ
        assert "CUDA_VISIBLE_DEVICES" not in os.environ  # the driver's own is left as it was
    finally:
        worker.stop(now=False)


def test_ray_executor(tmp_path, plugins):
    pytest.importorskip("ray")
    grid = load_grid(GRIDS / "tiny_figure.toml")
    local = run_grid(grid, TINY_SPEC.replace(threads=1), str(tmp_path / "a"), quiet=True)
    on_ray = run_grid(grid, TINY_SPEC, str(tmp_path / "b"), quiet=True, executor="ray", jobs=2)
    # A local Ray cluster of two workers: one thread per run, so the same keys as local runs on
    # one thread, and the same numbers (tolerance: none; the same code on the same machine).
    assert on_ray.ran == 2 and local.keys == on_ray.keys
    for key in local.keys:
        assert local.results[key]["metrics"] == on_ray.results[key]["metrics"]


def test_paired_tests_only_compare_rows_on_the_same_test_videos():
    from benchkit.experiments.grid import Grid, make_job
    from benchkit.experiments.stats import summarise
    from benchkit.interfaces import RankInfo

    def result(rows, greater):
        ranks = RankInfo(
            n_greater=np.array(greater),
            n_equal=np.zeros(4, dtype=np.int64),
            weights=np.full(4, 0.25),
            n_candidates=101,
        )
        return {
            "metrics": {"recall@1": float(np.mean(np.array(greater) < 1))},
            "ranks": ranks,
            "record": {"dataset": {"eval_rows": rows}},
        }

    jobs = [
        make_job(r, ("c",), replicate=rep, seed=1234 + 1000 * rep)
        for r in ("a", "b", "c")
        for rep in (0, 1)
    ]
    grid = Grid("g", "", "table", "paper", ["recall@1"], jobs, ["a", "b", "c"], columns=[("c",)])
    results = {
        "a0": result("w0", [0, 0, 0, 5]),
        "a1": result("w1", [0, 0, 0, 5]),
        "b0": result("w0", [0, 5, 5, 5]),
        "b1": result("w1", [5, 5, 5, 5]),
        "c0": result("other0", [5, 5, 5, 5]),
        "c1": result("other1", [5, 5, 5, 5]),
    }
    summary = summarise(grid, ["a0", "a1", "b0", "b1", "c0", "c1"], results)
    a, b, c = (summary[(r, ("c",), "recall@1")] for r in "abc")
    assert a.best and a.compared_with == "b" and a.p_value is not None
    assert a.difference is not None and a.difference.units == 2
    assert a.difference.unit == "replicates" and a.difference.effect == pytest.approx(0.625)
    assert b.compared_with == "a" and b.p_value == a.p_value
    assert c.p_value is None  # ranked on other test videos: no paired test


def test_grid_options_reach_every_run(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "experiment",
            str(GRIDS / "tiny_figure.toml"),
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "-q",
            "--out",
            str(tmp_path),
            "--precision",
            "fp32",
            "--features",
            "float16",
        ],
    )
    assert res.exit_code == 0, res.output
    frame = pd.read_sql_query(
        "SELECT record FROM runs", sqlite3.connect(tmp_path / "results.sqlite")
    )
    records = [__import__("json").loads(r) for r in frame["record"]]
    assert {r["training"]["precision"] for r in records} == {"fp32"}
    assert all(r["training"]["epochs_run"] == 1 for r in records)


def test_local_ray_cluster_listens_on_loopback_only(tmp_path):
    ray = pytest.importorskip("ray")
    from benchkit.executors.ray import RayExecutor

    ex = RayExecutor(jobs=1, quiet=True)
    try:
        ex._start(threads=1)
        assert ray.util.get_node_ip_address() == "127.0.0.1"
    finally:
        ex.close()
    assert not ray.is_initialized()


def test_ray_grid_from_the_command_line_is_silent_with_quiet(tmp_path):
    pytest.importorskip("ray")
    grid = str(GRIDS / "tiny_figure.toml")
    res = _run_cli(
        [
            "experiment",
            grid,
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--executor",
            "ray",
            "--jobs",
            "2",
            "-q",
            "--out",
            str(tmp_path),
        ]
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # no Ray log lines, no progress bar
    assert "| w=0.05" in res.stdout


def test_latex_tables_compile(tmp_path, plugins):
    """The written LaTeX is valid: booktabs, escaped labels, math for the paper's notation."""
    import shutil

    grid = load_grid(GRIDS / "tiny_table.toml")
    run = run_grid(grid, TINY_SPEC, str(tmp_path / "out"), quiet=True, plugins=plugins)
    paper = {"diverse": {"ugc": {"DebCM": [0.2887, 0.0990, 0.4047, 0.1164]}}}
    table = render(grid, run.summary, "latex", paper)
    assert "\\toprule" in table and "$D_s \\cup D_t$" in table and "D_s ∪" not in table
    assert "{llrrrrrrrr}" in table  # labels left, numbers right
    assert "\\multicolumn{4}{c}{$D_s$}" in table and "\\cmidrule" in table  # two header levels
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (CI installs it)")
    doc = tmp_path / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage[margin=1cm,landscape]"
        "{geometry}\\begin{document}\\tiny\n" + table + "\\end{document}\n"
    )
    res = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


@pytest.mark.parametrize("log", [True, False])
def test_dodged_points_stay_at_their_x(log):
    """Series drawn side by side move by under 1% of the axis, in decades on a log axis: Fig. 4's
    sweep 5e-7 … 5e2 once had its small weights drawn at x ≈ 2."""
    values = [5e-7, 5e-5, 5e-3, 5e-1, 5e1, 5e2] if log else [0.5, 0.6, 0.7, 0.8]
    for n in (1, 2, 5):
        for i in range(n):
            for x in values:
                got = dodge(x, i, n, values, log)
                if log:
                    assert got > 0 and abs(np.log10(got / x)) <= 0.02 * np.log10(1e9) + 1e-12
                else:
                    assert abs(got - x) <= 0.02 * (0.8 - 0.5) + 1e-12
            drawn = [dodge(x, i, n, values, log) for x in values]
            assert drawn == sorted(drawn)  # the order of the sweep is kept
    assert dodge(values[0], 0, 1, values, log) == values[0]  # one series: not moved
