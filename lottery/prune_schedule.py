"""Pruning in several steps that land on exact counts: SynFlow's 100 rounds and gradual pruning's every-Δt steps.

A multi-step pruner must keep an exact number of weights per scope at every step, and its last step must keep
exactly what one-shot ``prune_by_scores`` keeps for the same fraction, so densities are comparable across
strategies. ``kept_counts`` states that target (one number per scope: all layers together for global scope, each
layer for layer scope, each ``layer_fractions`` entry on its own); ``prune_to_counts`` takes one step toward it.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from lottery.errors import ConfigError
from lottery.masks import Mask
from lottery.prune import SCOPES, check_fraction, prune_by_scores

Group = tuple  # names of the layers ranked together


def _kept(mask: Mask, group: Group) -> int:
    return sum(int(torch.count_nonzero(mask[k])) for k in group)


def kept_counts(mask: Mask, fraction: float, scope: str = "global",
                layer_fractions: Mapping[str, float] | None = None) -> dict[Group, int]:
    """Weights each scope keeps after removing ``fraction`` of its live weights in one shot (``round``, as
    ``prune_by_scores`` does). ``fraction`` may be 0 (no change)."""
    check_fraction(fraction, "fraction", allow_zero=True)
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    fractions = dict(layer_fractions or {})
    groups: dict[Group, float] = {(k,): f for k, f in fractions.items()}
    rest = tuple(k for k in mask if k not in fractions)
    if rest and scope == "global":
        groups[rest] = fraction
    else:
        groups.update({(k,): fraction for k in rest})
    out = {}
    for group, f in groups.items():
        kept = _kept(mask, group)
        out[group] = kept - round(check_fraction(f, "fraction", allow_zero=True) * kept)
    return out


def _fraction(remove: int, kept: int) -> float:
    """A fraction ``f`` with ``round(f * kept) == remove``; just below 1 when all must go (fractions are < 1)."""
    if remove == kept:
        return math.nextafter(1.0, 0.0)
    return remove / kept


def prune_to_counts(scores: Mapping[str, torch.Tensor], mask: Mask, counts: Mapping[Group, int]) -> Mask:
    """New mask keeping exactly ``counts[group]`` of each group's live weights: the highest-scored ones.

    Groups come from ``kept_counts``; at most one of them spans several layers (global scope), and it is ranked
    as one pool through ``prune_by_scores``'s global scope, the single-layer groups through ``layer_fractions``.
    """
    covered = [k for group in counts for k in group]
    if sorted(covered) != sorted(mask):
        raise ValueError("counts must name every masked layer exactly once (build them with kept_counts)")
    layer_fractions: dict[str, float] = {}
    pooled: float | None = None
    for group, target in counts.items():
        kept = _kept(mask, group)
        if not 0 <= target <= kept:
            raise ValueError(f"cannot keep {target} of the {kept} live weights of {list(group)}")
        f = _fraction(kept - target, kept) if kept else 0.0
        if len(group) > 1 and f > 0:
            if pooled is not None:
                raise ValueError("only one group may span several layers (the global pool)")
            pooled = f
        else:
            layer_fractions.update({k: f for k in group})
    if pooled is None and not any(layer_fractions.values()):
        return mask.clone()
    if pooled is None:  # every layer has its own fraction; the global fraction below ranks nothing
        return prune_by_scores(scores, mask, 0.5, "layer", layer_fractions)
    return prune_by_scores(scores, mask, pooled, "global", layer_fractions)
