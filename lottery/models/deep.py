"""Plain deep nets for initialization studies: no normalization, no skip connections, so the init alone decides
whether the signal survives the depth (He et al. 2015: at 30 ReLU layers Glorot's scale stalls, He's trains).

``deep_mlp``: flatten -> ``depth`` hidden Linear layers of ``width`` -> classes (``fc1`` .. ``fc{depth+1}``).
``deep_conv``: ``depth`` 3x3 convs of ``width`` channels (padding 1; 2x2 max pooling after every ``pool_every``
convs while the image is large enough) -> global average pooling -> Linear to classes.
"""
from __future__ import annotations

from collections import OrderedDict
from numbers import Integral

from torch import nn

from lottery.errors import ConfigError
from lottery.models.common import MODELS, image_shape, make_activation
from lottery.models.mlp import MLP


def _positive_int(name: str, value: object, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer (e.g. {example}), got {value!r}")
    return int(value)


@MODELS.register("deep_mlp")
def deep_mlp(input_shape, num_classes, activation="relu", *, depth=12, width=128):
    """``depth`` hidden layers of ``width`` units (12 x 128 by default: 19 layers' worth of init effects)."""
    depth = _positive_int("depth", depth, "depth=12")
    width = _positive_int("width", width, "width=128")
    return MLP(input_shape, (width,) * depth, num_classes, activation)


@MODELS.register("deep_conv")
def deep_conv(input_shape, num_classes, activation="relu", *, depth=8, width=32, pool_every=2):
    """``depth`` 3x3 convs of ``width`` channels without normalization, then global average pooling and a Linear."""
    depth = _positive_int("depth", depth, "depth=8")
    width = _positive_int("width", width, "width=32")
    pool_every = _positive_int("pool_every", pool_every, "pool_every=2")
    channels, height, _ = image_shape("deep_conv", input_shape, min_side=1)
    side = min(input_shape[1:])
    layers: list[tuple[str, nn.Module]] = []
    n_in = channels
    for k in range(1, depth + 1):
        layers += [(f"conv{k}", nn.Conv2d(n_in, width, 3, padding=1)), (f"act{k}", make_activation(activation))]
        n_in = width
        if k % pool_every == 0 and side >= 4:  # keep at least 2x2 before the global pooling
            layers.append((f"pool{k}", nn.MaxPool2d(2)))
            side //= 2
    layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(n_in, num_classes))]
    model = nn.Sequential(OrderedDict(layers))
    model.activation = activation
    return model
