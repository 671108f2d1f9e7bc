"""Experiment trackers as LOGGERS components: Weights & Biases and MLflow (optional extras).

Neither is a dependency of the framework: ``pip install "framework[wandb]"`` / ``"framework[mlflow]"``
adds one, and selecting a tracker that is not installed fails when the run builds its writers,
saying what to install. Both default to local, offline storage inside the run directory, so a
sweep on a cluster node without network access still records everything::

    python tools/train_net.py +logger@loggers.wandb=WandbWriter           # <run>/wandb/offline-run-*
    python tools/train_net.py +logger@loggers.mlflow=MLflowWriter         # <run>/mlflow.db (SQLite)

``wandb sync <run>/wandb/offline-run-*`` uploads an offline run later; ``mlflow ui --backend-store-uri
sqlite:///<run>/mlflow.db`` browses the local store (give several jobs one store with
``loggers.mlflow.tracking_uri=sqlite:////abs/path/mlflow.db`` to compare them in one table). MLflow's
local store is a SQLite file rather than an ``mlruns/`` folder because MLflow 3 refuses its
folder store unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set (then ``file:///abs/mlruns`` works too).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, Literal, Optional, Sequence

from framework.errors import ConfigError
from framework.registry import LOGGERS
from framework.utils.events import get_event_storage
from framework.utils.writers import EventWriter, new_scalars

__all__ = ["WandbWriter", "MLflowWriter", "flatten_config"]


def _require(module: str, extra: str, writer: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{writer} needs the '{module}' package, which is not installed; install it with "
            f"pip install 'framework[{extra}]' (or pip install {extra}), or remove the logger from loggers"
        ) from None


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are kept as values (trackers show them as text)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


@LOGGERS.register()
class WandbWriter(EventWriter):
    """Log scalars and images to a Weights & Biases run, offline by default.

    Args:
        output_dir: the run directory (runtime); wandb's files go to ``output_dir/wandb``.
        project: the wandb project.
        run_name: the run's display name (default: wandb's own).
        mode: ``"offline"`` (files only; upload later with ``wandb sync``), ``"online"`` or
            ``"disabled"`` (no files at all).
        tags: tags of the run.
        window: smoothing window for scalars put with ``smoothing_hint=True``.
    """

    def __init__(
        self,
        output_dir: str,
        *,
        project: str = "framework",
        run_name: Optional[str] = None,
        mode: Literal["offline", "online", "disabled"] = "offline",
        tags: Sequence[str] = (),
        window: int = 20,
    ) -> None:
        wandb = _require("wandb", "wandb", "WandbWriter")
        self._wandb = wandb
        os.makedirs(output_dir, exist_ok=True)
        self._run = wandb.init(
            project=project,
            name=run_name,
            dir=output_dir,
            mode=mode,
            tags=list(tags),
            # Console capture would duplicate the framework's own log in wandb's files and fight
            # with pytest's capture; the log is already in the run directory.
            settings=wandb.Settings(console="off", silent=True),
            reinit="create_new",
        )
        self._window = window
        self._written: dict[str, int] = {}

    @property
    def run(self) -> Any:
        """The ``wandb`` run (e.g. ``run.dir``, ``run.summary``)."""
        return self._run

    def write(self) -> None:
        storage = get_event_storage()
        for itr, scalars in new_scalars(storage, self._window, self._written).items():
            self._run.log(scalars, step=itr)
        images = {}
        for name, img, itr in storage.images:
            images.setdefault(itr, {})[name] = self._wandb.Image(img.permute(1, 2, 0).cpu().numpy())
        for itr, batch in sorted(images.items()):
            self._run.log(batch, step=itr)

    def log_run(self, config: dict[str, Any], overrides: list[str], iteration: int) -> None:
        self._run.config.update({**config, "overrides": list(overrides)}, allow_val_change=True)

    def log_final(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        self._run.summary.update({**{f"final/{k}": v for k, v in metrics.items()}, **{f"hparam/{k}": v for k, v in hparams.items()}})

    def close(self) -> None:
        self._run.finish()


@LOGGERS.register()
class MLflowWriter(EventWriter):
    """Log scalars, the config (as params) and the overrides (as tags) to an MLflow run.

    Uses an explicit ``MlflowClient`` (no global active run), so several writers or runs in one
    process do not interfere.

    Args:
        output_dir: the run directory (runtime); the default store is ``output_dir/mlflow.db``.
        tracking_uri: an MLflow tracking URI (``sqlite:////abs/mlflow.db``, ``http://host:5000``, ...);
            ``None``: the local SQLite file ``output_dir/mlflow.db``.
        experiment_name: the MLflow experiment (created when missing).
        run_name: the run's name (default: the run directory's name).
        window: smoothing window for scalars put with ``smoothing_hint=True``.
    """

    def __init__(
        self,
        output_dir: str,
        *,
        tracking_uri: Optional[str] = None,
        experiment_name: str = "framework",
        run_name: Optional[str] = None,
        window: int = 20,
    ) -> None:
        tracking = _require("mlflow.tracking", "mlflow", "MLflowWriter")
        self._entities = _require("mlflow.entities", "mlflow", "MLflowWriter")
        uri = tracking_uri or "sqlite:///" + os.path.join(os.path.abspath(output_dir), "mlflow.db")
        self.tracking_uri = uri
        self._client = tracking.MlflowClient(tracking_uri=uri)
        experiment = self._client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(experiment_name)
        name = run_name or os.path.basename(os.path.abspath(output_dir))
        self.run_id: str = self._client.create_run(experiment_id, run_name=name).info.run_id
        self._window = window
        self._written: dict[str, int] = {}

    def write(self) -> None:
        storage = get_event_storage()
        now = int(time.time() * 1000)
        metrics = [
            self._entities.Metric(key=name, value=float(value), timestamp=now, step=int(itr))
            for itr, scalars in new_scalars(storage, self._window, self._written).items()
            for name, value in scalars.items()
        ]
        for start in range(0, len(metrics), 1000):  # MLflow's limit per log_batch
            self._client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def log_run(self, config: dict[str, Any], overrides: list[str], iteration: int) -> None:
        params = [self._entities.Param(k, str(v)[:6000]) for k, v in flatten_config(config).items()]
        for start in range(0, len(params), 100):  # MLflow's limit of params per log_batch
            self._client.log_batch(self.run_id, params=params[start : start + 100])
        if overrides:
            self._client.set_tag(self.run_id, "overrides", " ".join(overrides)[:5000])

    def log_final(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        for key, value in hparams.items():
            self._client.set_tag(self.run_id, f"hparam.{key}", str(value))

    def close(self) -> None:
        self._client.set_terminated(self.run_id)
