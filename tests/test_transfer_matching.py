"""Weight matching and the alignments of mask transfer: exact recovery of a permutation, function invariance,
sign alignment, and the models permute refuses."""
import pytest
import torch

import lottery as lt
from lottery.analysis.matching import linear_chain, permute_units, weight_matching
from lottery.drivers.transfer import sign_aligned
from lottery.errors import ConfigError
from lottery.models import ACTIVATIONS, build_model


def _mlp(seed=0, hidden=(32, 16, 8), activation="relu"):
    torch.manual_seed(seed)
    return build_model("mlp", (20,), 5, activation, hidden=list(hidden))


def _random_perms(layers, state, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(state[f"{n}.weight"].shape[0], generator=g) for n in layers[:-1]]


def test_weight_matching_recovers_a_known_permutation_exactly():
    model = _mlp()
    layers = linear_chain(model)
    assert layers == ["fc1", "fc2", "fc3", "fc4"]
    a = lt.snapshot(model)
    hidden = _random_perms(layers, a)
    b = permute_units(a, layers, hidden)  # A with its units shuffled
    assert not torch.equal(b["fc1.weight"], a["fc1.weight"])
    perms, sweeps = weight_matching(a, b, layers)
    aligned = permute_units(b, layers, perms)
    assert all(torch.equal(aligned[k], a[k]) for k in a)  # bit for bit: the shuffle undone
    assert all(torch.equal(p[q], torch.arange(len(p))) for p, q in zip(hidden, perms))  # the inverse, exactly
    assert sweeps <= 3
    same, _ = weight_matching(a, a, layers)  # a network matched to itself stays as it is
    assert all(torch.equal(p, torch.arange(len(p))) for p in same)


def test_matching_raises_the_alignment_of_independent_networks():
    a, b = lt.snapshot(_mlp(0)), lt.snapshot(_mlp(1))
    layers = ["fc1", "fc2", "fc3", "fc4"]
    perms, _ = weight_matching(a, b, layers)
    inner = lambda s: sum(float((a[f"{n}.weight"] * s[f"{n}.weight"]).sum()) for n in layers)  # noqa: E731
    assert inner(permute_units(b, layers, perms)) > inner(b) + 0.1


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_permuting_hidden_units_leaves_the_function_unchanged(activation):
    model = _mlp(activation=activation)
    layers = linear_chain(model)  # every registered activation is one permute passes through
    x = torch.randn(64, 20)
    before = model(x)
    model.load_state_dict(permute_units(lt.snapshot(model), layers, _random_perms(layers, lt.snapshot(model))))
    assert not torch.equal(model.fc1.weight, _mlp(activation=activation).fc1.weight)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_sign_alignment_takes_the_source_signs_on_kept_weights_only():
    target, source = lt.snapshot(_mlp(0)), lt.snapshot(_mlp(1))
    mask = lt.prune_random(lt.Mask.ones_like(_mlp()), 0.7, seed=3)
    aligned, changed = sign_aligned(target, source, mask)
    flips = kept = 0
    for k, m in mask.items():
        assert torch.equal(aligned[k].abs(), target[k].abs())  # magnitudes are the target's
        assert torch.equal(torch.sign(aligned[k][m]), torch.sign(source[k][m]))  # signs the source's, where kept
        assert torch.equal(aligned[k][~m], target[k][~m])  # pruned weights untouched (the mask zeroes them)
        flips += int((torch.sign(target[k][m]) != torch.sign(source[k][m])).sum())
        kept += int(m.sum())
    assert torch.equal(aligned["fc1.bias"], target["fc1.bias"])  # biases are not masked: the target's
    assert changed == pytest.approx(flips / kept) and 0.4 < changed < 0.6  # independent draws: half disagree


@pytest.mark.parametrize("name, options, why", [
    ("conv2", {}, "conv1"),
    ("resnet20", {}, "not an nn.Sequential"),
    ("mlp", {"hidden": []}, "at least one hidden layer"),
])
def test_permute_refuses_models_without_a_linear_unit_chain(name, options, why):
    shape = (20,) if name == "mlp" else (3, 32, 32)
    with pytest.raises(ConfigError, match=why) as e:
        linear_chain(build_model(name, shape, 10, **options))
    assert "\n" not in str(e.value) and "--align none,sign" in str(e.value)


def test_matching_refuses_networks_of_different_shapes():
    a, b = lt.snapshot(_mlp(hidden=(32, 16, 8))), lt.snapshot(_mlp(hidden=(32, 16, 9)))
    with pytest.raises(ConfigError, match="one architecture"):
        weight_matching(a, b, ["fc1", "fc2", "fc3", "fc4"])
