"""The one selection kernel: flag the ``n`` lowest-scored live weights of a group of layers, exactly.

Exact for every float dtype: scores are compared in their own dtype (or one that holds every value of each layer
exactly when layers of different dtypes are ranked together), never rounded to a narrower one, and ties at the
threshold are broken by position (layer order, then flat index), so exactly ``n`` weights are flagged and the
result is deterministic.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

_CHUNK = 1 << 20  # positions per step: temporaries stay at a few MiB however large a layer is


def count(t: torch.Tensor) -> int:
    """Number of True flags (numpy on CPU: one thread, see ``_NumpyKernels``; far faster than ``.sum()``)."""
    return int(np.count_nonzero(t.numpy())) if t.device.type == "cpu" else int(torch.count_nonzero(t))


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
    def cast(x, like):
        return x if x.dtype == like.dtype else x.astype(like.dtype)

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
    count = staticmethod(count)

    @staticmethod
    def abs(x, out):
        return torch.abs(x, out=out)

    @staticmethod
    def cast(x, like):
        return x.to(like.dtype)

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
        return torch.kthvalue(buf, n).values  # in the buffer's own dtype: a float32 cast would merge values


def _common_dtype(tensors) -> torch.dtype:
    """The narrowest float dtype that holds every value of every tensor exactly (``promote_types`` does)."""
    dtype = None
    for t in tensors:
        dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return dtype


def lowest_positions(
    values: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], names: Sequence[str], n: int,
    absolute: bool = False,
) -> dict[str, torch.Tensor]:
    """Bool tensors flagging the ``n`` lowest-scored live weights across ``names`` (ties: first by position).

    A weight's score is its value, or ``|value|`` with ``absolute``, computed a chunk at a time into one scratch
    buffer, so magnitude pruning never holds a second copy of all weights. The live scores are packed into one
    buffer and the threshold comes from an in-place selection (``ndarray.partition`` on CPU, ``kthvalue`` on
    accelerators), never a full sort: peak extra memory is one score per live weight plus a few chunk-sized
    temporaries, then one bool per position for the result. Returns ``{}`` when ``n <= 0``.
    """
    if n <= 0:
        return {}
    live = sum(count(mask[k]) for k in names)
    if n > live:
        raise ValueError(f"cannot remove {n} of {live} live weights")
    first = values[names[0]]
    dtype = _common_dtype(values[k] for k in names)
    on_cpu = dtype != torch.bfloat16 and all(values[k].device.type == "cpu" for k in names)
    K = _NumpyKernels if on_cpu else _TorchKernels
    flats = {k: K.view(values[k].detach().reshape(-1)) for k in names}
    lives = {k: K.view(mask[k].reshape(-1)) for k in names}
    size = min(_CHUNK, max(len(f) for f in flats.values()))
    scratch = K.view(torch.empty(size if absolute else 0, dtype=dtype, device=first.device))

    def chunks():  # (name, start, live flags, scores) in position order; the scores live until the next step
        for k in names:
            for a in range(0, len(flats[k]), _CHUNK):
                s = K.cast(flats[k][a : a + _CHUNK], scratch)  # a copy only when layers' dtypes differ
                yield k, a, lives[k][a : a + _CHUNK], (K.abs(s, scratch[: len(s)]) if absolute else s)

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
