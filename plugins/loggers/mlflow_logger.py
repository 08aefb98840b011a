"""Log every run to MLflow: ``pip install 'benchkit[mlflow]'`` and set ``BENCHKIT_MLFLOW`` to a
tracking URI — a folder (``file:./mlruns``) or a server (``http://host:5000``). The experiment is
``BENCHKIT_MLFLOW_EXPERIMENT`` (default ``benchkit``). Each run becomes an MLflow run named after
its method, with the spec and every hyperparameter as parameters, each epoch's loss, terms,
shares and validation score as step metrics, and the test metrics at the end. Without the variable
this plugin does nothing; without MLflow installed it says so once on the run's log.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

from benchkit import hookimpl
from benchkit.errors import ConfigError

ENV = "BENCHKIT_MLFLOW"
_ACTIVE: dict[str, Any] = {}


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            f"{ENV} is set but MLflow is not installed: pip install 'benchkit[mlflow]'"
        ) from None
    return mlflow


def _name(key: str) -> str:
    """MLflow's names allow letters, digits, '_', '-', '.', ' ' and '/': recall@25 → recall_at_25."""
    return key.replace("@", "_at_")


def _metrics(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {
        _name(prefix + k): float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flat(f"{prefix}{k}.", v))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


@hookimpl
def on_run_event(event: str, run: dict[str, Any], payload: dict[str, Any]) -> None:
    uri = os.environ.get(ENV)
    if not uri:
        return
    mlflow = _mlflow()
    if event == "run_start":
        if uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder, on purpose
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment(os.environ.get(f"{ENV}_EXPERIMENT", "benchkit"))
        if mlflow.active_run() is not None:  # a run that died before its end
            mlflow.end_run(status="FAILED")
        active = mlflow.start_run(run_name=f"{run['backbone']}+{run['debias']} s{run['seed']}")
        _ACTIVE[run["key"]] = active
        mlflow.set_tags({"benchkit.key": run["key"], "benchkit.dataset": run["dataset"]})
        mlflow.log_params(_flat("spec.", payload))
    elif event == "epoch_end" and run["key"] in _ACTIVE:
        step = int(payload.get("epoch", 0))
        mlflow.log_metrics(_metrics({k: v for k, v in payload.items() if k != "epoch"}), step=step)
    elif event == "run_end" and run["key"] in _ACTIVE:
        mlflow.log_params(_flat("hp.", payload.get("hparams", {})))
        mlflow.log_metrics(_metrics(payload.get("metrics", {})))
        mlflow.log_metrics(_metrics(payload.get("training", {}), "training."))
        mlflow.end_run()
        _ACTIVE.pop(run["key"], None)
