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
    interval = "[0, 1)" if allow_zero else "(0, 1)"
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or math.isnan(float(fraction)):
        raise ConfigError(f"{what} must be a number in {interval}, got {fraction!r}")
    lo_ok = fraction >= 0 if allow_zero else fraction > 0
    if not (lo_ok and fraction < 1):
        raise ConfigError(f"{what} must be in {interval} (a fraction of the remaining weights), got {fraction}")
    return float(fraction)


def _count(t: torch.Tensor) -> int:
    """Number of True flags (numpy on CPU: one thread, see ``_NumpyKernels``; far faster than ``.sum()``)."""
    return int(np.count_nonzero(t.numpy())) if t.device.type == "cpu" else int(torch.count_nonzero(t))


_CHUNK = 1 << 20  # positions per step: temporaries stay at a few MiB however large a layer is


class _NumpyKernels:
    """The per-chunk steps on CPU, through numpy views of the tensors (no copies).

    numpy runs each step on one thread. Torch splits every call across its threads and waits at a barrier, and a
    pruning makes ~100 such calls: on a 2-core machine shared with other processes that measured 4–8 s instead
    of ~1 s for 25M weights. The selection itself (``ndarray.partition``) is single-threaded either way.
    """

    view = staticmethod(lambda t: t.numpy())
    count = staticmethod(np.count_nonzero)

    @staticmethod
    def abs(x, out):
        return np.abs(x, out=out)

    @staticmethod
    def pack(scores, live, out):  # out[:] = scores[live], ~20× faster than torch's boolean indexing on CPU
        np.compress(live, scores, out=out)

    @staticmethod
    def flag_below(scores, live, threshold, out):
        np.less(scores, threshold, out=out)
        np.logical_and(out, live, out=out)

    @staticmethod
    def first_ties(scores, live, threshold, limit):
        return np.flatnonzero((scores == threshold) & live)[:limit]

    @staticmethod
    def kth_smallest(buf, n):
        buf.partition(n - 1)  # in place and linear time: no sort, no copy
        return buf[n - 1]


class _TorchKernels:
    """The same steps in torch: for accelerators, and for bfloat16, which numpy lacks."""

    view = staticmethod(lambda t: t)
    count = staticmethod(_count)

    @staticmethod
    def abs(x, out):
        return torch.abs(x, out=out)

    @staticmethod
    def pack(scores, live, out):
        out.copy_(torch.masked_select(scores, live))

    @staticmethod
    def flag_below(scores, live, threshold, out):
        torch.lt(scores, threshold, out=out)
        out &= live

    @staticmethod
    def first_ties(scores, live, threshold, limit):
        return ((scores == threshold) & live).nonzero().squeeze(1)[:limit]

    @staticmethod
    def kth_smallest(buf, n):
        # float64 as it is: a float32 copy would merge neighbouring values and move the threshold off the data
        return torch.kthvalue(buf if buf.dtype == torch.float64 else buf.float(), n).values.to(buf.dtype)


def _lowest_positions(
    values: Mapping[str, torch.Tensor], mask: Mask, names: Sequence[str], n: int, absolute: bool = False
) -> dict[str, torch.Tensor]:
    """Bool tensors flagging the ``n`` lowest-scored live weights across ``names`` (ties: first by position).

    A weight's score is its value, or ``|value|`` with ``absolute``, computed a chunk at a time into one scratch
    buffer, so magnitude pruning never holds a second copy of all weights. The live scores are packed into one
    buffer and the threshold comes from an in-place selection (``ndarray.partition`` on CPU, ``kthvalue`` on
    accelerators), never a full sort: peak extra memory is one score per live weight plus a few chunk-sized
    temporaries, then one bool per position for the result.
    """
    if n <= 0:
        return {}
    live = sum(_count(mask[k]) for k in names)
    if n > live:
        raise ValueError(f"cannot remove {n} of {live} live weights")
    first = values[names[0]]
    on_cpu = all(values[k].device.type == "cpu" and values[k].dtype != torch.bfloat16 for k in names)
    K = _NumpyKernels if on_cpu else _TorchKernels
    flats = {k: K.view(values[k].detach().reshape(-1)) for k in names}
    lives = {k: K.view(mask[k].reshape(-1)) for k in names}
    size = min(_CHUNK, max(len(f) for f in flats.values()))
    scratch = K.view(torch.empty(size, dtype=first.dtype, device=first.device)) if absolute else None

    def chunks():  # (name, start, live flags, scores) in position order; the scores live until the next step
        for k in names:
            for a in range(0, len(flats[k]), _CHUNK):
                s = flats[k][a : a + _CHUNK]
                yield k, a, lives[k][a : a + _CHUNK], (K.abs(s, scratch[: len(s)]) if absolute else s)

    dtype = torch.float32 if first.dtype == torch.bfloat16 else first.dtype  # holds every bfloat16 exactly
    buf = torch.empty(live, dtype=dtype, device=first.device)
    off = 0
    for _, _, m, s in chunks():
        c = K.count(m)
        K.pack(s, m, K.view(buf[off : off + c]))
        off += c
    threshold = K.kth_smallest(K.view(buf), n)
    del buf

    below = {k: torch.empty(mask[k].numel(), dtype=torch.bool, device=mask[k].device) for k in names}
    flags = {k: K.view(b) for k, b in below.items()}
    for k, a, m, s in chunks():
        K.flag_below(s, m, threshold, flags[k][a : a + len(m)])
    ties_left = n - sum(K.count(f) for f in flags.values())
    if ties_left > 0:  # deterministic ties: the earliest live positions at the threshold go first
        for k, a, m, s in chunks():
            idx = K.first_ties(s, m, threshold, ties_left)
            flags[k][idx + a] = True
            ties_left -= len(idx)
            if ties_left <= 0:
                break
    return {k: b.view(mask[k].shape) for k, b in below.items()}


def _prune(
    values: Mapping[str, torch.Tensor],
    mask: Mask,
    fraction: float,
    scope: str,
    layer_fractions: Mapping[str, float] | None,
    absolute: bool,
    min_kept: int = 0,
) -> Mask:
    """Validate the request, split the live weights into scopes, and remove each scope's lowest scores."""
    fraction = check_fraction(fraction, "prune fraction")
    if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 0:
        raise ConfigError(f"min_kept must be an integer >= 0, got {min_kept!r}")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    layer_fractions = dict(layer_fractions or {})
    unknown = [k for k in layer_fractions if k not in mask]
    if unknown:
        raise ConfigError(f"layer_fractions names {unknown} are not prunable weights; known: {', '.join(mask)}")
    for k, f in layer_fractions.items():
        check_fraction(f, f"layer_fractions['{k}']", allow_zero=True)
    missing = [k for k in mask if k not in values]
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
        n, candidates = round(f * kept), mask
        if min_kept:  # collapse guard: a layer's top-scored min_kept live weights are not candidates for removal
            candidates = {k: _lowest_positions(values, mask, [k], _count(mask[k]) - min_kept, absolute).get(
                k, torch.zeros_like(mask[k])) for k in names}
            n = min(n, sum(_count(c) for c in candidates.values()))  # exact, unless too few candidates remain
        removed.update(_lowest_positions(values, candidates, names, n, absolute))
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
) -> Mask:
    """New mask without the lowest-scored ``fraction`` of the live weights (per scope). The generic pruner.

    ``min_kept``: every layer keeps at least that many of its highest-scored live weights (all of them if it has
    fewer); the scope still loses exactly ``round(fraction * kept)`` weights, taken from the other candidates.
    """
    return _prune(scores, mask, fraction, scope, layer_fractions, absolute=False, min_kept=min_kept)


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
    min_kept: int = 0,
) -> Mask:
    """Remove ``fraction`` of the currently kept weights with the smallest |w| (IMP's pruning step).

    >>> import torch, lottery as lt
    >>> model = torch.nn.Linear(10, 10)
    >>> lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.2).num_kept
    80
    """
    params = mask.check_fits(model)
    with torch.no_grad():
        return _prune(params, mask, fraction, scope, layer_fractions, absolute=True, min_kept=min_kept)


def prune_random(mask: Mask, fraction: float, scope: str = "layer", seed: int = 0,
                 layer_fractions: Mapping[str, float] | None = None, min_kept: int = 0) -> Mask:
    """Remove ``fraction`` of the currently kept weights at random (the random-pruning control)."""
    return prune_by_scores(_random_scores(mask, seed), mask, fraction, scope, layer_fractions, min_kept)


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
def _magnitude(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None, min_kept=0):
    return prune_magnitude(model, mask, fraction, scope, layer_fractions, min_kept)


@PRUNERS.register("random")
def _random(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None, min_kept=0):
    return prune_random(mask, fraction, scope, seed, layer_fractions, min_kept)


def collapsed_layers(mask: Mask) -> list[str]:
    """Names of the layers with no weight left (layer collapse: the network can no longer pass a signal)."""
    return [k for k, t in mask.items() if t.numel() and not bool(t.any())]


# pruning-at-initialization strategies (snip, grasp, synflow, magnitude_init) register themselves on import
from lottery import pruners_init  # noqa: E402,F401  isort: skip
