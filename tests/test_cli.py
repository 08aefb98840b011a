"""The command line, through click's CliRunner, as a user types it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from benchkit.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(("protocol", "chance_r25"), [("paper", 25 / 101), ("full", 25 / 120)])
def test_cmvae_clearly_beats_random_on_tiny(protocol, chance_r25):
    res = invoke(
        "run",
        "--backbone",
        "cmvae",
        "--debias",
        "none",
        "--preset",
        "tiny",
        "--protocol",
        protocol,
        "--json",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["method"] == {
        "backbone": "cmvae",
        "debias": "none",
        "setting": "ugc",
        "strategies": ["none"],
    }
    assert out["hparams"]["backbone"]["variant"] == "paper"
    assert out["dataset"]["name"] == "synth-tiny" and len(out["dataset"]["fingerprint"]) == 16
    assert out["protocol"]["name"] == protocol and len(out["protocol"]["hash"]) == 16
    base = {f"{m}@{k}" for m in ("recall", "ndcg") for k in (10, 15, 20, 25)}
    oracle = {
        f"{m}@{k}"
        for p in ("cf", "bd", "fit")
        for m in (f"{p}_recall", f"{p}_ndcg")
        for k in (10, 15, 20, 25)
    } | {f"{m}@{k}" for m in ("true_ndcg", "bias_amp") for k in (10, 15, 20, 25)}
    assert set(out["metrics"]) == base | oracle
    # Chance under the expected-rank tie policy is K / #candidates; demand a wide margin above it.
    assert out["metrics"]["recall@25"] > chance_r25 + 0.15
    assert out["metrics"]["recall@10"] > 10 / 25 * chance_r25 + 0.1
    assert out["training"]["pairs_per_second"] > 0


def test_table_output_and_overrides():
    res = invoke(
        "run",
        "--preset",
        "tiny",
        "--epochs",
        "2",
        "--set",
        "latent_dim=16",
        "--set",
        "variant=reference",
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    assert "cmvae + none" in res.stdout and "Recall" in res.stdout and "NDCG" in res.stdout
    assert "|  25 |" in res.stdout
    assert res.stderr == ""  # --quiet: no progress bar, no log lines


def test_progress_bar_goes_to_stderr():
    res = invoke("run", "--preset", "tiny", "--epochs", "2", "--set", "latent_dim=8")
    assert res.exit_code == 0
    assert "cmvae+none" in res.stderr and "epoch" in res.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backbone", "nosuch"], "unknown backbone 'nosuch'; installed: cca, cevar, cmvae"),
        (["--debias", "nosuch"], "unknown strategy 'nosuch'; installed: backdoor, calibration"),
        (["--protocol", "sampled"], "unknown protocol 'sampled'; installed: full, paper"),
        (["--set", "margn=0.1"], "unknown hyperparameter(s) margn"),
        (["--debias", "none+none"], "appears twice"),
        (["--set", "protocol.ks=[10]"], "keep it, e.g. --set protocol.ks=[10, 25]"),
    ],
)
def test_bad_names_give_one_line_and_exit_2(args, needle):
    res = invoke("run", "--preset", "tiny", *args)
    assert res.exit_code == 2
    assert needle in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args", [["--seed", "-1"], ["--epochs", "0"], ["--epochs", "ten"], ["--set", "novalue"]]
)
def test_bad_options_are_usage_errors(args):
    res = invoke("run", "--preset", "tiny", *args)
    assert res.exit_code == 2
    assert "Usage:" in res.stderr


def test_list_and_plugins():
    res = invoke("list", "backbones")
    assert res.exit_code == 0 and "cmvae" in res.stdout and "CMVAE" in res.stdout
    res = invoke("list", "strategies")
    assert "none" in res.stdout
    res = invoke("plugins")
    assert "backbone cmvae" in res.stdout and "benchkit" in res.stdout


def test_broken_plugin_is_reported_and_does_not_break_run(install_plugin):
    install_plugin(
        "broken-dist",
        {"broken": "broken_mod"},
        {"broken_mod": "raise RuntimeError('kaput on import')\n"},
    )
    res = invoke("plugins")
    assert res.exit_code == 0
    assert "failed to load" in res.stdout and "kaput on import" in res.stdout
    res = invoke("run", "--preset", "tiny", "--epochs", "1", "--quiet", "--json")
    assert res.exit_code == 0 and "metrics" in json.loads(res.stdout)
