"""VGG-11/16/19 in the CIFAR form used by the rewinding papers (Frankle et al. 2020, open_lth).

3x3 convs with batch norm, four 2x2 max pools, a global average pool and one Linear 512 -> classes: on 32x32
inputs the last feature map is 2x2, so the average pool matches open_lth's ``avg_pool2d(2)``; the global pool
also lets other image sizes (>= 16x16) build.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from lottery.models.common import MODELS, image_shape, make_activation

PLANS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    """``features`` (conv1, bn1, act1, pool1, ...) -> global average pool -> ``fc``."""

    def __init__(self, plan: list, in_channels: int, num_classes: int, activation: str):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        n_in, k, pools = in_channels, 0, 0
        for item in plan:
            if item == "M":
                pools += 1
                layers.append((f"pool{pools}", nn.MaxPool2d(2)))
                continue
            k += 1
            layers += [
                (f"conv{k}", nn.Conv2d(n_in, item, 3, padding=1, bias=False)),  # bias is redundant before BN
                (f"bn{k}", nn.BatchNorm2d(item)),
                (f"act{k}", make_activation(activation)),
            ]
            n_in = item
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(n_in, num_classes)
        self.activation = activation

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _build(name: str, input_shape, num_classes, activation) -> VGG:
    channels, _, _ = image_shape(name, input_shape, min_side=16)  # four 2x2 pools
    return VGG(PLANS[name], channels, num_classes, activation)


@MODELS.register("vgg11")
def vgg11(input_shape, num_classes, activation="relu"):
    return _build("vgg11", input_shape, num_classes, activation)


@MODELS.register("vgg16")
def vgg16(input_shape, num_classes, activation="relu"):
    return _build("vgg16", input_shape, num_classes, activation)


@MODELS.register("vgg19")
def vgg19(input_shape, num_classes, activation="relu"):
    return _build("vgg19", input_shape, num_classes, activation)
