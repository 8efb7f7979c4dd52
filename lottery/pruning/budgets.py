"""Budgets: how many live weights each group of layers keeps. Counts per group are the primitive.

A pruning step is scores → counts → top-k. ``scope_groups`` is the one place that splits the prunable layers
into groups ranked together: all layers in one pool (``scope="global"``), each layer on its own (``"layer"``), and
every ``layer_fractions`` entry on its own whatever the scope. ``kept_counts`` turns fractions into counts
(``round(fraction * kept)`` removed per group); ``prune_to_counts`` keeps exactly those counts, the highest-scored
weights, through the exact top-k of ``lottery.pruning.topk``; ``min_kept`` guards every layer against collapse.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Mapping

import torch

from lottery.errors import ConfigError, MaskMismatchError
from lottery.masks import Mask
from lottery.pruning.topk import count, lowest_positions

SCOPES = ("global", "layer")
Group = tuple  # names of the layers ranked together


def check_fraction(fraction: object, what: str = "fraction", allow_zero: bool = False) -> float:
    """A pruning amount is a fraction of the live weights, strictly inside (0, 1)."""
    interval = "[0, 1)" if allow_zero else "(0, 1)"
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or math.isnan(float(fraction)):
        raise ConfigError(f"{what} must be a number in {interval}, got {fraction!r}")
    lo_ok = fraction >= 0 if allow_zero else fraction > 0
    if not (lo_ok and fraction < 1):
        raise ConfigError(f"{what} must be in {interval} (a fraction of the remaining weights), got {fraction}")
    return float(fraction)


def check_min_kept(min_kept: object) -> int:
    if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 0:
        raise ConfigError(f"min_kept must be an integer >= 0, got {min_kept!r}")
    return min_kept


def scope_groups(mask: Mask, fraction: float, scope: str = "global",
                 layer_fractions: Mapping[str, float] | None = None) -> dict[Group, float]:
    """``{group: fraction removed}``: the layers ranked together, validated (the one copy of this logic)."""
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    fractions = dict(layer_fractions or {})
    unknown = [k for k in fractions if k not in mask]
    if unknown:
        raise ConfigError(f"layer_fractions names {unknown} are not prunable weights; known: {', '.join(mask)}")
    for k, f in fractions.items():
        check_fraction(f, f"layer_fractions['{k}']", allow_zero=True)
    groups: dict[Group, float] = {(k,): float(f) for k, f in fractions.items()}
    rest = tuple(k for k in mask if k not in fractions)
    if rest and scope == "global":
        groups[rest] = fraction
    else:
        groups.update({(k,): fraction for k in rest})
    return groups


def kept_counts(mask: Mask, fraction: float, scope: str = "global",
                layer_fractions: Mapping[str, float] | None = None) -> dict[Group, int]:
    """Weights each group keeps after removing ``fraction`` of its live weights in one shot
    (``round(fraction * kept)`` removed). ``fraction`` may be 0 (no change)."""
    fraction = check_fraction(fraction, "fraction", allow_zero=True)
    out = {}
    for group, f in scope_groups(mask, fraction, scope, layer_fractions).items():
        kept = sum(count(mask[k]) for k in group)
        out[group] = kept - round(f * kept)
    return out


def prune_to_counts(scores: Mapping[str, torch.Tensor], mask: Mask, counts: Mapping[Group, int],
                    min_kept: int = 0, *, absolute: bool = False) -> Mask:
    """New mask keeping exactly ``counts[group]`` of each group's live weights: the highest-scored ones
    (``|score|`` with ``absolute``, computed a chunk at a time, so magnitude pruning never copies the weights).

    ``min_kept``: every layer keeps at least that many of its highest-scored live weights (all of them if it has
    fewer); the group still loses exactly its share, taken from the other candidates (fewer only if too few are
    left). Never mutates ``mask``.
    """
    min_kept = check_min_kept(min_kept)
    covered = [k for group in counts for k in group]
    if sorted(covered) != sorted(mask) or len(set(covered)) != len(covered):
        raise ValueError("counts must name every masked layer exactly once (build them with kept_counts)")
    missing = [k for k in mask if k not in scores]
    if missing:
        raise MaskMismatchError(f"no scores for masked weights {missing}")

    removed: dict[str, torch.Tensor] = {}
    for group, target in counts.items():
        names = list(group)
        kept = sum(count(mask[k]) for k in names)
        if isinstance(target, bool) or not isinstance(target, Integral) or not 0 <= target <= kept:
            raise ValueError(f"cannot keep {target!r} of the {kept} live weights of {names}")
        n, candidates = kept - int(target), mask
        if min_kept and n:  # collapse guard: a layer's top-scored min_kept live weights are not candidates
            candidates = {k: lowest_positions(scores, mask, [k], count(mask[k]) - min_kept, absolute).get(
                k, torch.zeros_like(mask[k])) for k in names}
            n = min(n, sum(count(c) for c in candidates.values()))  # exact, unless too few candidates remain
        removed.update(lowest_positions(scores, candidates, names, n, absolute))
    # ``removed`` is ours to overwrite: turning it into the kept flags in place saves a mask's worth of memory.
    return Mask({k: removed[k].logical_not_().logical_and_(mask[k]) if k in removed else mask[k].clone()
                 for k in mask})


def prune_by_scores(
    scores: Mapping[str, torch.Tensor],
    mask: Mask,
    fraction: float,
    scope: str = "global",
    layer_fractions: Mapping[str, float] | None = None,
    min_kept: int = 0,
    *,
    absolute: bool = False,
) -> Mask:
    """New mask without the lowest-scored ``fraction`` of the live weights (per scope). The generic pruner.

    Exactly ``round(fraction * kept)`` weights go per group; ``min_kept`` as in ``prune_to_counts``.
    """
    fraction = check_fraction(fraction, "prune fraction")
    check_min_kept(min_kept)
    counts = kept_counts(mask, fraction, scope, layer_fractions)
    return prune_to_counts(scores, mask, counts, min_kept, absolute=absolute)


def collapsed_layers(mask: Mask) -> list[str]:
    """Names of the layers with no weight left (layer collapse: the network can no longer pass a signal)."""
    return [k for k, t in mask.items() if t.numel() and not bool(t.any())]
