"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009): 50k/10k 32x32 colour images, the Conv-2/4/6, VGG and ResNet data sets.

Read by torchvision from its layout (``root/cifar-10-batches-py``, ``root/cifar-100-python``), which checks each
file's md5 before unpickling it; we never unpickle these files ourselves. Downloaded only with ``download=True``.
"""
from __future__ import annotations

import torch

from lottery.data.base import DATASETS, DataNotFoundError, Source, black, cache_dir, standardize
from lottery.errors import CorruptFileError

# per-channel mean / std over each training set's pixels
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _load(tv_class, root, download: bool, num_classes: int, mean, std) -> Source:
    base = cache_dir(root)
    folder = base / tv_class.base_folder
    files = [name for name, _ in tv_class.train_list + tv_class.test_list] + [tv_class.meta["filename"]]
    missing = [name for name in files if not (folder / name).is_file()]
    if missing and not download:
        raise DataNotFoundError(
            f"{tv_class.__name__} not found: {folder} lacks {', '.join(missing)}. Get it with --data-root DIR "
            f"pointing at a folder holding {tv_class.base_folder}/ (torchvision's layout: unpack "
            f"{tv_class.filename} there), or download=True where there is internet"
        )
    splits = []
    for train in (True, False):
        try:
            data = tv_class(str(base), train=train, download=download)
        except RuntimeError as e:  # present but failing torchvision's md5 check
            raise CorruptFileError(
                f"{folder}: {e}. The files are damaged or not the official ones; delete the folder and unpack "
                f"{tv_class.filename} again (or pass download=True)"
            ) from None
        x = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous().float().div_(255)  # stored HWC uint8
        splits.append((standardize(x, mean, std), torch.tensor(data.targets, dtype=torch.int64)))
    return Source(train=splits[0], test=splits[1], num_classes=num_classes, input_shape=(3, 32, 32),
                  default_val_size=5000, fill=black(mean, std))


@DATASETS.register("cifar10")
def cifar10(root=None, download: bool = False) -> Source:
    """CIFAR-10, normalized per channel; 5000 training images held out for validation."""
    import torchvision  # imported here: a run on another data set does not pay for it

    return _load(torchvision.datasets.CIFAR10, root, download, 10, CIFAR10_MEAN, CIFAR10_STD)


@DATASETS.register("cifar100")
def cifar100(root=None, download: bool = False) -> Source:
    """CIFAR-100 (fine labels), normalized per channel; 5000 training images held out for validation."""
    import torchvision

    return _load(torchvision.datasets.CIFAR100, root, download, 100, CIFAR100_MEAN, CIFAR100_STD)
