"""Fashion-MNIST (Xiao et al. 2017): 60k/10k 28x28 clothing images; harder than MNIST at the same size.

Found offline in the Debian package ``dataset-fashion-mnist`` (gzipped IDX in /usr/share/datasets/fashion-mnist),
in ``root`` (plain or torchvision's ``root/FashionMNIST/raw``), or the cache; downloaded only with ``download=True``.
"""
from __future__ import annotations

from lottery.data.base import DATASETS, Source
from lottery.data.mnist import load_mnist_like

MEAN, STD = (0.2860,), (0.3530,)  # over the 60k training images
SYSTEM_DIRS = ["/usr/share/datasets/fashion-mnist"]  # Debian: apt-get install dataset-fashion-mnist


@DATASETS.register("fashion_mnist")
def fashion_mnist(root=None, download: bool = False) -> Source:
    """Fashion-MNIST, normalized with mean 0.2860 / std 0.3530; 5000 training images held out for validation."""
    return load_mnist_like("FashionMNIST", root, download, SYSTEM_DIRS, MEAN, STD,
                           how_to_get="`apt-get install dataset-fashion-mnist`, or ")
