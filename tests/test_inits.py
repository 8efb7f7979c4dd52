"""Init schemes against their published formulas, plus seeding, scale, LSUV, checkpoint transfer and errors."""
import math

import pytest
import torch
from torch import nn

from lottery.errors import ConfigError, CorruptFileError, UnknownNameError
from lottery.inits import INIT_SCHEMES, init_weights
from lottery.models import build_model

FAN_IN, FAN_OUT = 1000, 1000
RANDOM_SCHEMES = ["normal", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal",
                  "sparse", "lsuv"]
MLP_DATA = torch.randn(64, 20, generator=torch.Generator().manual_seed(1))


def wide(activation="relu", fan_in=FAN_IN, fan_out=FAN_OUT):
    """One large layer: a million draws put a std estimate within ~0.1 % of the truth."""
    model = nn.Sequential(nn.Linear(fan_in, fan_out))
    model.activation = activation
    return model


def small(activation="relu"):
    return build_model("mlp", (20,), 5, activation=activation, hidden=(16, 16))


def weight(model):
    return model[0].weight.detach()


def extra_options(scheme, tmp_path, model):
    """What a scheme needs besides the defaults: a data batch, or a checkpoint file."""
    if scheme == "lsuv":
        return {"data": MLP_DATA}
    if scheme == "checkpoint":
        path = tmp_path / "init.pt"
        torch.save(model.state_dict(), path)
        return {"path": path}
    return {}


@pytest.mark.parametrize("scheme", sorted(INIT_SCHEMES))
def test_every_scheme_runs_and_returns_the_model(scheme, tmp_path):
    model = small()
    assert init_weights(model, scheme, seed=0, **extra_options(scheme, tmp_path, model)) is model
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("scheme, options, std", [
    ("normal", {}, 0.01),
    ("normal", {"std": 0.1}, 0.1),
    ("xavier_normal", {"gain": 1.0}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("xavier_uniform", {"gain": 1.0}, math.sqrt(6 / (FAN_IN + FAN_OUT)) / math.sqrt(3)),
    ("xavier_normal", {}, math.sqrt(2 / (FAN_IN + FAN_OUT))),  # Glorot's gain 1 by default, on a ReLU net too
    ("xavier_uniform", {}, math.sqrt(6 / (FAN_IN + FAN_OUT)) / math.sqrt(3)),
    ("xavier_normal", {"gain": "auto"}, math.sqrt(2) * math.sqrt(2 / (FAN_IN + FAN_OUT))),  # the relu gain
    ("kaiming_normal", {}, math.sqrt(2 / FAN_IN)),
    ("kaiming_uniform", {}, math.sqrt(6 / FAN_IN) / math.sqrt(3)),
])
def test_std_matches_the_published_formula(scheme, options, std):
    w = weight(init_weights(wide(), scheme, seed=0, **options))
    assert float(w.std()) == pytest.approx(std, rel=0.02)
    assert abs(float(w.mean())) < 0.01 * std * 10
    if "uniform" in scheme:
        bound = std * math.sqrt(3)
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound


def test_kaiming_mode_picks_the_fan():
    model = wide(fan_in=400, fan_out=2500)
    assert float(weight(init_weights(model, "kaiming_normal", seed=0, mode="fan_out")).std()) == pytest.approx(
        math.sqrt(2 / 2500), rel=0.02)
    assert float(weight(init_weights(model, "kaiming_normal", seed=0)).std()) == pytest.approx(
        math.sqrt(2 / 400), rel=0.02)


@pytest.mark.parametrize("activation, gain", [("tanh", 5 / 3), ("sigmoid", 1.0), ("linear", 1.0), ("relu", 2 ** 0.5),
                                              ("leaky_relu", math.sqrt(2 / (1 + 0.01 ** 2)))])
def test_gain_follows_the_model_activation(activation, gain):
    w = weight(init_weights(wide(activation), "kaiming_normal", seed=0))
    assert float(w.std()) == pytest.approx(gain / math.sqrt(FAN_IN), rel=0.02)
    w = weight(init_weights(wide(activation), "xavier_uniform", seed=0, gain="auto"))
    assert float(w.abs().max()) == pytest.approx(gain * math.sqrt(6 / (FAN_IN + FAN_OUT)), rel=0.01)


@pytest.mark.parametrize("scheme", ["xavier_normal", "xavier_uniform"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu"])
def test_xavier_matches_torch_statistics_on_every_layer(scheme, activation):
    """Xavier means Glorot: the same distribution as torch.nn.init on every layer, whatever the activation."""
    from lottery.models import build_model

    ours = init_weights(build_model("deep_mlp", (300,), 10, activation=activation, depth=3, width=400), scheme, seed=0)
    for name, p in ours.named_parameters():
        if name.endswith("weight"):
            ref = torch.empty_like(p)
            getattr(nn.init, scheme + "_")(ref, generator=torch.Generator().manual_seed(1))
            assert float(p.detach().std()) == pytest.approx(float(ref.std()), rel=0.03), name
            if "uniform" in scheme:  # same bound: gain 1 · sqrt(6 / (fan_in + fan_out))
                assert float(p.detach().abs().max()) == pytest.approx(float(ref.abs().max()), rel=1e-3), name


def test_orthogonal_rows_are_orthonormal_times_gain():
    w = weight(init_weights(wide(fan_in=300, fan_out=200), "orthogonal", seed=0, gain=1.0))
    torch.testing.assert_close(w @ w.T, torch.eye(200), atol=1e-5, rtol=0)
    w = weight(init_weights(wide("relu", 300, 200), "orthogonal", seed=0))
    torch.testing.assert_close(w @ w.T, 2 * torch.eye(200), atol=1e-5, rtol=0)
    conv = nn.Conv2d(8, 16, 3)  # flattened to 16 x 72
    init_weights(nn.Sequential(conv), "orthogonal", seed=0, gain=1.0)
    flat = conv.weight.reshape(16, -1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(16), atol=1e-5, rtol=0)


def test_sparse_gives_each_unit_the_same_number_of_inputs():
    w = weight(init_weights(wide(), "sparse", seed=0, sparsity=0.9))
    assert ((w == 0).sum(dim=1) == math.ceil(0.9 * FAN_IN)).all()
    assert float(w[w != 0].std()) == pytest.approx(math.sqrt(2 / 100), rel=0.03)  # relu gain over 100 inputs
    conv = nn.Conv2d(4, 6, 3)
    init_weights(nn.Sequential(conv), "sparse", seed=0, sparsity=0.5, std=0.1)
    assert ((conv.weight.reshape(6, -1) == 0).sum(dim=1) == 18).all()


def test_biases_norm_layers_and_zeros():
    model = build_model("resnet20", (3, 8, 8), 10)
    bn = model.bn1
    with torch.no_grad():
        bn.weight.fill_(3.0), bn.bias.fill_(2.0), bn.running_mean.fill_(5.0), model.fc.bias.fill_(7.0)
    init_weights(model, "kaiming_normal", seed=0)
    assert (bn.weight == 1).all() and (bn.bias == 0).all() and (bn.running_mean == 0).all()
    assert (model.fc.bias == 0).all()
    alex = init_weights(small(), "normal", seed=0, bias=1.0)
    assert (alex.fc1.bias == 1).all() and float(alex.fc1.weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    zero = init_weights(small(), "zeros")
    assert all((p == 0).all() for p in zero.parameters())


@pytest.mark.parametrize("scheme", RANDOM_SCHEMES)
def test_seed_is_bit_identical_and_leaves_the_global_rng_alone(scheme, tmp_path):
    models = [small() for _ in range(3)]  # built first: construction itself draws from the global RNG
    opts = extra_options(scheme, tmp_path, models[0])
    state = torch.get_rng_state()
    a = init_weights(models[0], scheme, seed=3, **opts).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    b = init_weights(models[1], scheme, seed=3, **opts).state_dict()
    c = init_weights(models[2], scheme, seed=4, **opts).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_no_seed_uses_the_global_rng():
    torch.manual_seed(11)
    a = weight(init_weights(wide(fan_in=50, fan_out=50), "xavier_normal")).clone()
    torch.manual_seed(11)
    b = weight(init_weights(wide(fan_in=50, fan_out=50), "xavier_normal"))
    assert torch.equal(a, b)


@pytest.mark.parametrize("scheme", ["kaiming_normal", "orthogonal", "sparse"])
def test_scale_multiplies_only_the_weights(scheme):
    base = init_weights(small(), scheme, seed=0)
    scaled = init_weights(small(), scheme, seed=0, scale=3.0)
    for name in ("fc1", "fc2", "fc3"):
        assert torch.equal(getattr(scaled, name).weight, 3.0 * getattr(base, name).weight)
        assert (getattr(scaled, name).bias == 0).all()


@pytest.mark.parametrize("scale", [0, -1.0, float("inf"), float("nan"), True, "2"])
def test_scale_must_be_positive_and_finite(scale):
    with pytest.raises(ConfigError, match="scale"):
        init_weights(small(), "xavier_normal", scale=scale)


def layer_output_variances(model, data):
    outputs = {}
    def record(name):
        def hook(module, inputs, output):
            outputs.setdefault(name, float(output.var()))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model.eval()(data)
    for h in handles:
        h.remove()
    return outputs


@pytest.mark.parametrize("name, shape", [("mlp", (20,)), ("conv2", (3, 8, 8)), ("resnet20", (3, 8, 8))])
def test_lsuv_gives_unit_output_variance_per_layer(name, shape):
    model = build_model(name, shape, 10, activation="tanh" if name == "mlp" else "relu")
    data = torch.randn(32, *shape, generator=torch.Generator().manual_seed(0))
    init_weights(model, "lsuv", seed=0, data=data)
    assert model.training  # mode restored
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed
    if name == "resnet20":
        assert (model.bn1.running_mean == 0).all()  # ran in eval mode: statistics untouched
    variances = layer_output_variances(model, data)
    assert len(variances) == sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    for layer, var in variances.items():
        assert var == pytest.approx(1.0, abs=0.1), layer


def test_lsuv_needs_a_data_batch():
    with pytest.raises(ConfigError, match="data="):
        init_weights(small(), "lsuv", seed=0)
    with pytest.raises(ConfigError, match="at least 2"):
        init_weights(small(), "lsuv", data=torch.randn(1, 20))


def test_checkpoint_round_trip_and_transfer(tmp_path):
    source = init_weights(build_model("lenet_300_100", (1, 28, 28), 10), "kaiming_normal", seed=0)
    path = tmp_path / "source.pt"
    torch.save(source.state_dict(), path)
    target = init_weights(build_model("lenet_300_100", (1, 28, 28), 10), "checkpoint", path=path)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
    torch.save({"state_dict": source.state_dict(), "step": torch.tensor(5)}, tmp_path / "wrapped.pt")
    halved = init_weights(build_model("lenet_300_100", (784,), 10), "checkpoint", path=tmp_path / "wrapped.pt",
                          scale=0.5)
    assert torch.equal(halved.fc1.weight, 0.5 * source.fc1.weight) and torch.equal(halved.fc1.bias, source.fc1.bias)

    other_head = build_model("lenet_300_100", (1, 28, 28), 5)
    with pytest.raises(ConfigError, match=r"fc3\.weight: file \(10, 100\) vs model \(5, 100\).*exclude="):
        init_weights(other_head, "checkpoint", path=path)
    head = other_head.fc3.weight.clone()
    init_weights(other_head, "checkpoint", path=path, exclude=["fc3"])
    assert torch.equal(other_head.fc1.weight, source.fc1.weight) and torch.equal(other_head.fc3.weight, head)

    deeper = build_model("mlp", (784,), 10, hidden=(300, 100, 50))
    with pytest.raises(ConfigError, match="missing from the file: fc4"):
        init_weights(deeper, "checkpoint", path=path, exclude=["fc3"])
    init_weights(deeper, "checkpoint", path=path, exclude=["fc3"], strict=False)
    assert torch.equal(deeper.fc2.weight, source.fc2.weight)


def test_checkpoint_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="path="):
        init_weights(small(), "checkpoint")
    with pytest.raises(ConfigError, match="not found"):
        init_weights(small(), "checkpoint", path=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError):
        init_weights(small(), "checkpoint", path=tmp_path / "junk.pt")
    torch.save({"fc1.weight": "a string"}, tmp_path / "odd.pt")
    with pytest.raises(CorruptFileError, match="state_dict"):
        init_weights(small(), "checkpoint", path=tmp_path / "odd.pt")


def test_errors_name_the_fix():
    with pytest.raises(UnknownNameError, match="kaiming_normal.*xavier_uniform"):
        init_weights(small(), "glorot")
    with pytest.raises(ConfigError, match="has no option 'stdd'; its options are: std, bias"):
        init_weights(small(), "normal", stdd=0.1)
    with pytest.raises(ConfigError, match="takes no options"):
        init_weights(small(), "zeros", std=0.1)
    with pytest.raises(ConfigError, match="fan_in"):
        init_weights(small(), "kaiming_normal", mode="in")
    with pytest.raises(ConfigError, match="sparsity"):
        init_weights(small(), "sparse", sparsity=1.0)
    with pytest.raises(ConfigError, match="seed"):
        init_weights(small(), "normal", seed=-1)
    odd = small()
    odd.activation = "gelu"
    with pytest.raises(ConfigError, match="no known gain.*gain="):
        init_weights(odd, "kaiming_normal")
    init_weights(odd, "xavier_normal")  # Glorot's gain 1 needs no activation
    with pytest.raises(ConfigError, match="no known gain"):
        init_weights(odd, "xavier_normal", gain="auto")
    with pytest.raises(ConfigError, match="gain must be"):
        init_weights(small(), "xavier_normal", gain="relu")
    init_weights(odd, "normal", data=MLP_DATA)  # data is ignored by schemes that do not use it
    with pytest.raises(ConfigError, match="no Linear or Conv"):
        init_weights(nn.Sequential(nn.ReLU()), "normal")
