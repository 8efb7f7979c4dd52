"""MNIST (LeCun et al. 1998): 60k/10k 28x28 digits, the LeNet-300-100 data set of the LTH paper.

Read from IDX files in ``root`` (plain, or torchvision's ``root/MNIST/raw``) or the lottery cache; downloaded through
torchvision only when asked (``download=True``), since most runs have no internet.
"""
from __future__ import annotations

from pathlib import Path

from lottery.data.base import DATASETS, DataNotFoundError, Source, black, cache_dir, standardize
from lottery.data.idx import FILES, find_idx_set, load_idx_set

MEAN, STD = (0.1307,), (0.3081,)  # over the 60k training images


def load_mnist_like(tv_class, root, download: bool, system_dirs, mean, std, how_to_get: str = "") -> Source:
    """An MNIST-layout data set: the first folder holding the four IDX files, else a torchvision download if asked.

    ``tv_class`` is torchvision's data-set class or its name ("FashionMNIST"); by name, torchvision (whose import
    measured ~0.9x torch's own here: 11 s vs 12 s on the loaded 2-core machine) is imported only to download.
    """
    folder = tv_class if isinstance(tv_class, str) else tv_class.__name__  # torchvision's folder: root/<Name>/raw
    base = cache_dir(root)
    dirs = [base, base / folder / "raw"] + [Path(d) for d in system_dirs]
    if root is not None:  # the cache is still worth a look when root names somewhere else
        dirs += [cache_dir() / folder / "raw"]
    files = find_idx_set(dirs)
    if files is None and download:
        if isinstance(tv_class, str):
            import torchvision

            tv_class = getattr(torchvision.datasets, tv_class)
        for train in (True, False):
            tv_class(str(base), train=train, download=True)
        files = find_idx_set([base / folder / "raw"])
    if files is None:
        names = ", ".join(FILES.values())
        raise DataNotFoundError(
            f"{folder} not found: looked for {names} (or .gz) in {', '.join(str(d) for d in dirs)}. "
            f"Get it with {how_to_get}--data-root DIR pointing at a folder with those files "
            f"(or torchvision's layout DIR/{folder}/raw/), or download=True where there is internet"
        )
    (x_train, y_train), (x_test, y_test) = load_idx_set(files)
    prep = lambda x: standardize(x.unsqueeze(1).float().div_(255), mean, std)  # noqa: E731
    return Source(
        train=(prep(x_train), y_train),
        test=(prep(x_test), y_test),
        num_classes=10,
        input_shape=(1,) + tuple(x_train.shape[1:]),
        default_val_size=5000,
        fill=black(mean, std),
    )


@DATASETS.register("mnist")
def mnist(root=None, download: bool = False) -> Source:
    """MNIST digits, normalized with mean 0.1307 / std 0.3081; 5000 training images held out for validation."""
    return load_mnist_like("MNIST", root, download, (), MEAN, STD)
