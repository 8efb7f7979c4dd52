"""The model zoo: every registered model builds and trains a step; pinned weight counts; clear errors."""
import pytest
import torch
from torch import nn

from lottery.errors import ConfigError, UnknownNameError
from lottery.masks import Mask
from lottery.models import MODELS, build_model, register_module

# Small inputs keep the deep nets cheap; anything not listed is an image net taking (3, 16, 16).
SHAPES = {"lenet_300_100": (1, 28, 28), "lenet5": (1, 28, 28), "mlp": (40,), "resnet56": (3, 8, 8), "gpt": (4,)}
TOKEN_MODELS = {"gpt"}  # inputs are token ids (below the vocabulary, num_classes + 2 by default)


def example(name, shape, batch=2):
    return torch.randint(0, 10, (batch, *shape)).float() if name in TOKEN_MODELS else torch.randn(batch, *shape)


def prunable(model):
    return Mask.ones_like(model).num_total


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_and_backpropagates(name):
    shape = SHAPES.get(name, (3, 16, 16))
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    assert model.activation == "relu"
    out = model(example(name, shape))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name, shape, count", [
    ("lenet_300_100", (1, 28, 28), 266_200),  # 784*300 + 300*100 + 100*10
    ("lenet_300_100", (784,), 266_200),
    ("conv2", (3, 32, 32), 4_300_992),  # sums derived in lottery/models/convnets.py
    ("conv4", (3, 32, 32), 2_425_024),
    ("conv6", (3, 32, 32), 2_261_184),
    ("resnet20", (3, 32, 32), 270_896),  # ~0.27M as in He et al.; 1x1 conv shortcuts
    ("vgg19", (3, 32, 32), 20_024_000),  # 20.0M in Frankle & Carbin's table
])
def test_pinned_prunable_weight_counts(name, shape, count):
    assert prunable(build_model(name, shape, 10)) == count


def test_lenet5_is_the_classic_size_on_mnist_and_cifar():
    assert sum(p.numel() for p in build_model("lenet5", (1, 28, 28), 10).parameters()) == 61_706
    model = build_model("lenet5", (3, 32, 32), 10)
    assert model.fc1.in_features == 16 * 5 * 5 and model.conv1.padding == (0, 0)


def test_mlps_flatten_any_shape_and_keep_readable_names():
    model = build_model("lenet_300_100", (3, 32, 32), 10)
    assert model.fc1.in_features == 3 * 32 * 32
    assert list(model.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    mlp = build_model("mlp", (40,), 10)
    assert [m.out_features for m in mlp if isinstance(m, nn.Linear)] == [256, 256, 10]
    assert [m.out_features for m in build_model("mlp", (40,), 3, hidden=[32]) if isinstance(m, nn.Linear)] == [32, 3]
    assert len(build_model("mlp", (40,), 3, hidden=())) == 2  # flatten + one Linear: logistic regression


@pytest.mark.parametrize("activation, cls", [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("tanh", nn.Tanh),
                                             ("sigmoid", nn.Sigmoid), ("linear", nn.Identity)])
@pytest.mark.parametrize("name", ["mlp", "conv2", "resnet20", "vgg11", "lenet5"])
def test_activation_is_selectable(name, activation, cls):
    model = build_model(name, SHAPES.get(name, (3, 16, 16)), 10, activation=activation)
    assert model.activation == activation
    kinds = {type(m) for m in model.modules()} & {nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity}
    assert cls in kinds and not (kinds - {cls, nn.Identity})


def test_vgg_is_the_cifar_form_and_resnet_shortcuts_are_selectable():
    vgg = build_model("vgg16", (3, 32, 32), 10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in vgg.modules()) == 13
    assert [m for m in vgg.modules() if isinstance(m, nn.Linear)] == [vgg.fc] and vgg.fc.in_features == 512
    pad = build_model("resnet20", (3, 32, 32), 10, shortcut="pad")
    assert prunable(pad) == 268_336  # option A: the two 1x1 shortcut convs (512 + 2048 weights) are gone
    assert pad(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_errors_name_what_is_accepted():
    with pytest.raises(UnknownNameError, match="lenet_300_100"):
        build_model("lenet_301", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match=r"\(C, H, W\).*\(40,\)"):
        build_model("conv2", (40,), 10)
    with pytest.raises(ConfigError, match="H, W >= 16"):
        build_model("vgg11", (3, 8, 8), 10)
    with pytest.raises(ConfigError, match="relu, leaky_relu, tanh"):
        build_model("mlp", (40,), 10, activation="gelu")
    with pytest.raises(ConfigError, match="its options are: hidden"):
        build_model("mlp", (40,), 10, hiden=(8,))
    with pytest.raises(ConfigError, match="takes no options"):
        build_model("lenet_300_100", (784,), 10, hidden=(8,))
    with pytest.raises(ConfigError, match="'conv'.*'pad'"):
        build_model("resnet20", (3, 32, 32), 10, shortcut="B")
    for bad_shape in [(), (0, 28), (28.0, 28), "28x28", None]:
        with pytest.raises(ConfigError, match="input_shape"):
            build_model("mlp", bad_shape, 10)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", (40,), 0)
    with pytest.raises(ConfigError, match="positive layer widths"):
        build_model("mlp", (40,), 10, hidden=(8, 0))


def test_user_modules_by_name_or_instance():
    class Tiny(nn.Module):
        def __init__(self, input_shape, num_classes, width=4):
            super().__init__()
            self.fc = nn.Linear(input_shape[0], width)
            self.out = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.out(torch.tanh(self.fc(x)))

    register_module("test_tiny", Tiny)
    try:
        model = build_model("test_tiny", (6,), 3, activation="tanh", width=5)
        assert isinstance(model, Tiny) and model.fc.out_features == 5 and model.activation == "tanh"
        with pytest.raises(ConfigError, match="its options are: width"):
            build_model("test_tiny", (6,), 3, depth=2)
        with pytest.raises(ValueError, match="already registered"):
            register_module("test_tiny", Tiny)
    finally:
        MODELS.pop("test_tiny")

    own = nn.Sequential(nn.Linear(4, 2))
    assert build_model(own) is own and own.activation == "relu"
    own.activation = "sigmoid"
    assert build_model(own, activation="tanh").activation == "sigmoid"  # a module's own declaration wins
    with pytest.raises(ConfigError, match="module instance"):
        build_model(nn.Linear(2, 2), hidden=(3,))


@pytest.mark.parametrize("name, options, message", [
    ("deep_mlp", {"depth": 0}, "depth must be a positive integer"),
    ("deep_mlp", {"width": -4}, "width must be a positive integer"),
    ("deep_conv", {"depth": 0}, "depth must be a positive integer"),
    ("deep_conv", {"width": 0}, "width must be a positive integer"),
])
def test_deep_models_refuse_bad_sizes_in_one_line(name, options, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, (1, 28, 28), 10, **options)


def test_deep_models_have_the_asked_depth_and_no_normalization():
    mlp = build_model("deep_mlp", (1, 28, 28), 10, depth=20, width=64)
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 21 and all(m.out_features == 64 for m in linears[:-1])
    conv = build_model("deep_conv", (3, 32, 32), 10, depth=10, width=16)
    assert sum(isinstance(m, nn.Conv2d) for m in conv.modules()) == 10
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) for m in conv.modules())
    assert conv(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="unknown activation"):
        build_model("deep_mlp", (40,), 10, activation="swish")


def test_convnet_scale_multiplies_the_filters_and_refuses_nonsense():
    model = build_model("conv4", (3, 32, 32), 10, scale=0.25)
    assert [model.conv1.out_channels, model.conv3.out_channels, model.fc1.out_features] == [16, 32, 256]
    assert model.fc1.in_features == 32 * 8 * 8
    with pytest.raises(ConfigError, match="scale must be a number in"):
        build_model("conv2", (3, 32, 32), 10, scale=0)


def test_conv_layout_is_channels_last_inside_and_restored_after():
    """Training sees channels_last weights; afterwards the default layout is back, so an init drawn into the
    weights (random fills draw in memory order) gives the same numbers as before any training."""
    from lottery.inits import init_weights
    from lottery.models.layout import conv_layout

    model = build_model("lenet5", (1, 28, 28), 10)
    with conv_layout(model):
        assert model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
        assert not model.conv2.weight.is_contiguous()
        before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.conv2.weight.is_contiguous()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fresh = build_model("lenet5", (1, 28, 28), 10)
    init_weights(model, "kaiming_normal", seed=3)
    init_weights(fresh, "kaiming_normal", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))
    with conv_layout(model, enabled=False):
        assert model.conv2.weight.is_contiguous()
    mlp = build_model("mlp", (40,), 10)
    with conv_layout(mlp):  # nothing to do without a Conv2d
        assert all(p.is_contiguous() for p in mlp.parameters())


def test_training_a_convnet_runs_channels_last_on_the_fast_path_only(monkeypatch):
    """``fused = true`` (default) trains in channels_last, ``fused = false`` in torch's default layout (bit-identity
    with a plain loop); the model comes back in the default layout either way."""
    import lottery.train as tr
    from lottery.config import from_dict
    from lottery.data import load_dataset

    seen = []
    real = tr.F.cross_entropy
    monkeypatch.setattr(tr.F, "cross_entropy", lambda out, y, **kw: (seen.append(
        model.conv1.weight.is_contiguous(memory_format=torch.channels_last)), real(out, y, **kw))[1])
    data = load_dataset("synthetic", n_train=64, n_test=8, input_shape=[3, 8, 8])
    model = build_model("conv2", data.input_shape, data.num_classes, scale=0.125)
    for fused in (True, False):
        seen.clear()
        cfg = from_dict({"dataset": "synthetic", "steps": 2, "batch_size": 16, "fused": fused, "progress": False,
                         "record_signal": False})
        tr.train(model, data, cfg)
        assert seen and all(s is fused for s in seen)
        assert model.conv1.weight.is_contiguous()
