"""Reader for IDX files, the format of MNIST and Fashion-MNIST, plus the search for a folder that holds a set.

Our own reader (numpy, a few lines) reads the files wherever they are: the Debian package's gzipped files, a
torchvision ``<root>/<Name>/raw`` folder, or a plain folder, compressed or not. torchvision only reads its own
layout, uncompressed.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from lottery.errors import CorruptFileError

# type code -> big-endian numpy dtype (the IDX spec)
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzipped or not) as an array of its stored shape and type."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise CorruptFileError(f"{path} cannot be read ({e}); delete it and fetch it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES or data[3] == 0:
        raise CorruptFileError(f"{path} is not an IDX file (bad magic number); delete it and fetch it again")
    dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)) * dtype.itemsize:
        raise CorruptFileError(f"{path} is truncated or damaged (header says {dims}); delete it and fetch it again")
    return np.frombuffer(data, dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx_set(dirs: list[Path]) -> dict[str, Path] | None:
    """The four files of an MNIST-style set from the first folder that holds all of them (plain or .gz)."""
    for d in dirs:
        found = {}
        for key, name in FILES.items():
            for candidate in (d / name, d / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
    return None


def load_idx_set(files: dict[str, Path]) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((train_x uint8 [N,H,W], train_y int64), (test_x, test_y))`` from the four files, sizes checked."""
    arrays = {key: torch.from_numpy(read_idx(path)) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dim() != 3 or y.dim() != 1 or len(x) != len(y):
            raise CorruptFileError(
                f"{files[split + '_x']} and {files[split + '_y']} do not match "
                f"(images {tuple(x.shape)}, labels {tuple(y.shape)}); fetch them again"
            )
    return (arrays["train_x"], arrays["train_y"].long()), (arrays["test_x"], arrays["test_y"].long())
