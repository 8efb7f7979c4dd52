"""How many genuinely different units each layer has: the symmetry that zero (or constant) init never breaks.

Two units of a layer that start with the same incoming weights and bias receive the same gradient forever, so a
zero-initialized net trains as if every hidden layer had one unit. ``symmetry_report`` makes that visible.

>>> import torch
>>> from lottery.symmetry import symmetry_report
>>> layer = torch.nn.Linear(3, 4)
>>> with torch.no_grad():
...     _ = layer.weight.fill_(0.5), layer.bias.zero_()
>>> symmetry_report(torch.nn.Sequential(layer))
{'0.weight': {'units': 4, 'distinct': 1}}
"""
from __future__ import annotations

import torch
from torch import nn

from lottery.errors import ConfigError
from lottery.layers import WEIGHT_LAYERS


@torch.no_grad()
def symmetry_report(model: nn.Module, tol: float = 1e-5) -> dict[str, dict[str, int]]:
    """``{weight name: {"units": n, "distinct": k}}`` for every Linear/Conv layer.

    A unit is an output unit or filter: its row of the weight plus its bias. Two units count as one when no
    entry differs by more than ``tol`` times the layer's largest |weight| (so the count ignores the scale and
    float noise, never genuine differences between randomly initialized units).
    """
    if not tol >= 0:
        raise ConfigError(f"tol must be >= 0, got {tol!r}")
    report = {}
    for name, module in model.named_modules():
        if not isinstance(module, WEIGHT_LAYERS):
            continue
        rows = module.weight.detach().reshape(module.weight.shape[0], -1).double().cpu()
        if module.bias is not None:
            rows = torch.cat([rows, module.bias.detach().double().cpu()[:, None]], dim=1)
        key = f"{name}.weight" if name else "weight"
        report[key] = {"units": rows.shape[0], "distinct": _count_distinct(rows, tol * float(rows.abs().max()))}
    return report


def _count_distinct(rows: torch.Tensor, atol: float) -> int:
    """Greedy clustering of rows within ``atol`` (max-norm), in O(n·d) for the usual all-same / all-different cases.

    A random projection sorts the rows; rows within ``atol`` of each other project within ``atol·|r|₁``, so a
    larger gap between neighbours separates them for sure and only runs without such a gap need comparing.
    """
    n, d = rows.shape
    if n <= 1:
        return n
    r = torch.randn(d, generator=torch.Generator().manual_seed(0), dtype=rows.dtype)
    proj = rows @ r
    order = proj.argsort()
    gaps = proj[order].diff() > atol * float(r.abs().sum()) * (1 + 1e-9) + 1e-12
    starts = [0, *(gaps.nonzero().squeeze(1) + 1).tolist(), n]
    distinct = 0
    for lo, hi in zip(starts[:-1], starts[1:]):
        if hi - lo == 1:
            distinct += 1
            continue
        reps = torch.empty(0, d, dtype=rows.dtype)
        for i in order[lo:hi].tolist():
            if reps.shape[0] == 0 or bool(((reps - rows[i]).abs().amax(dim=1) > atol).all()):
                reps = torch.cat([reps, rows[i][None]])
        distinct += reps.shape[0]
    return distinct
