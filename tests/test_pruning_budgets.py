"""`lottery.pruning` budgets and top-k: counts per group are exact for every float dtype and both kernels (numpy
on CPU, torch on accelerators), whatever the spacing of the scores; groups come from one place; the minimum kept
applies to every registered strategy."""
import inspect

import pytest
import torch
from torch import nn

import lottery as lt
import lottery.pruning.topk as topk
from lottery.config import validate
from lottery.errors import ConfigError
from lottery.pruning import PRUNERS, kept_counts, prune_by_scores, prune_to_counts, scope_groups

from tests.engine_helpers import tiny

KERNELS = ["numpy", "torch"]


def _use(kernels, monkeypatch):
    if kernels == "torch":  # the accelerator path, run on the CPU
        monkeypatch.setattr(topk, "_NumpyKernels", topk._TorchKernels)


@pytest.mark.parametrize("kernels", KERNELS)
def test_float64_scores_closer_than_float32_can_tell_apart_keep_exact_counts(kernels, monkeypatch):
    """1 + k·1e-12 are 100 distinct float64 values that are all 1.0 in float32: a float32 selection would see
    one big tie and flag all of them below a threshold of 1.0, or keep the wrong ones."""
    _use(kernels, monkeypatch)
    scores = {"w": 1 + torch.arange(100, dtype=torch.float64).flip(0) * 1e-12}  # descending: ties by position lie
    mask = lt.Mask({"w": torch.ones(100, dtype=torch.bool)})
    new = prune_by_scores(scores, mask, 0.37, "layer")
    assert new.num_kept == 63
    assert torch.equal(new["w"], scores["w"] > 1 + 36.5e-12)  # the 37 smallest (k < 37) are the ones removed


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_float_dtype_removes_exactly_the_lowest(dtype, kernels, monkeypatch):
    _use(kernels, monkeypatch)
    g = torch.Generator().manual_seed(0)
    values = (torch.randn(3000, generator=g) * 4).to(dtype)  # 16-bit dtypes: many exact ties
    mask = lt.Mask({"w": torch.rand(3000, generator=g) < 0.9})
    new = prune_by_scores({"w": values}, mask, 0.3, "layer")
    live = int(mask["w"].sum())
    assert new.num_kept == live - round(0.3 * live) and new.is_subset_of(mask)
    kept, gone = values[new["w"]].double(), values[mask["w"] & ~new["w"]].double()
    assert gone.max() <= kept.min()  # nothing removed ranks above anything kept


@pytest.mark.parametrize("kernels", KERNELS)
def test_layers_of_different_dtypes_rank_together_exactly(kernels, monkeypatch):
    """A global pool of a float64 and a float32 layer compares in float64, so the float64 layer's fine steps
    survive; the |w| of magnitude pruning is taken in that dtype too."""
    _use(kernels, monkeypatch)
    a = 0.5 + torch.arange(50, dtype=torch.float64).flip(0) * 1e-13  # all 0.5 in float32; largest first
    b = torch.tensor([0.25, 0.75] * 25, dtype=torch.float32)
    mask = lt.Mask({"b": torch.ones(50, dtype=torch.bool), "a": torch.ones(50, dtype=torch.bool)})
    new = prune_by_scores({"b": -b, "a": -a}, mask, 0.5, "global", absolute=True)  # |score| ranks
    assert new.layer_kept() == {"b": 25, "a": 25}  # b's 0.75s and a's 25 largest, which come first
    assert torch.equal(new["a"], torch.arange(50) < 25) and torch.equal(new["b"], b == 0.75)


def test_counts_are_the_primitive():
    """``prune_by_scores`` is ``kept_counts`` then ``prune_to_counts``; explicit counts may pool any layers."""
    g = torch.Generator().manual_seed(1)
    scores = {k: torch.rand(n, generator=g) for k, n in [("a", 40), ("b", 30), ("c", 20), ("d", 10)]}
    mask = lt.Mask({k: torch.ones_like(v, dtype=torch.bool) for k, v in scores.items()})
    counts = kept_counts(mask, 0.3, "global", {"d": 0.5})
    assert counts == {("d",): 5, ("a", "b", "c"): 90 - 27}
    assert prune_to_counts(scores, mask, counts) == prune_by_scores(scores, mask, 0.3, "global", {"d": 0.5})
    two_pools = prune_to_counts(scores, mask, {("a", "b"): 7, ("c", "d"): 29})
    assert two_pools["a"].sum() + two_pools["b"].sum() == 7 and two_pools["c"].sum() + two_pools["d"].sum() == 29
    with pytest.raises(ValueError, match="every masked layer exactly once"):
        prune_to_counts(scores, mask, {("a", "b"): 7, ("c",): 3})
    with pytest.raises(ValueError, match="cannot keep 31"):
        prune_to_counts(scores, mask, {("a", "b", "c"): 10, ("d",): 31})


def test_scope_groups_is_the_one_grouping():
    mask = lt.Mask({k: torch.ones(4, dtype=torch.bool) for k in "abc"})
    assert scope_groups(mask, 0.2, "global", {"c": 0.1}) == {("c",): 0.1, ("a", "b"): 0.2}
    assert scope_groups(mask, 0.2, "layer", {"c": 0.1}) == {("c",): 0.1, ("a",): 0.2, ("b",): 0.2}
    with pytest.raises(ConfigError, match="global, layer"):
        scope_groups(mask, 0.2, "row")


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_strategy_takes_the_minimum_kept(name):
    """A 0.95 global cut would empty the 3-unit output layer; with min_kept=4 every layer keeps >= 4 weights
    and the level still removes exactly its share."""
    assert "min_kept" in inspect.signature(PRUNERS[name]).parameters
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # the smallest magnitudes and flows: the first layer to go
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g)
    full = lt.Mask.ones_like(model)
    out = PRUNERS[name](model, full, 0.95, scope="global", seed=1, data=data, min_kept=4)
    assert min(out.layer_kept().values()) >= 4
    assert out.num_kept == full.num_kept - round(0.95 * full.num_kept)


def test_a_strategy_without_min_kept_is_refused_up_front(tmp_path):
    PRUNERS.register("plain")(lambda model, mask, fraction, *, scope, layer_fractions, seed, data: mask)
    try:
        with pytest.raises(ConfigError, match="does not support min_kept_per_layer"):
            validate(tiny(tmp_path, strategy="plain", min_kept_per_layer=2))
    finally:
        del PRUNERS["plain"]
