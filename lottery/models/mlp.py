"""Fully connected nets: LeNet-300-100 (Frankle & Carbin's MNIST net) and a plain MLP for MNIST-1D.

Both flatten whatever they are given, so they build for any input shape; the first layer's width comes from it.
"""
from __future__ import annotations

from collections import OrderedDict
from numbers import Integral
from typing import Sequence

from torch import nn

from lottery.errors import ConfigError
from lottery.models.common import MODELS, flat_size, make_activation


class MLP(nn.Sequential):
    """flatten -> fc1 -> act -> ... -> fcN; layers are named ``fc1``.. so ``state_dict`` keys read ``fc1.weight``."""

    def __init__(self, input_shape: tuple[int, ...], hidden: Sequence[int], num_classes: int, activation: str):
        widths = [flat_size(input_shape), *hidden, num_classes]
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            layers.append((f"fc{i}", nn.Linear(n_in, n_out)))
            if i < len(widths) - 1:
                layers.append((f"act{i}", make_activation(activation)))
        super().__init__(OrderedDict(layers))
        self.activation = activation


def _check_hidden(hidden: object) -> tuple[int, ...]:
    try:
        widths = tuple(hidden)  # type: ignore[arg-type]
    except TypeError:
        widths = None
    if widths is None or any(isinstance(w, bool) or not isinstance(w, Integral) or w < 1 for w in widths):
        raise ConfigError(f"hidden must be a sequence of positive layer widths, e.g. (256, 256); got {hidden!r}")
    return tuple(int(w) for w in widths)


@MODELS.register("lenet_300_100")
def lenet_300_100(input_shape, num_classes, activation="relu"):
    """784-300-100-10 on MNIST: 266,200 prunable weights."""
    return MLP(input_shape, (300, 100), num_classes, activation)


@MODELS.register("mlp")
def mlp(input_shape, num_classes, activation="relu", *, hidden=(256, 256)):
    """The MNIST-1D baseline (40-256-256-10 by default); ``hidden`` sets the widths, ``()`` gives a linear model."""
    return MLP(input_shape, _check_hidden(hidden), num_classes, activation)
