"""The model zoo: ``build_model(name, input_shape, num_classes, activation="relu", **options)``.

Every model carries ``model.activation`` (a string the init schemes turn into a gain) and readable
``state_dict`` keys (``fc1.weight``, ``conv3.weight``, ``layer2.0.conv1.weight``). One module per family; each
registers its builders in ``MODELS``, so adding a family is one file plus one import below.

>>> from lottery.models import build_model
>>> model = build_model("lenet_300_100", (1, 28, 28), 10)
>>> [name for name, _ in model.named_parameters()][:2]
['fc1.weight', 'fc1.bias']
"""
from __future__ import annotations

from torch import nn

from lottery.errors import ConfigError
from lottery.models import convnets, deep, gpt, lenet, mlp, resnet, vgg, vit  # noqa: F401  (each registers its models)
from lottery.models.common import (
    ACTIVATIONS, MODELS, check_activation, check_input_shape, check_num_classes, check_options,
)
from lottery.models.custom import adopt, register_module

__all__ = ["MODELS", "ACTIVATIONS", "build_model", "register_module"]


def build_model(name: str | nn.Module, input_shape=None, num_classes=None, activation: str = "relu",
                **options) -> nn.Module:
    """A fresh model called ``name`` for inputs shaped ``input_shape`` (no batch dimension).

    ``name`` may also be an ``nn.Module`` instance: it is returned as is (shapes unchecked), given an
    ``activation`` attribute if it lacks one. Unknown names, activations, options and shapes a model cannot
    take raise ``ConfigError``/``UnknownNameError`` naming what is accepted.
    """
    if isinstance(name, nn.Module):
        if options:
            raise ConfigError(f"options {sorted(options)} apply to registered models only, not to a module instance")
        return adopt(name, activation)
    builder = MODELS.get(name)
    if input_shape is None or num_classes is None:
        raise ConfigError(f"model '{name}' needs input_shape (without the batch dimension) and num_classes")
    check_options(name, builder, options)
    model = builder(check_input_shape(input_shape), check_num_classes(num_classes), check_activation(activation),
                    **options)
    return adopt(model, activation)
