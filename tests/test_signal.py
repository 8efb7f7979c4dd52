"""Per-layer signal: values equal a hand computation, training is unchanged by it, vanishing/exploding show."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lottery as lt
from lottery.reporting.plots import RUN_FILES, run_plots
from lottery.layer_signal import SignalProbe
from lottery.train import train
from tests.engine_helpers import strip_times, tiny


def test_probe_matches_a_hand_computation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])
    probe = SignalProbe(net, x, y)
    probe(0)
    W1, b1, W2, b2 = net[0].weight.detach(), net[0].bias.detach(), net[2].weight.detach(), net[2].bias.detach()
    h = x @ W1.T + b1  # first layer's output
    a = h.clamp(min=0)
    out = a @ W2.T + b2
    d_out = (out.softmax(1) - F.one_hot(y, 2).float()) / len(y)  # mean cross-entropy's gradient
    d_W2 = d_out.T @ a
    d_W1 = ((d_out @ W2) * (h > 0)).T @ x
    assert probe.steps == [0]
    assert probe.activation_std[0] == pytest.approx([float(h.std()), float(out.std())], rel=1e-5)
    assert probe.grad_norm[0] == pytest.approx([float(d_W1.norm()), float(d_W2.norm())], rel=1e-5)
    assert all(p.grad is None for p in net.parameters())  # the probe leaves .grad alone


def test_training_is_bit_identical_with_and_without_the_probe(tmp_path):
    data = lt.load_dataset("synthetic")
    runs = []
    for record in (True, False):
        model = lt.build_model("mlp", data.input_shape, data.num_classes, hidden=[16])
        model.add_module("drop", nn.Dropout(0.3))  # would draw random numbers if the probe ran in train mode
        lt.init_weights(model, "kaiming_normal", seed=0)
        torch.manual_seed(0)
        result = train(model, data, tiny(tmp_path, fused=False, record_signal=record))
        runs.append((result, lt.snapshot(model)))
    (with_probe, w1), (without, w2) = runs
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert with_probe.curve == without.curve and without.signal is None
    signal = with_probe.signal
    assert signal["layers"] == ["fc1", "fc2"]
    assert signal["steps"] == [step for step, *_ in with_probe.curve]  # step 0 and every evaluation


def test_vanishing_and_exploding_signals_show_at_step_zero():
    data = lt.load_dataset("synthetic")
    x, y = data.val

    def stds(scheme, **options):
        model = lt.build_model("deep_mlp", data.input_shape, data.num_classes, depth=10, width=64)
        lt.init_weights(model, scheme, seed=0, **options)
        probe = SignalProbe(model, x, y)
        probe(0)
        return probe.activation_std[0]

    small, he, large = stds("normal", std=0.01), stds("kaiming_normal"), stds("normal", std=1.0)
    assert small[-1] < 1e-12 * small[0]  # N(0, 0.01): each ReLU layer shrinks the signal ~14x (sqrt(64/2) * 0.01 ...)
    assert 0.2 < he[-2] / he[0] < 5  # He keeps it within a small factor through 10 layers
    assert large[-2] > 1e6 * large[0]  # N(0, 1): grows ~sqrt(64/2) per layer


def test_run_writes_layer_signal_png(tmp_path):
    results = lt.run_imp(tiny(tmp_path, levels=1, controls=()))
    dense = results["levels"][0]
    assert dense["signal"]["layers"] == ["fc1", "fc2", "fc3"]
    assert len(dense["signal"]["activation_std"]) == len(dense["curve"])
    paths = run_plots(tmp_path / "plots", strip_times(results))
    assert tmp_path / "plots" / RUN_FILES["layer_signal"] in paths
