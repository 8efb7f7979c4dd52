"""Modular arithmetic (Power et al. 2022, the grokking task): every pair ``a op b mod p`` as a 4-token sequence.

Generated locally, nothing read or cached. A sample is ``[a, OP, b, EQ]`` with ``a, b`` in ``0..p-1``, ``OP = p``
and ``EQ = p + 1`` (so a ``gpt`` built with its default vocabulary, ``num_classes + 2``, fits), stored as float32
like every data set's inputs; the label is the answer in ``0..p-1``. ``operation`` is ``+``, ``-``, ``*`` or ``/``
(``a * b^-1 mod p``: ``b`` runs over ``1..p-1`` and ``p`` must be prime). A seeded permutation (``data_seed``)
puts ``train_fraction`` of the pairs in the training set and the rest in the test set; ``load_dataset`` then holds
out ``val_size`` of the training pairs (default 10 %) as the validation split, where grokking shows: held-out pairs
reach high accuracy long after the training pairs are memorised.

>>> from lottery.data import load_dataset
>>> ds = load_dataset("modular_addition", p=7, train_fraction=0.5)
>>> ds.input_shape, ds.num_classes, len(ds.train[1]) + len(ds.val[1]) + len(ds.test[1])
((4,), 7, 49)
"""
from __future__ import annotations

from numbers import Integral, Real

import torch

from lottery.data.base import DATASETS, Source
from lottery.errors import ConfigError

OPERATIONS = ("+", "-", "*", "/")


def _answers(a: torch.Tensor, b: torch.Tensor, p: int, op: str) -> torch.Tensor:
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    return (a * torch.tensor([pow(int(v), -1, p) for v in b])) % p  # b^-1 exists for b != 0 when p is prime


def _check(p: object, op: object, train_fraction: object, data_seed: object) -> None:
    if isinstance(p, bool) or not isinstance(p, Integral) or p < 2:
        raise ConfigError(f"modular_addition: p must be an integer >= 2 (e.g. p=97), got {p!r}")
    if op not in OPERATIONS:
        raise ConfigError(f"modular_addition: operation must be one of {' '.join(OPERATIONS)}, got {op!r}")
    if op == "/" and any(p % d == 0 for d in range(2, int(p ** 0.5) + 1)):
        raise ConfigError(f"modular_addition: operation '/' needs a prime p (every b must have an inverse), got p={p}")
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, Real) or not 0 < train_fraction < 1:
        raise ConfigError(f"modular_addition: train_fraction must be a fraction in (0, 1), e.g. 0.5; "
                          f"got {train_fraction!r}")
    if isinstance(data_seed, bool) or not isinstance(data_seed, Integral) or data_seed < 0:
        raise ConfigError(f"modular_addition: data_seed must be an integer >= 0, got {data_seed!r}")


@DATASETS.register("modular_addition")
def modular_addition(root=None, p: int = 97, operation: str = "+", train_fraction: float = 0.5, data_seed: int = 0
                     ) -> Source:
    """All ``p * p`` pairs (``p * (p - 1)`` for ``/``), split ``train_fraction`` / rest by ``data_seed``."""
    _check(p, operation, train_fraction, data_seed)
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(1 if operation == "/" else 0, p)).unbind(1)
    x = torch.stack([a, torch.full_like(a, p), b, torch.full_like(a, p + 1)], dim=1).float()
    y = _answers(a, b, p, operation)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(data_seed)))
    n_train = min(max(2, round(train_fraction * len(y))), len(y) - 1)
    train, test = order[:n_train].sort().values, order[n_train:].sort().values
    return Source(train=(x[train], y[train]), test=(x[test], y[test]), num_classes=p, input_shape=(4,),
                  default_val_size=0.1)
