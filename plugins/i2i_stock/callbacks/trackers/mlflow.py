"""MLflow: the recipe as params, every log point as metrics, report and generators as artifacts; --resume continues
the same MLflow run."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from i2i.api import Option, TrainingContext
from i2i_stock.callbacks.trackers.base import Tracker, flat_recipe

#: how a training outcome ends the MLflow run
STATUS = {"finished": "FINISHED", "stopped": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
#: MLflow retries a request to a server for minutes by default; a tracker that blocks training that long is worse
#: than one that gives up (the user's own MLFLOW_HTTP_REQUEST_* settings win)
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class MLflow(Tracker):
    """Logs the run to MLflow (default: a local store in the run folder's mlruns/, for `mlflow ui`)."""

    name = "mlflow"
    packages = ("mlflow", "sqlalchemy", "alembic")  # the local store is an SQLite database
    options = (Option("tracking_uri", str, "", "the tracking server or store (e.g. http://host:5000); empty: the"
                      " SQLite store RUN/mlruns/mlflow.db with artifacts in RUN/mlruns/artifacts"),
               Option("experiment", str, "i2i", "the experiment the run goes in (created if missing)"),
               Option("run_name", str, "", "the MLflow run's name; empty: the run folder's name"))

    def __init__(self, tracking_uri: str = "", experiment: str = "i2i", run_name: str = "") -> None:
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.client, self.run_id = None, None

    def start(self, context: TrainingContext) -> None:
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not the store's "creating tables" on every run
        store = context.folder.path.resolve() / "mlruns"
        uri = self.tracking_uri
        if not uri:
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store / 'mlflow.db'}"
        elif uri.startswith(("http://", "https://")):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        client = MlflowClient(tracking_uri=uri)
        if self.run_id is not None:  # --resume: the same MLflow run goes on
            client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = client.get_experiment_by_name(self.experiment)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(
                self.experiment, artifact_location=None if self.tracking_uri else (store / "artifacts").as_uri())
            run = client.create_run(experiment_id, run_name=self.run_name or context.folder.path.resolve().name)
            self.run_id = run.info.run_id
            params = _params(context.recipe.tables)
            for first in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                client.log_batch(self.run_id, params=params[first:first + 100])
        client.log_text(self.run_id, context.recipe.to_toml(), context.folder.recipe_file.name)
        self.client = client

    def log(self, context: TrainingContext, step: int, values: dict[str, float], sample: Path | None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])

    def end(self, context: TrainingContext, outcome: str) -> None:
        folder = context.folder
        if folder.report_file.is_file():  # the page, with the images it shows
            for path in (folder.report_file, folder.losses_plot):
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path), "report")
            if folder.samples_dir.is_dir():
                self.client.log_artifacts(self.run_id, str(folder.samples_dir), f"report/{folder.samples_dir.name}")
        if (checkpoint := folder.newest_checkpoint()) is not None:
            for network in folder.read_state(checkpoint)["generators"].values():
                self.client.log_artifact(self.run_id, str(checkpoint / f"{network}.safetensors"), "generators")
        self.client.set_terminated(self.run_id, STATUS[outcome])

    def state_dict(self) -> dict[str, Any]:
        """The MLflow run's id, so --resume continues it."""
        return {"run_id": self.run_id or ""}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id") or None


def _params(tables: dict[str, Any]) -> list[Any]:
    """The resolved recipe as MLflow params ("table.key" = the value as a string, cut to MLflow's length limit)."""
    from mlflow.entities import Param
    from mlflow.utils import validation

    limit = getattr(validation, "MAX_PARAM_VAL_LENGTH", 500)
    return [Param(key, str(value)[:limit]) for key, value in flat_recipe(tables).items()]
