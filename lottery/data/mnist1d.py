"""MNIST-1D (Greydanus & Kobak 2020): 4000/1000 sequences of length 40, 10 classes; the embedded default.

Small enough that a whole IMP experiment runs on a laptop CPU, yet hard enough that tickets and random masks
differ. We generate it locally with the ``mnist1d`` package's seeded ``make_dataset`` (never its download path),
so the data is identical everywhere, and cache the arrays in ``<cache>/mnist1d-<hash of the arguments>.npz``.
"""
from __future__ import annotations

import hashlib
import json
import random
import warnings
import zipfile

import numpy as np
import torch

from lottery.data.base import DATASETS, Source, cache_dir
from lottery.errors import ConfigError
from lottery.storage.atomic import atomic_write

_KEYS = ("x", "y", "x_test", "y_test")


def _args(overrides: dict) -> dict:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # only the download path uses it, and it must not change the cache key
    unknown = sorted(set(overrides) - set(args))
    if unknown:
        raise ConfigError(f"mnist1d has no option {', '.join(unknown)}; its options: {', '.join(sorted(args))}")
    args.update(overrides)
    return args


def _generate(args: dict) -> dict[str, np.ndarray]:
    """Run mnist1d's generator; it reseeds numpy's and Python's global RNGs, so we put them back afterwards."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    # make_dataset has already centred the data and scaled it to unit std: no further normalization
    return {k: np.asarray(data[k], dtype=np.float32 if k.startswith("x") else np.int64) for k in _KEYS}


def _read_cache(path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _KEYS}
    except (FileNotFoundError, NotADirectoryError, PermissionError):  # no cache (yet): generate the data
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        warnings.warn(f"ignoring unreadable mnist1d cache {path} ({e}); generating it again", stacklevel=3)
        return None
    if arrays["x"].shape[0] != arrays["y"].shape[0] or arrays["x_test"].shape[0] != arrays["y_test"].shape[0]:
        warnings.warn(f"ignoring inconsistent mnist1d cache {path}; generating it again", stacklevel=3)
        return None
    return arrays


@DATASETS.register("mnist1d")
def mnist1d(root=None, **args) -> Source:
    """MNIST-1D from ``make_dataset`` (options override ``get_dataset_args``); 1/8 of train held out (500)."""
    args = _args(args)
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir(root) / f"mnist1d-{key}.npz"
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate(args)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
                np.savez(f, **arrays)

        try:
            atomic_write(path, write)
        except OSError as e:  # a read-only HOME: say which cache, and how to move it
            raise ConfigError(f"cannot write the data-set cache {path.parent} ({e.strerror}); set LOTTERY_CACHE to a "
                              "writable directory (or pass --data-root DIR)") from None
    train = (torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]))
    test = (torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"]))
    return Source(train=train, test=test, num_classes=10, input_shape=tuple(train[0].shape[1:]),
                  default_val_size=0.125)
