"""Calibrated controls: an init drawn for the dense fan-in, scaled to the fan-in a mask leaves.

An init scheme sets each unit's weight variance from its fan-in (He: 2 / fan_in). Under a mask that keeps k of a
unit's fan_in inputs, the unit's pre-activation variance shrinks by k / fan_in, so at density p the signal of a
deep network shrinks by ~√p per layer and a random-mask or reinit control at low density starts at chance — a
handicap, not a control. Scaling every kept weight of a unit by √(fan_in / k) restores the variance the scheme
meant (the calibration of sparse-training work such as Evci et al. 2022 and Liu et al. 2022). The fan-in is
counted from the layer's own mask: inputs from units a structured mask removed upstream are not discounted.
"""
from __future__ import annotations

from typing import Mapping

import torch


def scale_to_fan_in(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict:
    """A copy of ``state`` whose masked weights are scaled, unit by unit (output row / channel), by
    √(fan_in / surviving fan_in); units with no weights left, and tensors the mask does not cover, are unchanged.

    >>> w = torch.ones(2, 4)
    >>> m = torch.tensor([[True, True, True, True], [True, False, False, False]])
    >>> scale_to_fan_in({"fc.weight": w}, {"fc.weight": m})["fc.weight"][:, 0].tolist()
    [1.0, 2.0]
    """
    out = dict(state)
    for name, keep in mask.items():
        w = state[name]
        kept = keep.reshape(keep.shape[0], -1).sum(1).to(w.dtype)
        fan_in = keep[0].numel()
        factor = torch.where(kept > 0, (fan_in / kept.clamp(min=1)).sqrt(), torch.ones_like(kept))
        out[name] = w * factor.reshape(-1, *([1] * (w.dim() - 1)))
    return out
