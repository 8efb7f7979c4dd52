"""Bringing your own ``nn.Module``: register a factory by name, or pass an instance straight to ``build_model``.

A registered name is what configs and the command line refer to; an instance is for one-off use from Python.
Either way the init schemes read ``model.activation`` for their gain, so a module that lacks one gets the
``activation`` given to ``build_model`` (``"relu"`` unless told), meaning "the nonlinearity this module uses".

>>> import torch
>>> from lottery.models import MODELS, build_model, register_module
>>> _ = register_module("doc_tiny", lambda input_shape, num_classes, width=8: torch.nn.Sequential(
...     torch.nn.Flatten(), torch.nn.Linear(input_shape[0], width), torch.nn.Tanh(), torch.nn.Linear(width, num_classes)))
>>> model = build_model("doc_tiny", (40,), 10, activation="tanh", width=4)
>>> model.activation, model[1].out_features
('tanh', 4)
>>> _ = MODELS.pop("doc_tiny")  # registries are global: leave no trace
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

from torch import nn

from lottery.errors import ConfigError
from lottery.models.common import MODELS, check_activation


def register_module(name: str, factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``factory`` (a class or function) under ``name``; returns ``factory`` unchanged.

    The factory receives whichever of ``input_shape``, ``num_classes`` and ``activation`` its signature names,
    plus the options given to ``build_model``; it need not take any of them.
    """
    params = inspect.signature(factory).parameters

    @functools.wraps(factory)  # so build_model's option check sees the factory's own parameters
    def build(input_shape, num_classes, activation="relu", **options):
        given = {"input_shape": input_shape, "num_classes": num_classes, "activation": activation}
        return factory(**{k: v for k, v in given.items() if k in params}, **options)

    MODELS.register(name)(build)
    return factory


def adopt(model: nn.Module, activation: str) -> nn.Module:
    """Give ``model`` the ``activation`` attribute the init schemes read, unless it already declares one."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"a model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(getattr(model, "activation", None), str):
        model.activation = check_activation(activation)
    return model

