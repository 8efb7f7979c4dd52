"""Stability / linear mode connectivity: exact endpoints, BatchNorm re-estimation, instability from a run."""
import json

import pytest
import torch
from torch import nn

import lottery as lt
from lottery.drivers.stability import instability, interpolate_errors, recompute_batchnorm, stability_run
from lottery.cli import main
from lottery.data import load_dataset
from lottery.errors import RewindCheckError
from lottery.models import build_model
from lottery.session import Session
from lottery.storage.rundir import RunDir
from lottery.train import evaluate
from tests.engine_helpers import tiny


def _two_models():
    data = load_dataset("synthetic", n_train=128, n_test=64)
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        states.append(build_model("mlp", data.input_shape, data.num_classes, hidden=[16]).state_dict())
    return data, build_model("mlp", data.input_shape, data.num_classes, hidden=[16]), states


def test_interpolation_endpoints_reproduce_the_endpoint_errors_exactly():
    data, model, (a, b) = _two_models()
    alphas, errors = interpolate_errors(model, a, b, data, points=21)
    assert len(alphas) == 21 and alphas[0] == 0.0 and alphas[-1] == 1.0
    for state, err in ((a, errors[0]), (b, errors[-1])):
        model.load_state_dict(state)
        assert err == 1.0 - evaluate(model, *data.test)[1]
    with pytest.raises(ValueError, match="points"):
        interpolate_errors(model, a, b, data, points=1)


def test_batchnorm_statistics_are_recomputed_from_the_training_data():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2))
    x = torch.randn(1000, 3) * 2 + 5
    model.eval()
    recompute_batchnorm(model, x, batch=100)
    torch.testing.assert_close(model[0].running_mean, x.mean(0), rtol=0, atol=1e-5)
    assert not model.training and model[0].momentum == 0.1


def _session(tmp_path, hidden, n_test, **settings):
    """A Session on a small synthetic data set and an MLP, with a start state drawn by torch's default init."""
    cfg = tiny(tmp_path, model_options={"hidden": hidden}, dataset_options={"n_train": 256, "n_test": n_test},
               **settings)
    with RunDir.for_config(cfg) as run:
        session = Session(cfg, run)
    torch.manual_seed(0)
    model = build_model("mlp", session.data.input_shape, session.data.num_classes, hidden=hidden)
    return session, lt.snapshot(model)


def _half_masked(tmp_path):
    """A 40-step session, an MLP start state and a 50 % random mask."""
    session, start = _session(tmp_path, [16], 64, steps=40)
    return session, start, lt.prune_random(lt.Mask.ones_like(session.model), 0.5)


def test_instability_is_max_error_minus_endpoint_mean(tmp_path):
    session, start, mask = _half_masked(tmp_path)
    r = instability(session, start, mask, k=10, seeds=(1, 2), points=20)
    assert r["instability"] == pytest.approx(max(r["errors"]) - (r["errors"][0] + r["errors"][-1]) / 2)
    assert len(r["errors"]) == 20 and r["note"] is None
    assert r["copies"][0]["test_accuracy"] == pytest.approx(1 - r["errors"][0])  # the endpoints are the copies
    with pytest.raises(ValueError, match="k must"):
        instability(session, start, mask, k=40)


@pytest.mark.parametrize("pack", [1, 2])
def test_a_copy_that_revives_a_pruned_weight_is_refused(tmp_path, monkeypatch, pack):
    """Every run of the study is checked after training as Session.train_from checks it: a trainer that brings a
    pruned weight back (here: patched to) fails in one line instead of measuring a denser network."""
    import lottery.fused as fused_module
    import lottery.session as session_module

    session, start, mask = _half_masked(tmp_path)
    name = next(iter(mask))

    def reviving(real):
        def train(model, *a, **k):
            out = real(model, *a, **k)
            for m in (model if isinstance(model, list) else [model]):
                with torch.no_grad():
                    dict(m.named_parameters())[name][~mask[name]] = 1.0
            return out
        return train

    monkeypatch.setattr(session_module, "train", reviving(session_module.train))
    monkeypatch.setattr(fused_module, "train_fused", reviving(fused_module.train_fused))  # the scheduler's passes
    with pytest.raises(RewindCheckError, match="pruned weight"):
        instability(session, start, mask, k=0, points=3, pack=pack)


def _from_init(tmp_path, **settings):
    # 224 training examples after the validation split
    session, start = _session(tmp_path, [32, 32], 256, steps=150, **settings)
    return instability(session, start, None, k=0, seeds=(1, 2), points=11), session.data


def test_copies_that_see_the_same_batches_are_connected(tmp_path):
    """Full-batch SGD: both copies see every example at every step, so the data order cannot matter and the two
    endpoints (and the whole line) agree: instability 0, up to at most one test example of rounding."""
    r, data = _from_init(tmp_path, optimizer="sgd", momentum=0.0, lr=0.2, batch_size=256)
    assert abs(r["instability"]) <= 1 / len(data.test[0])


def test_different_data_orders_from_init_are_unstable_with_small_noisy_batches(tmp_path):
    """Batch 8 with a large Adam step from the init: the two copies end in different basins and the midpoint of
    the line errs far more than either end (measured 19.5 points on this setup)."""
    r, _ = _from_init(tmp_path, optimizer="adam", lr=0.05, batch_size=8)
    assert r["instability"] > 0.05
    assert max(r["errors"][1:-1]) > max(r["errors"][0], r["errors"][-1])


def test_stability_run_writes_results_and_plot_and_cli(tmp_path, capsys):
    cfg = tiny(tmp_path, levels=1, controls=())
    lt.run_imp(cfg)
    run = tmp_path / "runs" / cfg.run_name()
    r = stability_run(run, level=1, k=20, points=21)
    assert r["level"] == 1 and r["density"] == pytest.approx(0.8, abs=1e-3)
    png = run / "stability_level_01_k20.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    stored = json.loads((run / "stability.json").read_text())
    assert len(stored["entries"]) == 1
    assert main(["stability", str(run), "--level", "1", "--k", "20"]) == 0  # finished: read back, not retrained
    assert "instability" in capsys.readouterr().out
    assert len(json.loads((run / "stability.json").read_text())["entries"]) == 1
    assert main(["stability", str(run), "--level", "1", "--k", "30", "--points", "3", "--no-progress"]) == 0
    assert "stability: " not in capsys.readouterr().err  # trained two copies, drew no bar
    assert main(["stability", str(run), "--level", "1", "--k", "40", "--points", "3"]) == 0
    assert "stability: " in capsys.readouterr().err  # the progress bar


def test_the_two_copies_fused_equal_them_one_after_another(tmp_path, monkeypatch):
    """pack=2: the two copies train in one fused pass (each its own data order) and give the same copies, errors
    along the path and instability as one after another, up to one test example."""
    import lottery.fused as fused_module

    session, start, mask = _half_masked(tmp_path)
    alone = instability(session, start, mask, k=10, seeds=(1, 2), points=11)
    passes = []
    real = fused_module.train_fused
    monkeypatch.setattr(fused_module, "train_fused",
                        lambda models, *a, **k: passes.append(len(models)) or real(models, *a, **k))
    together = instability(session, start, mask, k=10, seeds=(1, 2), points=11, pack=2)
    assert passes == [2]
    one = 1 / 64 + 1e-12
    assert [c["seed"] for c in together["copies"]] == [1, 2]
    for a, b in zip(alone["copies"], together["copies"]):
        assert a["status"] == b["status"] == "ok" and abs(a["test_accuracy"] - b["test_accuracy"]) <= one
    assert max(abs(a - b) for a, b in zip(alone["errors"], together["errors"])) <= one
    assert abs(alone["instability"] - together["instability"]) <= 2 * one
