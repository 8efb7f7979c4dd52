"""Property tests for masks and pruning on random shapes (1–4 tensors of small dims) and random fractions."""
from __future__ import annotations

import os
import tempfile

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lottery as lt
from tests.mask_helpers import flat, flat_abs

SETTINGS = settings(max_examples=30, deadline=None, database=None)  # no .hypothesis/ in the tree

shapes = st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4)
fractions = st.floats(0.01, 0.99, allow_nan=False)
seeds = st.integers(0, 2**31 - 1)


class Bag(nn.Module):
    """Parameters of arbitrary shapes, ``w0``…``wN``: every one is prunable through ``include=``."""

    def __init__(self, shapes, seed: int, ties: bool):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        for i, shape in enumerate(shapes):
            w = torch.randn(shape, generator=g)
            if ties:  # few distinct magnitudes: thresholds fall inside tie groups
                w = (w * 2).round() / 2
            self.register_parameter(f"w{i}", nn.Parameter(w))

    def ones(self) -> lt.Mask:
        return lt.Mask.ones_like(self, include=lambda name, p: True)


def random_mask(shapes, seed: int, density: float) -> lt.Mask:
    g = torch.Generator().manual_seed(seed)
    return lt.Mask({f"w{i}": torch.rand(s, generator=g) < density for i, s in enumerate(shapes)})


@SETTINGS
@given(shapes=shapes, seed=seeds, ties=st.booleans(), pre=st.floats(0.0, 0.9), fraction=fractions,
       scope=st.sampled_from(["global", "layer"]))
def test_counts_are_exact_and_largest_magnitudes_kept(shapes, seed, ties, pre, fraction, scope):
    model = Bag(shapes, seed, ties)
    old = random_mask(shapes, seed + 1, 1.0 - pre)
    if old.num_kept == 0:
        old = model.ones()
    new = lt.prune_magnitude(model, old, fraction, scope=scope)
    assert new.is_subset_of(old)
    groups = [list(old)] if scope == "global" else [[k] for k in old]
    for names in groups:
        alive = sum(old.layer_kept()[k] for k in names)
        assert sum(new.layer_kept()[k] for k in names) == alive - round(fraction * alive)
        w = flat_abs(model, names)
        was, now = flat(lt.Mask({k: old[k] for k in names})), flat(lt.Mask({k: new[k] for k in names}))
        removed = was & ~now
        if bool(removed.any()) and bool(now.any()):
            assert float(w[now].min()) >= float(w[removed].max())
    assert lt.prune_magnitude(model, old, fraction, scope=scope) == new  # deterministic, ties included


@SETTINGS
@given(shapes=shapes, seed=seeds, ties=st.booleans(), steps=st.lists(fractions, min_size=1, max_size=4),
       scope=st.sampled_from(["global", "layer"]))
def test_masks_nest(shapes, seed, ties, steps, scope):
    model = Bag(shapes, seed, ties)
    masks = [model.ones()]
    for fraction in steps:
        if masks[-1].num_kept == 0:
            break
        masks[-1].apply(model)
        masks.append(lt.prune_magnitude(model, masks[-1], fraction, scope=scope))
    for i in range(len(masks)):
        for j in range(i, len(masks)):
            assert masks[j].is_subset_of(masks[i])
            assert masks[j].num_kept <= masks[i].num_kept


@SETTINGS
@given(shapes=shapes, seed=seeds, density=st.floats(0.0, 1.0), fraction=fractions)
def test_random_pruning_counts_and_random_mask_like(shapes, seed, density, fraction):
    old = random_mask(shapes, seed, density)
    new = lt.prune_random(old, fraction, seed=seed)
    for k in old:
        kept = old.layer_kept()[k]
        assert new.layer_kept()[k] == kept - round(fraction * kept)
    assert new.is_subset_of(old)
    like = lt.random_mask_like(old, seed=seed)
    assert like.layer_kept() == old.layer_kept()


@SETTINGS
@given(shapes=shapes, seed=seeds, density=st.floats(0.0, 1.0), poison=st.booleans())
def test_apply_is_idempotent(shapes, seed, density, poison):
    model = Bag(shapes, seed, ties=False)
    mask = random_mask(shapes, seed + 1, density)
    if poison:  # NaN and inf everywhere: pruned ones must still end at exactly 0
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.view(-1)[::2] = float("nan") if i % 2 else float("inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask.apply(model)
    once = {k: v.clone() for k, v in model.state_dict().items()}
    mask.apply(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v.view(torch.uint8), once[k].view(torch.uint8))  # bit for bit, NaNs included
        assert bool((v[~mask[k]] == 0).all())
        assert torch.equal(v[mask[k]].view(torch.uint8), before[k][mask[k]].view(torch.uint8))


dims = st.lists(st.integers(0, 9), min_size=0, max_size=4).map(tuple)


@SETTINGS
@given(shapes=st.lists(dims, min_size=1, max_size=4), seed=seeds, density=st.floats(0.0, 1.0))
def test_save_load_round_trip(shapes, seed, density):
    mask = random_mask(shapes, seed, density)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.mask")
        mask.save(path)
        loaded = lt.Mask.load(path)
    assert loaded == mask and list(loaded) == list(mask)
    assert all(loaded[k].shape == mask[k].shape and loaded[k].dtype == torch.bool for k in mask)


@SETTINGS
@given(shapes=shapes, seed=seeds, da=st.floats(0.0, 1.0), db=st.floats(0.0, 1.0))
def test_iou_is_symmetric_bounded_and_one_on_itself(shapes, seed, da, db):
    a, b = random_mask(shapes, seed, da), random_mask(shapes, seed + 1, db)
    assert a.iou(b) == b.iou(a) and 0.0 <= a.iou(b) <= 1.0
    assert a.iou(a) == 1.0 and b.iou(b) == 1.0
    pa, pb = a.iou(b, per_layer=True), b.iou(a, per_layer=True)
    assert pa == pb and all(0.0 <= v <= 1.0 for v in pa.values())
    assert a.iou(a, per_layer=True) == {k: 1.0 for k in a}
    inter, union = flat(a & b).sum().item(), flat(a | b).sum().item()
    assert a.iou(b) == (inter / union if union else 1.0)
    complement = lt.Mask({k: ~t for k, t in a.items()})
    if 0 < a.num_kept < a.num_total:
        assert a.iou(complement) == 0.0
