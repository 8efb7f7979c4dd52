"""Conv-2/4/6: the CIFAR-10 nets of Frankle & Carbin (2019), scaled-down VGGs without batch norm.

3x3 convs with padding 1 in pairs of 64, 128, 256 filters, each pair followed by 2x2 max pooling, then
fc 256 -> 256 -> classes. Prunable weights on 3x32x32 with 10 classes, derived from that architecture (tests pin
them; compare any published table against these sums, not the other way round):
  conv2: conv 1,728 + 36,864                                  + fc 16,384*256 + 65,536 + 2,560 = 4,300,992
  conv4: conv2's convs + 73,728 + 147,456                      + fc  8,192*256 + 65,536 + 2,560 = 2,425,024
  conv6: conv4's convs + 294,912 + 589,824                     + fc  4,096*256 + 65,536 + 2,560 = 2,261,184
The deeper nets have fewer weights because each pooling stage shrinks the first fc layer fourfold.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from lottery.errors import ConfigError
from lottery.models.common import MODELS, image_shape, make_activation

STAGES = (64, 128, 256)


def convnet(name: str, pairs: int, input_shape, num_classes, activation, scale: float = 1.0) -> nn.Sequential:
    """``scale`` multiplies the filters of every conv layer (0.25: 16, 32, 64), for CPU-sized studies; fc stays 256."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 8:
        raise ConfigError(f"{name}: model option scale must be a number in (0, 8], got {scale!r}")
    channels, height, width = image_shape(name, input_shape, min_side=2**pairs)
    layers: list[tuple[str, nn.Module]] = []
    n_in, k = channels, 0
    for stage, n_out in enumerate((max(1, round(c * scale)) for c in STAGES[:pairs]), start=1):
        for _ in range(2):
            k += 1
            layers += [(f"conv{k}", nn.Conv2d(n_in, n_out, 3, padding=1)), (f"act{k}", make_activation(activation))]
            n_in = n_out
        layers.append((f"pool{stage}", nn.MaxPool2d(2)))
        height, width = height // 2, width // 2
    layers += [
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(n_in * height * width, 256)), (f"act{k + 1}", make_activation(activation)),
        ("fc2", nn.Linear(256, 256)), (f"act{k + 2}", make_activation(activation)),
        ("fc3", nn.Linear(256, num_classes)),
    ]
    model = nn.Sequential(OrderedDict(layers))
    model.activation = activation
    return model


@MODELS.register("conv2")
def conv2(input_shape, num_classes, activation="relu", scale=1.0):
    return convnet("conv2", 1, input_shape, num_classes, activation, scale)


@MODELS.register("conv4")
def conv4(input_shape, num_classes, activation="relu", scale=1.0):
    return convnet("conv4", 2, input_shape, num_classes, activation, scale)


@MODELS.register("conv6")
def conv6(input_shape, num_classes, activation="relu", scale=1.0):
    return convnet("conv6", 3, input_shape, num_classes, activation, scale)
