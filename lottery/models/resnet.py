"""ResNet-20/56 for CIFAR (He et al. 2016, section 4.2): 6n+2 layers in three stages of 16, 32, 64 channels.

Shortcuts that change shape are 1x1 conv + batch norm by default (``shortcut="conv"``, as in open_lth and the
LTH rewinding papers, so their ResNet-20 numbers apply); ``shortcut="pad"`` gives He et al.'s parameter-free
option A (stride-2 subsampling and zero-padded channels).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from lottery.errors import ConfigError
from lottery.models.common import MODELS, image_shape, make_activation

SHORTCUTS = ("conv", "pad")


class PadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels; no parameters to prune."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra, self.stride = extra_channels, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class Block(nn.Module):
    """conv-bn-act-conv-bn plus the shortcut, then act."""

    def __init__(self, n_in: int, n_out: int, stride: int, activation: str, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(n_out)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(n_out)
        self.act2 = make_activation(activation)
        if stride == 1 and n_in == n_out:
            self.shortcut = nn.Identity()
        elif shortcut == "conv":
            self.shortcut = nn.Sequential(nn.Conv2d(n_in, n_out, 1, stride=stride, bias=False), nn.BatchNorm2d(n_out))
        else:
            self.shortcut = PadShortcut(n_out - n_in, stride)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, in_channels: int, num_classes: int, activation: str, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = make_activation(activation)
        n_in = 16
        for stage, n_out in enumerate((16, 32, 64), start=1):
            blocks = [
                Block(n_in if i == 0 else n_out, n_out, 2 if (i == 0 and stage > 1) else 1, activation, shortcut)
                for i in range(blocks_per_stage)
            ]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            n_in = n_out
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        self.activation = activation

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def _build(name: str, depth: int, input_shape, num_classes, activation, shortcut) -> ResNet:
    channels, _, _ = image_shape(name, input_shape, min_side=4)  # two stride-2 stages
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"{name}: unknown shortcut {shortcut!r}; choose 'conv' (1x1 conv + BN) or 'pad' (option A)")
    return ResNet((depth - 2) // 6, channels, num_classes, activation, shortcut)


@MODELS.register("resnet20")
def resnet20(input_shape, num_classes, activation="relu", *, shortcut="conv"):
    return _build("resnet20", 20, input_shape, num_classes, activation, shortcut)


@MODELS.register("resnet56")
def resnet56(input_shape, num_classes, activation="relu", *, shortcut="conv"):
    return _build("resnet56", 56, input_shape, num_classes, activation, shortcut)
