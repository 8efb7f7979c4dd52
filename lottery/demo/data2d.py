"""Two-class 2-D toy data sets for the demo, generated locally from a seed (no download, no scikit-learn).

Small enough to train in a second on a CPU, and drawn in the plane, so the decision boundary shows what the net
learned. Each generator returns points roughly centred on the origin with coordinates of order 1.

>>> from lottery.demo.data2d import make_2d
>>> x, y = make_2d("moons", 10, seed=0)
>>> tuple(x.shape), sorted(set(y.tolist()))
((10, 2), [0, 1])
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from lottery.errors import ConfigError
from lottery.registry import Registry

DATASETS_2D = Registry("2-D data set")


def make_2d(name: str, n: int, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of the data set ``name`` as ``(x float32 [n, 2], y int64 [n])``; half of each class."""
    fn = DATASETS_2D.get(name)
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 2:
        raise ConfigError(f"a 2-D data set needs at least 2 points, got n={n!r}")
    if isinstance(noise, bool) or not isinstance(noise, Real) or not 0 <= noise < 10:
        raise ConfigError(f"noise must be a number in [0, 10), got {noise!r}")
    g = torch.Generator().manual_seed(int(seed))
    y = torch.arange(n) % 2  # balanced classes: chance is 50 %
    t = torch.rand(n, generator=g, dtype=torch.float64)
    x = fn(t, y) + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x.float(), y


@DATASETS_2D.register("moons")
def moons(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Two interleaving half circles (the outer one for class 0), centred."""
    angle = math.pi * t
    outer = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    inner = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], 1)
    return torch.where(y[:, None] == 0, outer, inner) - torch.tensor([0.5, 0.25], dtype=t.dtype)


@DATASETS_2D.register("circles")
def circles(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A ring (class 0) around a smaller concentric ring (class 1): no line separates them."""
    angle = 2 * math.pi * t
    radius = torch.where(y == 0, 1.0, 0.5).to(t.dtype)
    return radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], 1)


@DATASETS_2D.register("spiral")
def spiral(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Two interleaved arms turning 1.5 times around the origin: the hardest of the three for a small net."""
    turn = 3 * math.pi * t.sqrt()  # sqrt: points spread evenly along the arm, not bunched at the centre
    radius = turn / (3 * math.pi)
    angle = turn + math.pi * y.to(t.dtype)
    return radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
