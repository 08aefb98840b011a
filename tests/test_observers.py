"""Watching runs: the on_run_event hook, histories in the record, and the MLflow logger."""

from __future__ import annotations

import json
import types

import pytest

from benchkit import hookimpl
from benchkit.api import run
from benchkit.plugins import load_plugins


def test_observers_see_every_epoch_and_the_end(tiny):
    seen: list[tuple[str, dict]] = []

    def on_run_event(event, run, payload):
        seen.append((event, payload))

    mod = types.ModuleType("watcher")
    mod.on_run_event = hookimpl(on_run_event)
    plugins = load_plugins(extra=[("watcher", mod)])
    res = run("cmvae", dataset=tiny, epochs=3, patience=5, plugins=plugins)
    events = [e for e, _ in seen]
    assert events == ["run_start", "epoch_end", "epoch_end", "epoch_end", "run_end"]
    epochs = [p for e, p in seen if e == "epoch_end"]
    assert [p["epoch"] for p in epochs] == [1.0, 2.0, 3.0]
    assert all({"loss", "val", "seconds"} <= set(p) for p in epochs)
    assert seen[-1][1]["metrics"] == res.metrics
    assert res.to_dict()["history"] == res.history and len(res.history) == 3


def test_a_failing_observer_never_stops_a_run(tiny):
    def on_run_event(event, run, payload):
        raise RuntimeError("the tracker is down")

    mod = types.ModuleType("flaky")
    mod.on_run_event = hookimpl(on_run_event)
    said: list[str] = []
    res = run(
        "cmvae",
        dataset=tiny,
        epochs=2,
        plugins=load_plugins(extra=[("flaky", mod)]),
        log=said.append,
    )
    assert res.metrics["recall@25"] > 0
    assert sum("observer 'flaky' failed" in m for m in said) == 1


def test_the_mlflow_logger_records_runs(tiny, tmp_path, monkeypatch, plugins):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("BENCHKIT_MLFLOW", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("BENCHKIT_MLFLOW_EXPERIMENT", "tests")
    res = run("cmvae", "ips", dataset=tiny, epochs=2, patience=5, plugins=plugins)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    exp = client.get_experiment_by_name("tests")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.data.tags["benchkit.key"] == res.key
    assert found.data.params["spec.debias"] == "ips"
    assert found.data.params["hp.strategies.ips.clip"] == "0.1"
    assert found.data.metrics["recall_at_25"] == pytest.approx(res.metrics["recall@25"])
    history = client.get_metric_history(found.info.run_id, "loss")
    assert [h.step for h in history] == [1, 2]
    assert json.loads(json.dumps(found.data.metrics))  # plain numbers
