"""LeNet-5 (LeCun et al. 1998): conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> 84 -> classes.

Max pooling stands in for the original trainable subsampling, as in most modern reproductions. The original
took 32x32 inputs; smaller images (MNIST's 28x28) get conv1 padding 2 so the layers see the same field of view.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from lottery.models.common import MODELS, image_shape, make_activation


@MODELS.register("lenet5")
def lenet5(input_shape, num_classes, activation="relu"):
    """61,706 parameters on 1x28x28 with 10 classes (the fc input is derived from the image size)."""
    channels, height, width = image_shape("lenet5", input_shape, min_side=12)
    pad = 2 if min(height, width) < 32 else 0
    h, w = (((n + 2 * pad - 4) // 2 - 4) // 2 for n in (height, width))  # conv5, pool, conv5, pool; >= 1 from 12
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, 6, 5, padding=pad)), ("act1", make_activation(activation)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("act2", make_activation(activation)), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * h * w, 120)), ("act3", make_activation(activation)),
        ("fc2", nn.Linear(120, 84)), ("act4", make_activation(activation)),
        ("fc3", nn.Linear(84, num_classes)),
    ]))
    model.activation = activation
    return model
