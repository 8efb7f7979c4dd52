"""Zero init never breaks symmetry: every hidden unit of a layer stays identical through training."""
import pytest
import torch
import torch.nn.functional as F

from lottery.inits import init_weights
from lottery.models import build_model
from lottery.symmetry import _count_distinct, symmetry_report

HIDDEN = ("fc1.weight", "fc2.weight")


def train(model, steps=8, lr=0.5):
    """Plain SGD on a fixed random problem: enough steps for gradients to reach every layer."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 20, generator=g), torch.randint(0, 5, (64,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def mlp(activation):
    return build_model("mlp", (20,), 5, activation=activation, hidden=(16, 12))


def test_zero_init_hidden_units_stay_identical_while_training():
    # sigmoid(0) = 0.5 != 0, so every layer does move: the symmetry, not a dead net, keeps the units identical
    model = train(init_weights(mlp("sigmoid"), "zeros"))
    assert all(bool(p.abs().sum() > 0) for p in model.parameters())
    report = symmetry_report(model)
    for name in HIDDEN:
        assert report[name]["units"] > 1 and report[name]["distinct"] == 1, name
    assert report["fc3.weight"]["distinct"] > 1  # output units see different targets


def test_zero_init_relu_net_does_not_learn_at_all():
    model = train(init_weights(mlp("relu"), "zeros"))
    assert all(bool((getattr(model, f"fc{i}").weight == 0).all()) for i in (1, 2, 3))
    report = symmetry_report(model)
    assert all(report[name]["distinct"] == 1 for name in HIDDEN)  # the output biases do learn the class prior


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_random_init_breaks_the_symmetry(activation):
    model = init_weights(mlp(activation), "xavier_normal", seed=0)
    before = symmetry_report(model)
    assert all(r["distinct"] == r["units"] for r in before.values())
    assert symmetry_report(train(model)) == before


def test_conv_filters_count_as_units():
    model = build_model("conv2", (3, 8, 8), 10)
    report = symmetry_report(init_weights(model, "zeros"))
    assert report["conv1.weight"] == {"units": 64, "distinct": 1}
    report = symmetry_report(init_weights(model, "kaiming_normal", seed=0))
    assert report["conv2.weight"] == {"units": 64, "distinct": 64}


def test_counting_is_up_to_a_tolerance_relative_to_the_layer_scale():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(30, 50, generator=g, dtype=torch.float64)
    rows = base.repeat(4, 1)[torch.randperm(120, generator=g)]
    assert _count_distinct(rows + 1e-9 * torch.randn(rows.shape, generator=g, dtype=torch.float64), 1e-6) == 30
    assert _count_distinct(rows, 0.0) == 30
    assert _count_distinct(base, 1e-6) == 30
    layer = torch.nn.Linear(50, 3)
    with torch.no_grad():
        layer.weight.copy_(1e3 * torch.stack([base[0], base[0] * (1 + 1e-8), base[1]]))
        layer.bias.zero_()
    assert symmetry_report(torch.nn.Sequential(layer))["0.weight"] == {"units": 3, "distinct": 2}
