"""Data sets too large for memory (ImageNet-style folders): images stay on disk and DataLoader workers stream them.

``root/train/<class>/*.png`` (and ``root/val/<class>/...`` for the test split) are read with torchvision's
``ImageFolder``. Where an in-memory data set hands the trainer an ``x`` tensor, this one hands it
:class:`FolderImages`, a stand-in that holds only file indices: the labels are an ordinary tensor, the validation
split is carved by ``split_train_val`` as for any data set, and the trainer draws the very same seeded batches —
it asks ``x.stream(...)`` for an iterator whose worker processes decode and transform the images ahead of the step
that needs them. The IMP engine on top is unchanged.

>>> # lottery run --dataset image_folder --data-root /data/imagenet --dataset-options image_size=224,workers=8
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Subset

from lottery.data.base import DATASETS, DataNotFoundError, Source, black, cache_dir
from lottery.errors import ConfigError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FolderImages:
    """The images of some files of an ``ImageFolder``, read on demand; stands where an ``x`` tensor would.

    ``x[index_tensor]`` is another lazy view (that is how splits are carved); ``x[i:j]`` reads those images into a
    tensor; ``x.to(device)`` only records where batches should go.
    """

    streaming = True

    def __init__(self, folder, indices: torch.Tensor, input_shape: tuple, workers: int = 2,
                 device: torch.device | str = "cpu"):
        self.folder, self.indices = folder, indices.long()
        self.input_shape, self.workers, self.device = tuple(input_shape), int(workers), torch.device(device)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple:
        return (len(self), *self.input_shape)

    dtype = torch.float32

    def load(self) -> torch.Tensor:
        """All these images as one tensor (for small splits and tests; training never does this)."""
        return self._read(self.indices)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """``torch.isfinite(x)`` and friends: read the images, then apply ``func`` to the tensor."""
        load = lambda a: a.load() if isinstance(a, FolderImages) else a  # noqa: E731
        return func(*map(load, args), **{k: load(v) for k, v in (kwargs or {}).items()})

    def __repr__(self) -> str:
        return f"FolderImages({len(self)} images under {self.folder.root}, shape {self.input_shape})"

    def to(self, device) -> "FolderImages":
        return FolderImages(self.folder, self.indices, self.input_shape, self.workers, device)

    def __getitem__(self, key):
        if isinstance(key, torch.Tensor):  # a subset, still on disk
            return FolderImages(self.folder, self.indices[key.cpu()], self.input_shape, self.workers, self.device)
        if isinstance(key, slice):  # a few images, read now
            return self._read(self.indices[key])
        raise TypeError("FolderImages takes an index tensor (a subset) or a slice (read those images)")

    def _read(self, indices: torch.Tensor) -> torch.Tensor:
        if len(indices) == 0:
            return torch.empty((0, *self.input_shape), device=self.device)
        return torch.stack([self.folder[int(i)][0] for i in indices]).to(self.device)

    def _loader(self, batch_sampler, persistent: bool = False) -> DataLoader:
        return DataLoader(Subset(self.folder, self.indices.tolist()), batch_sampler=batch_sampler,
                          num_workers=self.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=persistent and self.workers > 0,
                          prefetch_factor=4 if self.workers else None)

    def batches(self, batch: int):
        """The split in order, ``batch`` images at a time (for evaluation), read by the workers."""
        if len(self) <= batch:  # one batch: reading it here beats starting workers
            yield self._read(self.indices)
            return
        if not hasattr(self, "_eval"):  # evaluated every few hundred steps: keep the workers between passes
            # workers read pieces of <= 256 images (bounded memory in flight); they are joined into `batch`-sized ones
            chunks = [list(range(i, min(i + 256, len(self)))) for i in range(0, len(self), 256)]
            self._eval = self._loader(chunks, persistent=True)
        pending, count = [], 0
        for x, _ in self._eval:
            pending.append(x)
            count += len(x)
            while count >= batch:
                joined = torch.cat(pending)
                yield joined[:batch].to(self.device, non_blocking=True)
                rest = joined[batch:]
                pending, count = ([rest] if len(rest) else []), len(rest)
        if pending:
            yield torch.cat(pending).to(self.device, non_blocking=True)

    def stream(self, seed: int, batch: int, dist=None, start: int = 0) -> "Stream":
        """The trainer's batches, in its order (same seeded permutation per epoch, same global-batch slices),
        from its step ``start`` on."""
        return Stream(self, seed, batch, dist, start)


class _TrainOrder:
    """The trainer's batch order as a batch sampler: per epoch one ``randperm`` of a generator seeded with
    ``seed``, cut into whole global batches, of which this rank takes its slice. Endless (the trainer stops).
    ``start`` skips the first batches without reading them (a run continued from step ``start``)."""

    def __init__(self, n: int, seed: int, batch: int, dist, start: int = 0):
        self.n, self.seed, self.batch, self.dist, self.start = n, int(seed), batch, dist, start

    def __iter__(self):
        order = torch.Generator().manual_seed(self.seed)
        per_epoch = self.n // self.batch
        for _ in range(self.start // per_epoch):  # whole epochs skipped: their permutations drawn all the same
            torch.randperm(self.n, generator=order)
        skip = self.start % per_epoch
        while True:
            perm = torch.randperm(self.n, generator=order)
            for s in range(skip, per_epoch):
                idx = perm[s * self.batch : (s + 1) * self.batch]
                yield (self.dist.shard(idx) if self.dist is not None else idx).tolist()
            skip = 0


class Stream:
    """Batches read ahead by DataLoader workers; ``next(idx)`` returns the one for ``idx`` (checked)."""

    def __init__(self, images: FolderImages, seed: int, batch: int, dist=None, start: int = 0):
        self.images = images
        self._order = iter(_TrainOrder(len(images), seed, batch, dist, start))  # the sampler's twin, for the check
        self._batches = iter(images._loader(_TrainOrder(len(images), seed, batch, dist, start)))

    def next(self, idx: torch.Tensor) -> torch.Tensor:
        expected = next(self._order)
        if expected != idx.tolist():
            raise RuntimeError("streamed batch order diverged from the trainer's; this is a bug in lottery")
        x, _ = next(self._batches)
        return x.to(self.images.device, non_blocking=True)


def _rgb(image):
    return image.convert("RGB")  # palette, grayscale or RGBA files: always three channels


def _image_transform(image_size, channels: int, mean, std):
    from torchvision import transforms as T

    steps = [T.Grayscale(1)] if channels == 1 else [T.Lambda(_rgb)]
    if image_size is not None:
        steps += [T.Resize(image_size), T.CenterCrop(image_size)]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


@DATASETS.register("image_folder")
def image_folder(root=None, train_dir: str = "train", test_dir: str = "val", image_size: int | None = None,
                 channels: int = 3, workers: int = 2, mean=None, std=None, val_fraction: float = 0.05) -> Source:
    """Stream ``root/<train_dir>/<class>/*`` and ``root/<test_dir>/<class>/*`` through ``workers`` processes.

    ``image_size`` resizes and center-crops (needed unless every image has the same size); ``channels`` is 3
    (RGB) or 1 (grayscale); ``mean``/``std`` default to ImageNet's (RGB) or 0.5/0.5 (grayscale).
    """
    from torchvision.datasets import ImageFolder

    if channels not in (1, 3):
        raise ConfigError(f"image_folder: channels must be 1 or 3, got {channels!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"image_folder: workers must be an int >= 0, got {workers!r}")
    base = cache_dir(root) / "image_folder" if root is None else cache_dir(root)
    default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
    mean, std = mean or default_mean, std or default_std
    transform = _image_transform(image_size, channels, mean, std)
    folders = []
    for sub in (train_dir, test_dir):
        path = base / sub
        if not path.is_dir():
            raise DataNotFoundError(f"image_folder: {path} does not exist; pass --data-root DIR holding "
                                    f"{train_dir}/<class>/*.png and {test_dir}/<class>/*.png (ImageNet layout)")
        try:
            folders.append(ImageFolder(str(path), transform=transform))
        except (FileNotFoundError, RuntimeError) as e:
            raise DataNotFoundError(f"image_folder: {path} holds no class folders with images ({e})") from None
    train, test = folders
    if train.classes != test.classes:
        raise ConfigError(f"image_folder: {train_dir}/ and {test_dir}/ hold different classes "
                          f"({train.classes[:5]}... vs {test.classes[:5]}...)")
    shape = tuple(train[0][0].shape)
    if image_size is None:  # without resizing, every image must have the first one's size to be batched
        sizes = {_image_size(path) for path, _ in train.samples[:64]}
        if len(sizes) > 1:
            raise ConfigError(f"image_folder: images have different sizes {sorted(sizes)[:3]}; set image_size=N")
    views = [FolderImages(f, torch.arange(len(f)), shape, workers) for f in (train, test)]
    labels = [torch.tensor(f.targets, dtype=torch.int64) for f in (train, test)]
    return Source(train=(views[0], labels[0]), test=(views[1], labels[1]), num_classes=len(train.classes),
                  input_shape=shape, default_val_size=max(1, math.floor(val_fraction * len(train))),
                  fill=black(mean, std))


def _image_size(path: str) -> tuple:
    from PIL import Image

    with Image.open(path) as im:
        return im.size
