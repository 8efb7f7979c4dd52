"""What every model family shares: the registry, the activations, and input-shape checks.

Models know nothing about pruning or initialization; they only promise readable ``state_dict`` keys and a
``model.activation`` string, which the init schemes read to pick their gain.
"""
from __future__ import annotations

import inspect
import math
from numbers import Integral

import torch
from torch import nn

from lottery.errors import ConfigError
from lottery.registry import Registry

MODELS = Registry("model")

# nn.LeakyReLU's default slope; lottery.inits assumes the same slope when it computes the leaky_relu gain.
LEAKY_SLOPE = 0.01
ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "linear": nn.Identity,  # deep linear nets: the setting of Saxe et al.'s orthogonal-init analysis
}


def check_activation(name: object) -> str:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return name  # type: ignore[return-value]


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[check_activation(name)]()


def check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def check_input_shape(input_shape: object) -> tuple[int, ...]:
    """An input shape without the batch dimension: a non-empty tuple of positive integers."""
    try:
        shape = tuple(input_shape)  # type: ignore[arg-type]
    except TypeError:
        shape = None
    if not shape or any(isinstance(d, bool) or not isinstance(d, Integral) or d < 1 for d in shape):
        raise ConfigError(
            f"input_shape must be a tuple of positive integers without the batch dimension, "
            f"e.g. (1, 28, 28) or (40,); got {input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def image_shape(model: str, input_shape: tuple[int, ...], min_side: int) -> tuple[int, int, int]:
    """(C, H, W) for a 2-D conv net, or an error naming the shapes ``model`` accepts."""
    if len(input_shape) != 3 or min(input_shape[1:]) < min_side:
        raise ConfigError(
            f"{model} takes images shaped (C, H, W) with H, W >= {min_side}, e.g. (3, 32, 32) or (1, 28, 28); "
            f"got input_shape {input_shape}"
        )
    return input_shape  # type: ignore[return-value]


def example_batch(model, input_shape, batch: int, generator=None):
    """Inputs ``model`` can run on, to check or time it: its own ``example_input`` (token models need ids below
    their vocabulary), else N(0, 1) values."""
    if callable(getattr(model, "example_input", None)):
        return model.example_input(tuple(input_shape), batch, generator)
    return torch.randn(batch, *input_shape, generator=generator)


def flat_size(input_shape: tuple[int, ...]) -> int:
    return math.prod(input_shape)


BUILD_ARGS = ("input_shape", "num_classes", "activation")


def check_options(name: str, builder, options: dict) -> None:
    """Options a builder does not take fail here with the list it does take (not as a bare TypeError)."""
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    accepted = [a for a in accepted if a not in BUILD_ARGS]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"its options are: {', '.join(accepted)}" if accepted else "it takes no options"
        raise ConfigError(f"model '{name}' has no option {', '.join(map(repr, unknown))}; {takes}")
