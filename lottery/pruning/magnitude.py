"""Magnitude pruning: remove the live weights with the smallest |w| (IMP's step; at init, "magnitude at init")."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from lottery.masks import Mask
from lottery.pruning.budgets import prune_by_scores
from lottery.pruning.registry import PRUNERS


def prune_magnitude(
    model: nn.Module,
    mask: Mask,
    fraction: float,
    scope: str = "global",
    layer_fractions: Mapping[str, float] | None = None,
    min_kept: int = 0,
) -> Mask:
    """Remove ``fraction`` of the currently kept weights with the smallest |w| (IMP's pruning step).

    >>> import torch, lottery as lt
    >>> model = torch.nn.Linear(10, 10)
    >>> lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.2).num_kept
    80
    """
    params = mask.check_fits(model)
    with torch.no_grad():  # |w| is taken a chunk at a time inside the selection: no copy of the weights
        return prune_by_scores(params, mask, fraction, scope, layer_fractions, min_kept, absolute=True)


@PRUNERS.register("magnitude")
def _magnitude(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None, min_kept=0):
    return prune_magnitude(model, mask, fraction, scope, layer_fractions, min_kept)


PRUNERS.register("magnitude_init")(_magnitude)  # the same function, applied to the initial weights
