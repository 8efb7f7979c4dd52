"""Data sets by name: ``load_dataset("mnist1d")`` gives normalized in-memory tensors with a seeded validation split.

Adding a data set is one module that registers a loader returning a ``Source``, plus its import below.

>>> ds = load_dataset("synthetic", n_train=64, n_test=32)
>>> len(ds.train[1]), len(ds.val[1]), len(ds.test[1]), ds.input_shape, ds.num_classes
(56, 8, 32, (1, 12, 12), 4)
"""
from __future__ import annotations

import dataclasses
import inspect
import os

import torch

from lottery.data.base import DATASETS, DataNotFoundError, Dataset, Source, cache_dir, split_train_val
from lottery.errors import ConfigError

# each import registers its data sets
from lottery.data import (  # noqa: E402,F401  isort: skip
    cifar, fashion_mnist, image_folder, mnist, mnist1d, modular, synthetic,
)

__all__ = ["DATASETS", "Dataset", "DataNotFoundError", "Source", "cache_dir", "load_dataset", "split_train_val"]


def load_dataset(name: str, root: str | os.PathLike | None = None, val_size: int | float | None = None,
                 seed: int = 0, device: str | torch.device = "cpu", **options) -> Dataset:
    """Load data set ``name`` (files from ``root`` or the cache), hold out ``val_size`` training samples.

    ``val_size`` is a count or a fraction in (0, 1); ``None`` takes the data set's default (5000 of the 60k/50k
    sets, 500 of mnist1d's 4000). ``seed`` picks the validation split only; ``options`` go to the loader
    (e.g. ``download=True``, or synthetic's ``input_shape``), except ``classes``, which every data set takes:
    keep only the samples of these labels (labels and the output size unchanged, so a network trained on some
    classes is a checkpoint for the others).
    """
    loader = DATASETS.get(name)
    classes = options.pop("classes", None)
    try:
        inspect.signature(loader).bind(root=root, **options)
    except TypeError:
        accepted = [p for p in inspect.signature(loader).parameters if p != "root"]
        raise ConfigError(
            f"data set '{name}' does not take option(s) {', '.join(sorted(options))}; "
            f"it takes: {', '.join(accepted) or 'none'}"
        ) from None
    source = loader(root=root, **options)
    if classes is not None:
        source = only_classes(source, classes, name)
    train, val = split_train_val(*source.train, source.default_val_size if val_size is None else val_size, seed)
    dataset = Dataset(name=name, train=train, val=val, test=tuple(source.test), num_classes=source.num_classes,
                      input_shape=tuple(source.input_shape), fill=source.fill)
    return dataset.to(device) if torch.device(device) != torch.device("cpu") else dataset


def only_classes(source: Source, classes, name: str) -> Source:
    """``source`` with only the samples whose label is in ``classes`` (train and test alike)."""
    if (not isinstance(classes, (list, tuple)) or not classes or len(set(classes)) != len(classes)
            or not all(type(c) is int and 0 <= c < source.num_classes for c in classes)):
        raise ConfigError(f"dataset option classes must be distinct labels in [0, {source.num_classes}) of "
                          f"'{name}', e.g. classes=[0,1,2,3,4]; got {classes!r}")
    wanted = torch.tensor(sorted(classes))

    def keep(split):
        x, y = split
        chosen = torch.isin(y, wanted)
        return x[chosen], y[chosen]
    return dataclasses.replace(source, train=keep(source.train), test=keep(source.test))
