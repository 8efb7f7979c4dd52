"""What every data set hands the trainer: in-memory tensors, already normalized, with a seeded validation split.

Data sets here are small enough to live in memory as tensors, so the trainer slices batches from a seeded
permutation instead of running a DataLoader (the single largest speed-up over the usual loop: benchmarks/RESULTS.md, "Training throughput").
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lottery.errors import ConfigError
from lottery.registry import Registry

DATASETS = Registry("data set")

Split = tuple  # (x float32 tensor, y int64 tensor)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set: ``train``, ``val`` and ``test`` are ``(x, y)`` tensor pairs; shapes exclude the batch."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple
    fill: tuple | float = 0.0  # a black pixel after normalization, per channel: what augmentation pads with

    def to(self, device: str | torch.device) -> "Dataset":
        """A copy with every tensor on ``device`` (load once, move once: the trainer never copies per batch)."""
        move = lambda split: tuple(t.to(device) for t in split)  # noqa: E731
        return dataclasses.replace(self, train=move(self.train), val=move(self.val), test=move(self.test))

    def __repr__(self) -> str:
        sizes = "/".join(str(len(s[1])) for s in (self.train, self.val, self.test))
        return (f"Dataset({self.name!r}, train/val/test={sizes}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, device={self.train[0].device})")


@dataclass(frozen=True, eq=False)
class Source:
    """What a registered loader returns: the whole training set, the test set, and its default validation size."""

    train: Split
    test: Split
    num_classes: int
    input_shape: tuple
    default_val_size: int | float
    fill: tuple | float = 0.0  # a black pixel after normalization (``black(mean, std)``), for augmentation's padding


def split_train_val(x: torch.Tensor, y: torch.Tensor, val_size: int | float, seed: int) -> tuple[Split, Split]:
    """Carve a validation split out of the training data with a seeded generator, so every run sees the same one.

    ``val_size`` is a count in [1, n) or a fraction in (0, 1). Both parts keep the original sample order.
    """
    n = len(y)
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ConfigError(f"val_size must be a count or a fraction in (0, 1), got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise ConfigError(f"val_size {val_size} as a fraction must lie in (0, 1); pass an int for a count")
        n_val = min(max(1, round(val_size * n)), n - 1)
    else:
        if not 1 <= val_size < n:
            raise ConfigError(f"val_size {val_size} must lie in [1, {n}) for a training set of {n} samples")
        n_val = val_size
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where generated or downloaded data goes: ``root`` if given, else $LOTTERY_CACHE, else ~/.cache/lottery."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("LOTTERY_CACHE"):
        return Path(os.environ["LOTTERY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lottery"


def standardize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x - mean) / std`` per channel (dim 1), in place on a float tensor to keep peak memory at one copy."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x.sub_(torch.tensor(mean).view(shape)).div_(torch.tensor(std).view(shape))


def black(mean, std) -> tuple:
    """The value a zero (black) pixel takes after ``standardize``, per channel."""
    return tuple(-m / s for m, s in zip(mean, std))


class DataNotFoundError(ConfigError):
    """A data set whose files are not where we looked; the message says where that was and how to get them."""
