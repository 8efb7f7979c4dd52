"""Random pruning: the random-mask control of IMP, at the same counts per scope or per layer."""
from __future__ import annotations

from typing import Mapping

import torch

from lottery.masks import Mask
from lottery.pruning.budgets import prune_by_scores, prune_to_counts
from lottery.pruning.registry import PRUNERS
from lottery.pruning.topk import count


def random_scores(mask: Mask, seed: int) -> dict[str, torch.Tensor]:
    """Seeded uniform scores, drawn on the CPU so a seed gives the same mask on every device."""
    g = torch.Generator().manual_seed(int(seed))
    return {k: torch.rand(t.shape, generator=g).to(t.device) for k, t in mask.items()}


def prune_random(mask: Mask, fraction: float, scope: str = "layer", seed: int = 0,
                 layer_fractions: Mapping[str, float] | None = None, min_kept: int = 0) -> Mask:
    """Remove ``fraction`` of the currently kept weights at random (the random-pruning control)."""
    return prune_by_scores(random_scores(mask, seed), mask, fraction, scope, layer_fractions, min_kept)


def random_mask_like(mask: Mask, seed: int = 0) -> Mask:
    """A fresh random mask with exactly the same number of kept weights in every layer as ``mask``."""
    full = Mask({k: torch.ones_like(t) for k, t in mask.items()})
    return prune_to_counts(random_scores(mask, seed), full, {(k,): count(t) for k, t in mask.items()})


@PRUNERS.register("random")
def _random(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None, min_kept=0):
    return prune_random(mask, fraction, scope, seed, layer_fractions, min_kept)
