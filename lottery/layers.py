"""The layer kinds that hold a network's weight matrices: Linear and Conv1d/2d/3d.

The init schemes draw these layers' weights (lottery/inits.py), the signal and symmetry analyses read them, and a
mask covers their weights by default (lottery/masks.py): one tuple, which none of them owns.
"""
from __future__ import annotations

from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
