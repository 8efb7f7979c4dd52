"""`lottery.pruning`: exact counts per scope, largest magnitudes kept, deterministic ties, nesting, purity, the
random control, the registry, and the errors for bad requests."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lottery as lt
from lottery.errors import ConfigError, MaskMismatchError, UnknownNameError
from lottery.pruning import PRUNERS, random_mask_like
from lottery.registry import Registry
from tests.mask_helpers import CASE_IDS, CASES, flat, flat_abs

B = torch.bool
FRACTIONS = [0.2, 0.37, 0.5, 0.9]


def _premask(model, fraction=0.45, seed=7):
    """A mask that already pruned some weights at random, so pruning must rank only the live ones."""
    return lt.prune_random(lt.Mask.ones_like(model), fraction, scope="layer", seed=seed)


def _expected_kept(kept: int, fraction: float) -> int:
    return kept - round(fraction * kept)


def _check_largest_kept(model, old, new, names):
    """Among the weights alive in ``old`` over ``names``: every kept |w| >= every newly pruned |w|."""
    w = flat_abs(model, names)
    alive, kept = flat(_sub(old, names)), flat(_sub(new, names))
    assert not bool((kept & ~alive).any())  # nothing pruned comes back
    removed = alive & ~kept
    if bool(removed.any()) and bool(kept.any()):
        assert float(w[kept].min()) >= float(w[removed].max())


def _sub(mask, names):
    return lt.Mask({k: mask[k] for k in names})


# -- exact counts and magnitude order, per scope ------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("start", ["dense", "pruned"])
def test_global_scope(case, fraction, start):
    model = case.model()
    old = lt.Mask.ones_like(model) if start == "dense" else _premask(model)
    new = lt.prune_magnitude(model, old, fraction)  # global is the default
    assert new.num_kept == _expected_kept(old.num_kept, fraction)
    assert new.is_subset_of(old) and list(new) == list(old)
    _check_largest_kept(model, old, new, list(old))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("fraction", FRACTIONS)
def test_layer_scope(case, fraction):
    model = case.model()
    old = _premask(model, 0.3)
    new = lt.prune_magnitude(model, old, fraction, scope="layer")
    for k in old:
        assert new.layer_kept()[k] == _expected_kept(old.layer_kept()[k], fraction), k
        _check_largest_kept(model, old, new, [k])
    assert new.is_subset_of(old)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_layer_fractions_override_one_layer(case, scope):
    model = case.model()
    old = _premask(model, 0.2)
    last = case.prunable[-1]
    new = lt.prune_magnitude(model, old, 0.3, scope=scope, layer_fractions={last: 0.1})
    kept_old, kept_new = old.layer_kept(), new.layer_kept()
    assert kept_new[last] == _expected_kept(kept_old[last], 0.1)
    _check_largest_kept(model, old, new, [last])
    rest = [k for k in old if k != last]
    if scope == "global":  # the other layers share one global budget
        assert sum(kept_new[k] for k in rest) == _expected_kept(sum(kept_old[k] for k in rest), 0.3)
        _check_largest_kept(model, old, new, rest)
    else:
        for k in rest:
            assert kept_new[k] == _expected_kept(kept_old[k], 0.3)
            _check_largest_kept(model, old, new, [k])


def test_layer_fractions_for_every_layer_and_zero_means_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 5))
    ones = lt.Mask.ones_like(model)
    new = lt.prune_magnitude(model, ones, 0.5, layer_fractions={"0.weight": 0.25, "2.weight": 0.0, "4.weight": 0.9})
    assert new.layer_kept() == {"0.weight": 600 - 150, "2.weight": 200, "4.weight": 50 - 45}
    assert torch.equal(new["2.weight"], ones["2.weight"]) and new["2.weight"] is not ones["2.weight"]


def test_lenet_layerwise_schedule_matches_the_paper():
    """Frankle & Carbin: 20 % per level, output layer 10 %; the remaining weights after level n are exact."""
    lenet = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    torch.manual_seed(0)
    for m in lenet:
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
    mask = lt.Mask.ones_like(lenet)
    expect = mask.layer_kept()
    for level in range(1, 6):
        new = lt.prune_magnitude(lenet, mask, 0.2, scope="layer", layer_fractions={"4.weight": 0.1})
        expect = {k: v - round((0.1 if k == "4.weight" else 0.2) * v) for k, v in expect.items()}
        assert new.layer_kept() == expect
        assert new.is_subset_of(mask)
        mask = new
        mask.apply(lenet)
    assert mask.layer_density()["0.weight"] == pytest.approx(0.8**5, abs=1e-4)


def test_pruned_weights_at_zero_are_not_counted_again():
    """With the old mask applied (dead weights are 0, the smallest |w|), the budget still comes out of the live."""
    torch.manual_seed(0)
    model = nn.Linear(50, 40)
    old = _premask(model, 0.6)
    old.apply(model)
    new = lt.prune_magnitude(model, old, 0.25)
    assert new.num_kept == _expected_kept(old.num_kept, 0.25) and new.num_kept < old.num_kept


def test_dead_weights_with_large_values_stay_dead():
    """A weight pruned earlier but not zeroed (say, before apply) is not ranked and not revived."""
    torch.manual_seed(0)
    model = nn.Linear(20, 10)
    old = _premask(model, 0.5)
    with torch.no_grad():
        model.weight[~old["weight"]] = 100.0
    new = lt.prune_magnitude(model, old, 0.5)
    assert new.is_subset_of(old) and new.num_kept == _expected_kept(old.num_kept, 0.5)
    _check_largest_kept(model, old, new, ["weight"])


def test_global_scope_really_is_global():
    """A layer of small weights loses far more than the fraction; a layer of large ones loses nothing."""
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    with torch.no_grad():
        model[0].weight.uniform_(0.0, 1.0)
        model[1].weight.uniform_(2.0, 3.0)
    new = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.4)
    assert new.layer_kept() == {"0.weight": 20, "1.weight": 100}
    layer = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.4, scope="layer")
    assert layer.layer_kept() == {"0.weight": 60, "1.weight": 60}


def test_magnitude_is_absolute_value():
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-5.0, 0.1, 3.0, -0.2]]))
    new = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.5)
    assert new["weight"].tolist() == [[True, False, True, False]]


def test_other_float_dtypes():
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 12), nn.Linear(12, 4)).to(dtype)
        old = _premask(model, 0.3)
        new = lt.prune_magnitude(model, old, 0.3)
        assert new.num_kept == _expected_kept(old.num_kept, 0.3), dtype
        _check_largest_kept(model, old, new, list(old))


# -- ties ---------------------------------------------------------------------------------------------------


def _constant_model(value=1.0):
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 5))
    with torch.no_grad():
        for m in model:
            m.weight.fill_(value)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_all_equal_weights_prune_the_earliest_positions_first(dtype):
    model = _constant_model().to(dtype)
    ones = lt.Mask.ones_like(model)
    new = lt.prune_magnitude(model, ones, 0.3)  # 45 of 150
    expected = torch.ones(150, dtype=B)
    expected[:45] = False  # layer order, then flat index
    assert torch.equal(flat(new), expected)
    assert lt.prune_magnitude(model, ones, 0.3) == new  # the same twice

    layer = lt.prune_magnitude(model, ones, 0.3, scope="layer")  # 30 of 100, then 15 of 50
    assert torch.equal(layer["0.weight"].view(-1), torch.arange(100) >= 30)
    assert torch.equal(layer["1.weight"].view(-1), torch.arange(50) >= 15)


def test_ties_only_count_live_positions():
    model = _constant_model()
    old = lt.Mask.ones_like(model)
    old["0.weight"].view(-1)[::2] = False  # 50 live in the first layer, 100 total live
    new = lt.prune_magnitude(model, old, 0.3)  # 30 of the live go: the first 30 live positions
    live = flat(old).nonzero().squeeze(1)
    expected = flat(old).clone()
    expected[live[:30]] = False
    assert torch.equal(flat(new), expected)


def test_mixed_ties_exact_count_and_earliest_first():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 9), nn.Linear(9, 7))
    levels = torch.tensor([0.5, 1.0, 2.0])
    with torch.no_grad():
        for m in model:  # three magnitudes, random signs: every threshold falls in a large tie group
            idx = torch.randint(0, 3, m.weight.shape, generator=g)
            sign = torch.randint(0, 2, m.weight.shape, generator=g) * 2 - 1
            m.weight.copy_(levels[idx] * sign)
    ones = lt.Mask.ones_like(model)
    w = flat_abs(model, list(ones))
    for fraction in (0.1, 0.25, 0.33, 0.5, 0.7):
        new = lt.prune_magnitude(model, ones, fraction)
        assert new == lt.prune_magnitude(model, ones, fraction)
        removed = ~flat(new)
        assert int(removed.sum()) == round(fraction * ones.num_total)
        threshold = float(w[removed].max())
        assert bool((w[~removed] >= threshold).all())
        at = (w == threshold).nonzero().squeeze(1)
        pruned_at = removed[at]
        # Within the tie group the pruned positions come first: a prefix of True then only False.
        first_kept = int((~pruned_at).nonzero()[0]) if bool((~pruned_at).any()) else len(at)
        assert bool(pruned_at[:first_kept].all()) and not bool(pruned_at[first_kept:].any())


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_accelerator_kernels_give_the_same_masks(case, monkeypatch):
    """The torch kernels (used on GPUs) against the numpy ones (CPU), here both on CPU, ties included."""
    import lottery.pruning.topk as prune_module

    model = case.model()
    with torch.no_grad():  # coarse values: many ties at every threshold
        for p in model.parameters():
            p.copy_((p * 8).round() / 8)
    old = _premask(model, 0.3)
    requests = [dict(fraction=0.3), dict(fraction=0.55, scope="layer"),
                dict(fraction=0.2, layer_fractions={case.prunable[0]: 0.5})]
    expected = [lt.prune_magnitude(model, old, **r) for r in requests] + [lt.prune_random(old, 0.4, seed=2)]
    monkeypatch.setattr(prune_module, "_NumpyKernels", prune_module._TorchKernels)
    got = [lt.prune_magnitude(model, old, **r) for r in requests] + [lt.prune_random(old, 0.4, seed=2)]
    assert got == expected


@pytest.mark.parametrize("kernels", ["numpy", "torch"])
def test_float64_near_ties_remove_the_exact_count(kernels, monkeypatch):
    """float64 magnitudes 1e-12 apart, which float32 rounds to one value: the exact count, the smallest first."""
    import lottery.pruning.topk as prune_module

    layer = nn.Linear(10, 10).double()
    with torch.no_grad():
        layer.weight.copy_(1.0 + torch.randperm(100, generator=torch.Generator().manual_seed(0)).double()
                           .view(10, 10) * 1e-12)
    assert len(torch.unique(layer.weight.detach().float())) == 1  # one value in float32
    if kernels == "torch":  # the accelerator path, here on the CPU
        monkeypatch.setattr(prune_module, "_NumpyKernels", prune_module._TorchKernels)
    mask = lt.prune_magnitude(layer, lt.Mask.ones_like(layer), 0.37)
    removed = layer.weight.detach()[~mask["weight"]]
    assert len(removed) == 37
    assert bool(removed.max() < layer.weight.detach()[mask["weight"]].min())


@pytest.mark.parametrize("chunk", [1, 7, 64])
@pytest.mark.parametrize("kernels", ["numpy", "torch"])
def test_chunk_boundaries_change_nothing(chunk, kernels, monkeypatch):
    """Layers of millions of weights are scored in chunks; tiny chunks here cross every boundary case."""
    import lottery.pruning.topk as prune_module

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 11), nn.Linear(11, 5), nn.Conv1d(5, 3, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((p * 6).round() / 6)
    old = _premask(model, 0.25)
    requests = [dict(fraction=0.3), dict(fraction=0.45, scope="layer"),
                dict(fraction=0.2, layer_fractions={"1.weight": 0.6})]
    expected = [lt.prune_magnitude(model, old, **r) for r in requests] + [lt.prune_random(old, 0.5, seed=1)]
    monkeypatch.setattr(prune_module, "_CHUNK", chunk)
    if kernels == "torch":
        monkeypatch.setattr(prune_module, "_NumpyKernels", prune_module._TorchKernels)
    got = [lt.prune_magnitude(model, old, **r) for r in requests] + [lt.prune_random(old, 0.5, seed=1)]
    assert got == expected


# -- nesting and purity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_masks_nest_across_levels(case, scope):
    model = case.model()
    g = torch.Generator().manual_seed(1)
    mask = lt.Mask.ones_like(model)
    params = dict(model.named_parameters())
    history = [mask]
    for level in range(5):
        with torch.no_grad():  # "training" between levels moves the weights
            for k in mask:
                params[k].add_(0.05 * torch.randn(params[k].shape, generator=g))
        mask.apply(model)
        new = lt.prune_magnitude(model, mask, 0.2, scope=scope)
        assert new.is_subset_of(mask) and new.num_kept < mask.num_kept
        if scope == "global":
            assert new.num_kept == _expected_kept(mask.num_kept, 0.2)
        history.append(new)
        mask = new
    for earlier, later in zip(history, history[2:]):
        assert later.is_subset_of(earlier)
    assert not history[0].is_subset_of(history[-1])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_pruning_mutates_neither_the_mask_nor_the_model(case):
    model = case.model()
    old = _premask(model)
    old_copy = old.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    new = lt.prune_magnitude(model, old, 0.5)
    assert old == old_copy
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    for k in new:  # the result owns its tensors: editing it leaves the input alone
        new[k].fill_(False)
    assert old == old_copy
    rnd = lt.prune_random(old, 0.5, seed=0)
    for k in rnd:
        rnd[k].fill_(False)
    assert old == old_copy


# -- random pruning -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_prune_random_counts_and_seeding(case):
    model = case.model()
    old = lt.Mask.ones_like(model)
    layer = lt.prune_random(old, 0.3)  # scope "layer" by default
    for k in old:
        assert layer.layer_kept()[k] == _expected_kept(old.layer_kept()[k], 0.3)
    glob = lt.prune_random(old, 0.3, scope="global", seed=2)
    assert glob.num_kept == _expected_kept(old.num_kept, 0.3)
    assert lt.prune_random(old, 0.3, seed=5) == lt.prune_random(old, 0.3, seed=5)
    assert lt.prune_random(old, 0.3, seed=5) != lt.prune_random(old, 0.3, seed=6)
    nested = lt.prune_random(layer, 0.5, seed=1)
    assert nested.is_subset_of(layer)
    for k in old:
        assert nested.layer_kept()[k] == _expected_kept(layer.layer_kept()[k], 0.5)


def test_prune_random_is_not_magnitude_pruning():
    torch.manual_seed(0)
    model = nn.Linear(40, 30)
    ones = lt.Mask.ones_like(model)
    assert lt.prune_random(ones, 0.5, seed=0).iou(lt.prune_magnitude(model, ones, 0.5)) < 0.6


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_random_mask_like_keeps_per_layer_counts(case):
    model = case.model()
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.6)
    rnd = random_mask_like(mask, seed=3)
    assert rnd.layer_kept() == mask.layer_kept() and list(rnd) == list(mask)
    assert rnd != mask
    assert random_mask_like(mask, seed=3) == rnd and random_mask_like(mask, seed=4) != rnd


def test_random_mask_like_full_and_empty_layers():
    mask = lt.Mask({"full": torch.ones(5, 4, dtype=B), "empty": torch.zeros(6, dtype=B),
                    "half": torch.arange(10) < 5})
    rnd = random_mask_like(mask, seed=0)
    assert bool(rnd["full"].all()) and not bool(rnd["empty"].any()) and rnd.layer_kept()["half"] == 5


# -- registry -----------------------------------------------------------------------------------------------


def test_builtin_pruners_are_registered():
    assert {"magnitude", "random"} <= set(PRUNERS)


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_registered_pruner_removes_exactly_the_fraction_of_the_live(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3))
    data = (torch.randn(16, 12), torch.randint(0, 3, (16,)))
    old = _premask(model, 0.3)
    new = PRUNERS.get(name)(model, old, 0.25, scope="global", layer_fractions=None, seed=0, data=data)
    assert isinstance(new, lt.Mask) and new.is_subset_of(old)
    assert new.num_kept == _expected_kept(old.num_kept, 0.25)
    layer = PRUNERS.get(name)(model, old, 0.25, scope="layer", layer_fractions=None, seed=0, data=data)
    assert all(layer.layer_kept()[k] == _expected_kept(old.layer_kept()[k], 0.25) for k in old)


def test_registry_refuses_duplicates():
    reg = Registry("widget")

    @reg.register("a")
    def a():
        return 1

    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)
    assert reg["a"] is a
    original = PRUNERS["magnitude"]
    with pytest.raises(ValueError, match="'magnitude' is already registered"):
        PRUNERS.register("magnitude")(lambda *a, **k: None)
    assert PRUNERS["magnitude"] is original


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown pruning strategy 'magnitud'") as err:
        PRUNERS.get("magnitud")
    assert "magnitude" in str(err.value) and "random" in str(err.value)
    assert isinstance(err.value, ValueError)


# -- bad requests -------------------------------------------------------------------------------------------


BAD_FRACTIONS = [0, 1, -0.1, 1.5, float("nan"), float("inf"), True, False, "0.2", None, 0.0, 1.0]


@pytest.mark.parametrize("bad", BAD_FRACTIONS, ids=repr)
def test_bad_fractions(bad):
    model = nn.Linear(4, 4)
    ones = lt.Mask.ones_like(model)
    with pytest.raises(ConfigError, match=r"\(0, 1\)") as err:
        lt.prune_magnitude(model, ones, bad)
    assert isinstance(err.value, ValueError)
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        lt.prune_random(ones, bad)


@pytest.mark.parametrize("bad", [1, -0.1, 1.5, float("nan"), True, "0.1"], ids=repr)
def test_bad_layer_fractions(bad):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match=r"layer_fractions\['1.weight'\].*\[0, 1\)"):
        lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.2, layer_fractions={"1.weight": bad})


def test_bad_scope():
    model = nn.Linear(4, 4)
    with pytest.raises(ConfigError, match="global, layer.*'foo'"):
        lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.2, scope="foo")


def test_layer_fractions_with_an_unknown_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match=r"fc3\.weight.*known: 0\.weight, 1\.weight"):
        lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.2, layer_fractions={"fc3.weight": 0.1})
    with pytest.raises(ConfigError, match="0.bias"):  # a parameter, but not a masked one
        lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.2, layer_fractions={"0.bias": 0.1})


def test_pruning_a_model_the_mask_does_not_fit():
    mask = lt.Mask.ones_like(nn.Linear(4, 4))
    with pytest.raises(MaskMismatchError):
        lt.prune_magnitude(nn.Linear(4, 5), mask, 0.2)
    with pytest.raises(MaskMismatchError):
        lt.prune_magnitude(nn.Sequential(nn.Linear(4, 4)), mask, 0.2)


def test_prune_by_scores_needs_a_score_for_every_masked_weight():
    mask = lt.Mask({"a": torch.ones(3, dtype=B), "b": torch.ones(2, dtype=B)})
    with pytest.raises(MaskMismatchError, match="'b'"):
        lt.prune_by_scores({"a": torch.rand(3)}, mask, 0.5)
    out = lt.prune_by_scores({"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([0.5, 9.0])}, mask, 0.4)
    assert out["a"].tolist() == [True, False, True] and out["b"].tolist() == [False, True]  # 2 of 5, by score


def test_fraction_rounds_to_the_nearest_count():
    mask = lt.Mask({"w": torch.ones(7, dtype=B)})
    for fraction in (0.05, 0.08, 0.3, 0.5, 0.95):
        out = lt.prune_by_scores({"w": torch.arange(7.0)}, mask, fraction)
        assert out.num_kept == 7 - round(fraction * 7)
        assert math.isclose(out.density, (7 - round(fraction * 7)) / 7)


def test_lowest_positions_counts_only_live_weights_and_refuses_more_than_live():
    """The selection under every pruner: signed scores unless told ``absolute``; ``n`` at most the live count."""
    from lottery.pruning.topk import lowest_positions

    values = {"w": torch.tensor([-3.0, 1.0, -0.5, 2.0])}
    mask = {"w": torch.tensor([True, True, True, False])}
    assert lowest_positions(values, mask, ["w"], 0) == {}
    assert lowest_positions(values, mask, ["w"], 1)["w"].tolist() == [True, False, False, False]  # signed: -3
    assert lowest_positions(values, mask, ["w"], 1, absolute=True)["w"].tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match=r"^cannot remove 4 of 3 live weights$"):
        lowest_positions(values, mask, ["w"], 4)
