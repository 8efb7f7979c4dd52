"""Numerical faults: divergence is a recorded result, layer collapse is detected and reported, and
``min_kept_per_layer`` protects a minimum per layer while keeping every other count exact."""
from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lottery as lt
from lottery.pruning import collapsed_layers, prune_by_scores
from tests.engine_helpers import tiny


@pytest.mark.parametrize("overrides", [
    {"init_scale": 1e30},  # the logits overflow at the first evaluation
    {"optimizer": "sgd", "lr": 1e12, "momentum": 0.0},  # the first updates blow the weights up
], ids=["huge-init", "huge-lr"])
def test_divergence_is_a_result_not_a_crash(tmp_path, overrides):
    cfg = tiny(tmp_path, controls=(), **overrides)
    results = lt.run_imp(cfg)
    assert results["status"] == "diverged"
    (entry,) = results["levels"]  # pruning stops: the magnitudes of diverged weights mean nothing
    assert entry["status"] == "diverged" and entry["test_accuracy"] is None
    assert any(not math.isfinite(loss) for _, loss, _ in entry["curve"]) or entry["steps"] == cfg.steps
    again = lt.run_imp(cfg)  # a diverged level is finished, not retried
    assert json.dumps(again["levels"]) == json.dumps(results["levels"])  # (NaN != NaN in a plain ==)


def test_layer_collapse_is_reported_and_min_kept_prevents_it(tmp_path):
    # fc1 (144x16) starts with much smaller weights than fc2 (16x4): global pruning at 95 % per level empties it
    base = dict(model_options={"hidden": [16]}, levels=2, prune_fraction=0.95, controls=(), steps=30, eval_every=10)
    collapsed = lt.run_imp(tiny(tmp_path / "a", **base))
    assert [e["collapsed_layers"] for e in collapsed["levels"]] == [[], [], ["fc1.weight"]]
    assert collapsed["levels"][-1]["layer_density"]["fc1.weight"] == 0.0

    protected = lt.run_imp(tiny(tmp_path / "b", min_kept_per_layer=2, **base))
    for a, b in zip(collapsed["levels"], protected["levels"]):
        assert b["collapsed_layers"] == [] and b["num_kept"] == a["num_kept"]  # same count, spread differently
    assert round(protected["levels"][-1]["layer_density"]["fc1.weight"] * 144 * 16) >= 2


def test_min_kept_default_changes_no_hash_and_no_result():
    base = lt.Config()
    assert base.replace(min_kept_per_layer=0).hash() == base.hash() == "d7d15db9c2"
    assert base.replace(min_kept_per_layer=1).hash() != base.hash()


def test_collapsed_layers():
    mask = lt.Mask({"a": torch.zeros(3, dtype=torch.bool), "b": torch.tensor([True, False])})
    assert collapsed_layers(mask) == ["a"]


SETTINGS = settings(max_examples=40, deadline=None, database=None)


@SETTINGS
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1),
       fraction=st.floats(0.05, 0.95), min_kept=st.integers(0, 12), scope=st.sampled_from(["global", "layer"]))
def test_min_kept_keeps_the_top_weights_of_each_layer_and_exact_counts(sizes, seed, fraction, min_kept, scope):
    g = torch.Generator().manual_seed(seed)
    scores = {f"w{i}": torch.rand(n, generator=g) * (i + 1) ** 3 for i, n in enumerate(sizes)}  # skewed layers
    mask = lt.Mask({k: torch.rand(v.shape, generator=g) < 0.8 for k, v in scores.items()})
    plain = prune_by_scores(scores, mask, fraction, scope)
    new = prune_by_scores(scores, mask, fraction, scope, min_kept=min_kept)
    if min_kept == 0:
        assert new == plain
    assert new.is_subset_of(mask)
    groups = [list(mask)] if scope == "global" else [[k] for k in mask]
    for names in groups:
        live = {k: int(mask[k].sum()) for k in names}
        spare = sum(max(0, n - min_kept) for n in live.values())
        removed = sum(live.values()) - sum(int(new[k].sum()) for k in names)
        assert removed == min(round(fraction * sum(live.values())), spare)  # exact unless the guard runs out
    for k in mask:
        alive = scores[k][mask[k]]
        kept = int(new[k].sum())
        assert kept >= min(min_kept, alive.numel())
        top = alive.sort(descending=True).values[: min(min_kept, alive.numel())]
        assert set(top.tolist()) <= set(scores[k][new[k]].tolist())  # the protected ones are the top-scored
