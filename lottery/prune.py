"""Pruning strategies: scores -> budget per layer -> remove the lowest-scored live weights.

Every strategy ranks only the weights still alive (IMP's "prune 20 % of what remains"), removes exactly
``round(fraction * kept)`` per scope, breaks ties by position (layer order, then flat index) so the count is exact
and the result deterministic, and never mutates its input mask.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from lottery.errors import ConfigError, MaskMismatchError
from lottery.masks import Mask
from lottery.registry import Registry

PRUNERS = Registry("pruning strategy")
SCOPES = ("global", "layer")


def check_fraction(fraction: object, what: str = "fraction", allow_zero: bool = False) -> float:
    """A pruning amount is a fraction of the live weights, strictly inside (0, 1)."""
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or math.isnan(float(fraction)):
        raise ConfigError(f"{what} must be a number in (0, 1), got {fraction!r}")
    lo_ok = fraction >= 0 if allow_zero else fraction > 0
    if not (lo_ok and fraction < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ConfigError(f"{what} must be in {interval} (a fraction of the remaining weights), got {fraction}")
    return float(fraction)


def _count(t: torch.Tensor) -> int:
    return int(torch.count_nonzero(t))  # far faster than bool .sum() on CPU


def _lowest_positions(scores: Mapping[str, torch.Tensor], mask: Mask, names: Sequence[str], n: int) -> dict:
    """Boolean tensors flagging the ``n`` lowest-scored live weights across ``names`` (ties: first by position).

    One buffer holds the scores with dead weights at +inf; the threshold comes from an in-place selection
    (``ndarray.partition`` on CPU, ``kthvalue`` on accelerators), never a full sort. ``scores`` may be a lazy
    mapping (see ``prune_magnitude``), so peak extra memory is one buffer plus one layer's temporaries.
    """
    if n <= 0:
        return {}
    total = sum(_count(mask[k]) for k in names)
    if n > total:
        raise ValueError(f"cannot remove {n} of {total} live weights")
    first = scores[names[0]]
    buf = torch.empty(sum(mask[k].numel() for k in names), dtype=first.dtype, device=first.device)
    inf = torch.tensor(float("inf"), dtype=first.dtype, device=first.device)
    off = 0
    for k in names:
        size = mask[k].numel()
        torch.where(mask[k], scores[k], inf, out=buf[off : off + size].view(mask[k].shape))
        off += size
    if buf.device.type == "cpu":
        arr = buf.numpy()
        arr.partition(n - 1)
        threshold = torch.tensor(arr[n - 1], dtype=buf.dtype)
        del arr
    else:
        threshold = torch.kthvalue(buf.float(), n).values.to(buf.dtype)
    del buf
    below = {}
    for k in names:
        below[k] = (scores[k] < threshold) & mask[k]
    ties_left = n - sum(_count(b) for b in below.values())
    for k in names:  # deterministic ties: the earliest positions at the threshold go first
        if ties_left <= 0:
            break
        tie_idx = ((scores[k] == threshold) & mask[k]).reshape(-1).nonzero().squeeze(1)[:ties_left]
        below[k].view(-1)[tie_idx] = True
        ties_left -= tie_idx.numel()
    return below


class _AbsScores(Mapping):
    """|w| computed on access, so magnitude pruning never holds a second copy of all weights."""

    def __init__(self, params: Mapping[str, torch.Tensor]):
        self._p = params

    def __getitem__(self, k: str) -> torch.Tensor:
        return self._p[k].detach().abs()

    def __iter__(self):
        return iter(self._p)

    def __len__(self) -> int:
        return len(self._p)


def prune_by_scores(
    scores: Mapping[str, torch.Tensor],
    mask: Mask,
    fraction: float,
    scope: str = "global",
    layer_fractions: Mapping[str, float] | None = None,
) -> Mask:
    """New mask without the lowest-scored ``fraction`` of the live weights (per scope). The generic pruner."""
    fraction = check_fraction(fraction, "prune fraction")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    layer_fractions = dict(layer_fractions or {})
    unknown = [k for k in layer_fractions if k not in mask]
    if unknown:
        raise ConfigError(f"layer_fractions names {unknown} are not prunable weights; known: {', '.join(mask)}")
    for k, f in layer_fractions.items():
        check_fraction(f, f"layer_fractions['{k}']", allow_zero=True)
    missing = [k for k in mask if k not in scores]
    if missing:
        raise MaskMismatchError(f"no scores for masked weights {missing}")

    groups: list[tuple[list[str], float]] = [([k], f) for k, f in layer_fractions.items()]
    rest = [k for k in mask if k not in layer_fractions]
    if scope == "global" and rest:
        groups.append((rest, fraction))
    else:
        groups.extend(([k], fraction) for k in rest)

    removed: dict[str, torch.Tensor] = {}
    for names, f in groups:
        kept = sum(_count(mask[k]) for k in names)
        removed.update(_lowest_positions(scores, mask, names, round(f * kept)))
    return Mask({k: (mask[k] & ~removed[k]) if k in removed else mask[k].clone() for k in mask})


def _random_scores(mask: Mask, seed: int) -> dict[str, torch.Tensor]:
    """Seeded uniform scores, drawn on the CPU so a seed gives the same mask on every device."""
    g = torch.Generator().manual_seed(int(seed))
    return {k: torch.rand(t.shape, generator=g).to(t.device) for k, t in mask.items()}


def prune_magnitude(
    model: nn.Module,
    mask: Mask,
    fraction: float,
    scope: str = "global",
    layer_fractions: Mapping[str, float] | None = None,
) -> Mask:
    """Remove ``fraction`` of the currently kept weights with the smallest |w| (IMP's pruning step).

    >>> import torch, lottery as lt
    >>> model = torch.nn.Linear(10, 10)
    >>> lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.2).num_kept
    80
    """
    params = mask.check_fits(model)
    with torch.no_grad():
        return prune_by_scores(_AbsScores(params), mask, fraction, scope, layer_fractions)


def prune_random(mask: Mask, fraction: float, scope: str = "layer", seed: int = 0,
                 layer_fractions: Mapping[str, float] | None = None) -> Mask:
    """Remove ``fraction`` of the currently kept weights at random (the random-pruning control)."""
    return prune_by_scores(_random_scores(mask, seed), mask, fraction, scope, layer_fractions)


def random_mask_like(mask: Mask, seed: int = 0) -> Mask:
    """A fresh random mask with exactly the same number of kept weights in every layer as ``mask``."""
    full = Mask({k: torch.ones_like(t) for k, t in mask.items()})
    scores = _random_scores(mask, seed)
    out = {}
    for k, t in mask.items():
        drop = _lowest_positions(scores, full, [k], t.numel() - _count(t))
        out[k] = ~drop[k] if drop else torch.ones_like(t)
    return Mask(out)


@PRUNERS.register("magnitude")
def _magnitude(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None):
    return prune_magnitude(model, mask, fraction, scope, layer_fractions)


@PRUNERS.register("random")
def _random(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None):
    return prune_random(mask, fraction, scope, seed, layer_fractions)


def collapsed_layers(mask: Mask) -> list[str]:
    """Names of the layers with no weight left (layer collapse: the network can no longer pass a signal)."""
    return [k for k, t in mask.items() if t.numel() and not bool(t.any())]


# pruning-at-initialization strategies (snip, grasp, synflow, magnitude_init) register themselves on import
from lottery import pruners_init  # noqa: E402,F401  isort: skip
