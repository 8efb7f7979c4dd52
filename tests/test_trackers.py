"""Trackers: the TensorBoard event files and the MLflow store, read back with each library's own reader."""
import sys

import pytest

import lottery as lt
from lottery.cli import main
from lottery.errors import ConfigError
from lottery.reporting.trackers import open_tracker
from tests.engine_helpers import tiny
from tests.ticket_helpers import Loop, make_model


@pytest.mark.slow
def test_tensorboard_events_of_run_imp(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    cfg = tiny(tmp_path, levels=2, steps=40, log="tensorboard")
    results = lt.run_imp(cfg)
    events = event_accumulator.EventAccumulator(str(tmp_path / "runs" / cfg.run_name() / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for arm in ("ticket", "reinit", "random_mask"):
        assert {f"level_01/{arm}/val_loss", f"level_01/{arm}/val_accuracy", f"summary/{arm}/test_accuracy"} <= tags
    assert {"density/overall", "density/fc1.weight", "density/fc3.weight"} <= tags
    curve = results["levels"][1]["curve"]
    logged = [(e.step, e.value) for e in events.Scalars("level_01/ticket/val_accuracy")]
    assert [s for s, _ in logged] == [p[0] for p in curve]
    assert [v for _, v in logged] == pytest.approx([p[2] for p in curve], abs=1e-6)
    accs = [(e.step, e.value) for e in events.Scalars("summary/random_mask/test_accuracy")]
    assert accs == [(level, pytest.approx(results["levels"][level]["controls"]["random_mask"]["test_accuracy"]))
                    for level in (1, 2)]
    dens = [(e.step, e.value) for e in events.Scalars("density/overall")]
    assert dens == [(e["level"], pytest.approx(e["density"])) for e in results["levels"]]
    signal = results["levels"][0]["signal"]  # the per-layer signal, layer by layer at each evaluation
    stds = [(e.step, e.value) for e in events.Scalars("level_00/ticket/activation_std/fc2")]
    assert stds == [(step, pytest.approx(v[1], rel=1e-6)) for step, v in zip(signal["steps"], signal["activation_std"])]
    assert "level_01/reinit/grad_norm/fc1" in tags


@pytest.mark.slow
def test_mlflow_store_of_find_tickets_and_resume_into_the_same_run(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    fail = {"armed": True}
    loop = Loop(steps=21)

    def flaky(model, mask, run):
        if run.level == 1 and fail.pop("armed", False):
            raise RuntimeError("killed")
        return loop(model, mask, run)

    kw = dict(out=str(tmp_path), levels=1, log="mlflow", progress=False)
    with pytest.raises(RuntimeError):
        lt.find_tickets(make_model(), flaky, **kw)
    results = lt.find_tickets(make_model(), flaky, **kw)
    client = MlflowClient(tracking_uri=(tmp_path / results["run_dir"] / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("lottery")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the resumed process logged into the run the first one started
    run_id = runs[0].info.run_id
    history = client.get_metric_history(run_id, "summary/ticket/test_accuracy")
    assert sorted((m.step, m.value) for m in history) == [
        (e["level"], pytest.approx(e["test_accuracy"])) for e in results["levels"]]
    steps = sorted(m.step for m in client.get_metric_history(run_id, "level_01/reinit/train_loss"))
    assert steps == [0, 10, 20]  # run.log from inside the loop
    assert client.get_metric_history(run_id, "density/fc1.weight")[-1].value == pytest.approx(
        results["levels"][1]["layer_density"]["fc1.weight"])


@pytest.mark.parametrize("name, module, hint", [("tensorboard", "torch.utils.tensorboard", "pip install tensorboard"),
                                                ("mlflow", "mlflow.tracking", "pip install mlflow")])
def test_a_tracker_that_is_not_installed_is_one_line(tmp_path, monkeypatch, name, module, hint):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=f"--log {name} needs the .* package: {hint}"):
        with open_tracker(name, tmp_path):
            pass


def test_unknown_tracker_on_the_command_line(capsys):
    assert main(["run", "--log", "wandb", "--out", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "unknown tracker 'wandb'" in err or ("wandb" in err and "tensorboard" in err)


def _interrupted_then_resumed(tmp_path, log):
    """find_tickets killed in level 1's ticket after its loop logged (run.log), then started again."""
    fail = {"armed": True}
    loop = Loop(steps=21)

    def flaky(model, mask, run):
        out = loop(model, mask, run)
        if run.level == 1 and fail.pop("armed", False):
            raise KeyboardInterrupt
        return out

    kw = dict(out=str(tmp_path), levels=1, log=log, progress=False)
    with pytest.raises(KeyboardInterrupt):
        lt.find_tickets(make_model(), flaky, **kw)
    return lt.find_tickets(make_model(), flaky, **kw)


def test_tensorboard_keeps_no_duplicate_points_after_a_resume(tmp_path):
    loader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")
    results = _interrupted_then_resumed(tmp_path, "tensorboard")
    files = sorted((tmp_path / results["run_dir"] / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per process
    points = [(v.tag, e.step) for f in files for e in loader.EventFileLoader(str(f)).Load() for v in e.summary.value]
    assert ("level_01/ticket/train_loss", 20) in points
    assert len(points) == len(set(points)), sorted(p for p in points if points.count(p) > 1)[:5]


@pytest.mark.slow
def test_a_damaged_mlflow_store_is_one_line_on_resume(tmp_path, capsys):
    pytest.importorskip("mlflow")
    from lottery.errors import CorruptFileError

    kw = dict(out=str(tmp_path), levels=1, log="mlflow", progress=False)
    results = lt.find_tickets(make_model(), Loop(steps=5), **kw)
    for meta in (tmp_path / results["run_dir"] / "mlruns").glob("*/meta.yaml"):
        meta.write_text("{{{: :: [")
    with pytest.raises(CorruptFileError, match="mlruns is a damaged MLflow store") as e:
        lt.find_tickets(make_model(), Loop(steps=5), **kw)
    assert len(str(e.value).splitlines()) == 1
