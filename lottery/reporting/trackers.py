"""Experiment trackers behind one small interface: TensorBoard event files or an MLflow file store, in the run dir.

A driver calls ``scalars(tag, step, values)`` for per-step numbers (validation loss and accuracy of one training
run) and ``summary(level, arm, mask, metrics)`` once per finished training run (its test accuracy, early-stop step
and, for tickets, the density of every layer, plus its validation curve and per-layer signal when it has them). The files live in the
run directory (``tensorboard/`` or ``mlruns/``), so they travel with it; both packages are optional extras, and
asking for one that is not installed is a one-line error naming the ``pip install``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lottery.errors import ConfigError, CorruptFileError
from lottery.registry import Registry

TRACKERS = Registry("tracker")


class Tracker:
    """No tracker: every call does nothing. Backends override ``_write`` and ``close``."""

    def _write(self, key: str, value: float, step: int) -> None:
        pass

    def close(self) -> None:
        pass

    def scalars(self, tag: str, step: int, values: dict) -> None:
        """``values`` (name -> number) at ``step`` under ``tag`` (e.g. ``level_02/ticket``); non-numbers skipped."""
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._write(f"{tag}/{name}", float(value), int(step))

    def summary(self, level: int, arm: str, mask, metrics: dict) -> None:
        """One finished training run: its curve as per-step scalars, its results at step = level."""
        tag = f"level_{level:02d}/{arm}"
        for step, val_loss, val_acc in metrics.get("curve") or []:
            self.scalars(tag, step, {"val_loss": val_loss, "val_accuracy": val_acc})
        self.scalars(f"summary/{arm}", level, {k: metrics.get(k) for k in ("test_accuracy", "early_stop_step")})
        if arm == "ticket":
            self.scalars("density", level, {"overall": mask.density, **mask.layer_density()})
        signal = metrics.get("signal") or {}
        for key in ("activation_std", "grad_norm"):  # per layer at each evaluation (lottery.layer_signal)
            for step, values in zip(signal.get("steps", []), signal.get(key, [])):
                self.scalars(f"{tag}/{key}", step, dict(zip(signal["layers"], values)))


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR``), via torch.utils.tensorboard."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--log tensorboard needs the tensorboard package: pip install tensorboard") from None
        log_dir = Path(run_dir) / "tensorboard"
        self.earlier = _logged_points(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def _write(self, key: str, value: float, step: int) -> None:
        if (key, step) in self.earlier:  # logged before an interruption; a resume repeats it (bit-identical)
            return
        self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


def _logged_points(log_dir: Path) -> set[tuple[str, int]]:
    """(tag, step) of every scalar in the event files a previous process left in ``log_dir``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    points = set()
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        try:
            for event in EventFileLoader(str(path)).Load():
                points.update((v.tag, event.step) for v in event.summary.value)
        except Exception:  # a record cut short by a kill: the points before it count
            continue
    return points


@TRACKERS.register("mlflow")
class MlflowTracker(Tracker):
    """One MLflow run per lottery run, in a local file store ``RUN_DIR/mlruns`` (``mlflow ui --backend-store-uri
    RUN_DIR/mlruns``); a resumed run goes on logging into the same MLflow run.

    A file store keeps the run directory self-contained and needs no database package; MLflow 3 keeps it in
    maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``, which this sets unless you set it yourself.
    """

    def __init__(self, run_dir: Path):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("--log mlflow needs the mlflow package: pip install mlflow") from None
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        run_dir = Path(run_dir)
        store = run_dir / "mlruns"
        try:
            self.client = MlflowClient(tracking_uri=store.resolve().as_uri())
            experiment = self.client.get_experiment_by_name("lottery")
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("lottery")
            runs = self.client.search_runs([experiment_id], filter_string=f"tags.run_dir = '{run_dir.name}'")
            self.run_id = runs[0].info.run_id if runs else self.client.create_run(
                experiment_id, run_name=run_dir.name, tags={"run_dir": run_dir.name}).info.run_id
        except Exception as e:  # a damaged meta.yaml (YAMLError), a store MLflow refuses (MlflowException), ...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CorruptFileError(f"{store} is a damaged MLflow store ({type(e).__name__}: {first}); move it "
                                   "aside to start a new one (the run's results are in results.json, not there)"
                                   ) from None

    def _write(self, key: str, value: float, step: int) -> None:
        self.client.log_metric(self.run_id, key, value, step=step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


@contextlib.contextmanager
def open_tracker(name: str | None, run_dir: Path):
    """The tracker ``name`` (None: no tracker) writing into ``run_dir``, closed on exit."""
    tracker = Tracker() if name is None else TRACKERS.get(name)(Path(run_dir))
    try:
        yield tracker
    finally:
        tracker.close()
