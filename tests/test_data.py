"""The data-set registry: sizes, normalization, seeded splits, the mnist1d cache, and errors that name the fix.

Nothing here downloads: MNIST and CIFAR are tested on tiny files written in their real formats.
"""
from __future__ import annotations

import gzip
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import lottery.data.fashion_mnist as fashion_module
import lottery.data.mnist1d as mnist1d_module
from lottery.data import DATASETS, DataNotFoundError, Dataset, cache_dir, load_dataset, split_train_val
from lottery.data.idx import read_idx
from lottery.errors import ConfigError, CorruptFileError, LotteryError, UnknownNameError
from tests.image_helpers import write_image_folder

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, N_TEST = 30, 10  # tiny MNIST / CIFAR files


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """An IDX file as LeCun specifies it: zero, zero, type code 0x08, ndim, big-endian dims, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob += array.astype(np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(blob)


def write_mnist(folder: Path, seed: int, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, N_TRAIN),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, N_TEST),
    }
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), a, gz)
    return arrays


def write_cifar(root: Path, hundred: bool, seed: int) -> np.ndarray:
    """CIFAR's python pickle batches: ``data`` (n, 3072) uint8 in CHW order, labels, and the meta file."""
    rng = np.random.default_rng(seed)
    k = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "fine_labels" if hundred else "labels"
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    first = None
    for name in names + ["test"] if hundred else names + ["test_batch"]:
        data = rng.integers(0, 256, (N_TEST if "test" in name else N_TRAIN // len(names), 3072), dtype=np.uint8)
        first = data if first is None else first
        batch = {"data": data, label_key: rng.integers(0, k, len(data)).tolist()}
        if hundred:
            batch["coarse_labels"] = [0] * len(data)
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    meta = {("fine_label_names" if hundred else "label_names"): [f"c{i}" for i in range(k)]}
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f)
    return first


@pytest.fixture
def trust_tiny_cifar(monkeypatch):
    """Our tiny CIFAR files cannot match torchvision's md5 sums of the real ones: check only that they exist."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's ~/.cache/lottery."""
    monkeypatch.setenv("LOTTERY_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One root holding every data set: tiny MNIST / Fashion-MNIST / CIFAR files and a generated mnist1d cache."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root / "MNIST" / "raw", seed=1)
    write_mnist(root / "FashionMNIST" / "raw", seed=2)
    write_cifar(root, hundred=False, seed=3)
    write_cifar(root, hundred=True, seed=4)
    write_image_folder(root, seed=5)  # root/train, root/val: the streaming image_folder data set
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    ds = load_dataset("mnist1d", root=root)  # generated once per session (a couple of seconds)
    rng_untouched = np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    return root, ds, rng_untouched


# --- the registry and load_dataset ---------------------------------------------------------------------------

def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownNameError, match="known data sets: .*fashion_mnist.*mnist1d.*synthetic"):
        load_dataset("mnsit1d")


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(ConfigError, match="does not take option.*colour.*it takes: download"):
        load_dataset("mnist", colour=True)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_data_set_keeps_the_contract(name, data_root, trust_tiny_cifar):
    root, _, _ = data_root
    ds = load_dataset(name, root=root, val_size=5)
    assert isinstance(ds, Dataset) and ds.name == name
    for x, y in (ds.train, ds.val, ds.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == ds.input_shape and len(x) == len(y) > 0
        assert torch.isfinite(x).all() and 0 <= y.min() and y.max() < ds.num_classes
    assert len(ds.val[1]) == 5
    assert DATASETS[name].__doc__


# --- the validation split ------------------------------------------------------------------------------------

def test_split_is_seeded_disjoint_and_complete():
    x, y = torch.arange(100).float().unsqueeze(1), torch.arange(100)
    (tx, ty), (vx, vy) = split_train_val(x, y, 20, seed=7)
    (tx2, _), (vx2, _) = split_train_val(x, y, 20, seed=7)
    (_, _), (vx3, _) = split_train_val(x, y, 20, seed=8)
    assert torch.equal(vx, vx2) and torch.equal(tx, tx2) and not torch.equal(vx, vx3)
    assert len(vy) == 20 and len(ty) == 80
    assert set(ty.tolist()).isdisjoint(vy.tolist()) and set(ty.tolist()) | set(vy.tolist()) == set(range(100))
    assert torch.equal(tx[:, 0].long(), ty) and (ty.diff() > 0).all()  # pairs intact, original order kept
    assert len(split_train_val(x, y, 0.25, seed=0)[1][1]) == 25


@pytest.mark.parametrize("bad", [0, 100, -3, 0.0, 1.0, 1.5, True, "10"])
def test_val_size_out_of_range_is_a_clear_error(bad):
    x, y = torch.zeros(100, 1), torch.zeros(100, dtype=torch.int64)
    with pytest.raises(ConfigError, match="val_size"):
        split_train_val(x, y, bad, seed=0)


def test_load_dataset_split_depends_only_on_seed():
    a, b = load_dataset("synthetic", seed=3), load_dataset("synthetic", seed=3)
    c = load_dataset("synthetic", seed=4)
    assert torch.equal(a.val[0], b.val[0]) and torch.equal(a.train[1], b.train[1])
    assert not torch.equal(a.val[0], c.val[0])
    assert torch.equal(a.test[0], c.test[0])  # the data itself does not move with the split seed
    assert len(a.train[1]) + len(a.val[1]) == 1024 and len(a.val[1]) == 128


def test_to_device_moves_every_tensor():
    ds = load_dataset("synthetic", n_train=40, n_test=10)
    assert ds.to("cpu").train[0].device.type == "cpu"
    moved = ds.to("meta")  # a second device that every machine has
    assert all(t.device.type == "meta" for split in (moved.train, moved.val, moved.test) for t in split)
    assert ds.train[0].device.type == "cpu"  # a copy: the original stays
    assert load_dataset("synthetic", n_train=40, n_test=10, device="meta").test[1].device.type == "meta"
    assert "train/val/test=35/5/10" in repr(ds)


# --- mnist1d -------------------------------------------------------------------------------------------------

def test_mnist1d_sizes_and_normalization(data_root):
    _, ds, _ = data_root
    assert (len(ds.train[1]), len(ds.val[1]), len(ds.test[1])) == (3500, 500, 1000)
    assert ds.input_shape == (40,) and ds.num_classes == 10
    x = torch.cat([ds.train[0], ds.val[0]])
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05  # make_dataset standardizes; we keep it


def test_mnist1d_leaves_global_rngs_alone(data_root):
    assert data_root[2]


def test_mnist1d_second_load_uses_the_cache(data_root, monkeypatch):
    root, first, _ = data_root
    assert len(list(Path(root).glob("mnist1d-*.npz"))) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("make_dataset called although the cache exists")

    monkeypatch.setattr("mnist1d.data.make_dataset", no_generation)
    again = load_dataset("mnist1d", root=root)
    assert torch.equal(again.train[0], first.train[0]) and torch.equal(again.test[1], first.test[1])


def test_mnist1d_rebuilds_an_unreadable_cache(tmp_path, monkeypatch):
    fake = {"x": np.zeros((16, 40), np.float32), "y": np.arange(16) % 10,
            "x_test": np.zeros((4, 40), np.float32), "y_test": np.arange(4)}
    monkeypatch.setattr(mnist1d_module, "_generate", lambda args: fake)
    load_dataset("mnist1d", root=tmp_path, val_size=2)
    (path,) = tmp_path.glob("mnist1d-*.npz")
    path.write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unreadable mnist1d cache"):
        ds = load_dataset("mnist1d", root=tmp_path, val_size=2)
    assert len(ds.test[1]) == 4 and np.load(path, allow_pickle=False)["x"].shape == (16, 40)


def test_mnist1d_options_change_the_cache_key_and_unknown_ones_fail(tmp_path, monkeypatch):
    fake = {"x": np.zeros((16, 40), np.float32), "y": np.arange(16) % 10,
            "x_test": np.zeros((4, 40), np.float32), "y_test": np.arange(4)}
    monkeypatch.setattr(mnist1d_module, "_generate", lambda args: fake)
    load_dataset("mnist1d", root=tmp_path, val_size=2)
    load_dataset("mnist1d", root=tmp_path, val_size=2, seed=1, shuffle_seq=True)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 2
    with pytest.raises(ConfigError, match="mnist1d has no option lenght.*final_seq_length"):
        load_dataset("mnist1d", root=tmp_path, lenght=40)


def test_cache_dir_honours_root_then_env(tmp_path, monkeypatch):
    assert cache_dir(tmp_path) == tmp_path
    monkeypatch.setenv("LOTTERY_CACHE", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("LOTTERY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lottery"


# --- MNIST and Fashion-MNIST ---------------------------------------------------------------------------------

@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package():
    ds = load_dataset("fashion_mnist")
    assert len(ds.train[1]) + len(ds.val[1]) == 60000 and len(ds.val[1]) == 5000 and len(ds.test[1]) == 10000
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert abs(ds.train[0].mean()) < 0.01 and abs(ds.train[0].std() - 1) < 0.01
    assert torch.bincount(ds.test[1]).tolist() == [1000] * 10


def test_mnist_reads_torchvision_layout_like_torchvision(tmp_path):
    raw = write_mnist(tmp_path / "MNIST" / "raw", seed=5)
    ds = load_dataset("mnist", root=tmp_path, val_size=5)
    assert ds.input_shape == (1, 28, 28) and len(ds.train[1]) + len(ds.val[1]) == N_TRAIN
    expected = (torch.from_numpy(raw["t10k-images-idx3-ubyte"]).float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(ds.test[0][:, 0], expected, atol=1e-5)
    reference = torchvision.datasets.MNIST(str(tmp_path), train=False, download=False)
    assert torch.equal(ds.test[1], reference.targets)
    assert torch.allclose(ds.test[0][:, 0], (reference.data.float() / 255 - 0.1307) / 0.3081, atol=1e-5)


def test_fashion_mnist_from_a_root_with_gzipped_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_module, "SYSTEM_DIRS", [])
    raw = write_mnist(tmp_path, seed=6, gz=True)  # plain folder, compressed, as the Debian package ships them
    ds = load_dataset("fashion_mnist", root=tmp_path, val_size=0.2)
    assert len(ds.val[1]) == 6 and torch.equal(ds.test[1], torch.from_numpy(raw["t10k-labels-idx1-ubyte"]))
    assert torch.allclose(ds.test[0][3, 0], (torch.from_numpy(raw["t10k-images-idx3-ubyte"][3]).float() / 255
                                             - 0.2860) / 0.3530, atol=1e-5)


def test_missing_fashion_mnist_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_module, "SYSTEM_DIRS", [str(tmp_path / "usr-share")])
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion_mnist", root=tmp_path)
    message = str(err.value)
    assert isinstance(err.value, LotteryError) and "\n" not in message
    for needle in (str(tmp_path / "FashionMNIST" / "raw"), str(tmp_path / "usr-share"), "train-images-idx3-ubyte",
                   "apt-get install dataset-fashion-mnist", "--data-root", "download=True"):
        assert needle in message


def test_missing_mnist_needs_no_apt_hint(tmp_path):
    with pytest.raises(DataNotFoundError, match="MNIST not found.*--data-root") as err:
        load_dataset("mnist", root=tmp_path)
    assert "apt-get" not in str(err.value)


def test_damaged_idx_file_is_named(tmp_path):
    write_mnist(tmp_path, seed=7)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptFileError, match="train-images-idx3-ubyte is truncated"):
        load_dataset("mnist", root=tmp_path, val_size=5)
    path.write_bytes(b"\x08\x03" + b"\x00" * 20)
    with pytest.raises(CorruptFileError, match="not an IDX file"):
        read_idx(path)


# --- CIFAR ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, hundred, mean, std", [
    ("cifar10", False, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ("cifar100", True, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
])
def test_cifar_from_torchvision_layout(tmp_path, trust_tiny_cifar, name, hundred, mean, std):
    first = write_cifar(tmp_path, hundred, seed=8)
    ds = load_dataset(name, root=tmp_path, val_size=6, seed=0)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == (100 if hundred else 10)
    assert len(ds.train[1]) + len(ds.val[1]) == N_TRAIN and len(ds.test[1]) == N_TEST
    train_x = torch.cat([ds.train[0], ds.val[0]])  # undo the split to find sample 0 of the first batch
    order = torch.cat([split_train_val(torch.arange(N_TRAIN), torch.arange(N_TRAIN), 6, 0)[i][1] for i in (0, 1)])
    sample0 = train_x[(order == 0).nonzero().item()]
    pixels = torch.from_numpy(first[0]).float().view(3, 32, 32) / 255
    expected = (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(sample0, expected, atol=1e-5)


def test_missing_cifar_lists_what_is_missing(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataNotFoundError, match="lacks data_batch_1.*test_batch, batches.meta.*--data-root"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_files_failing_the_checksum_are_reported(tmp_path):
    write_cifar(tmp_path, hundred=False, seed=9)  # real torchvision md5 check: tiny files fail it
    with pytest.raises(CorruptFileError, match="damaged or not the official ones"):
        load_dataset("cifar10", root=tmp_path, val_size=5)


# --- synthetic -----------------------------------------------------------------------------------------------

def test_synthetic_is_seeded():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    c = load_dataset("synthetic", data_seed=1)
    assert torch.equal(a.train[0], b.train[0]) and not torch.equal(a.train[0], c.train[0])
    assert load_dataset("synthetic", input_shape=[40], num_classes=3).input_shape == (40,)


@pytest.mark.parametrize("options", [{"num_classes": 1}, {"n_train": 0}, {"input_shape": (1, 0, 4)},
                                     {"input_shape": ()}, {"noise": -1.0}, {"n_test": 2.5}])
def test_synthetic_rejects_bad_options(options):
    with pytest.raises(ConfigError, match="synthetic"):
        load_dataset("synthetic", **options)


@pytest.mark.parametrize("input_shape", [(1, 12, 12), (40,)])
def test_synthetic_is_learnable(input_shape):
    ds = load_dataset("synthetic", input_shape=input_shape)
    torch.manual_seed(0)
    dim = int(np.prod(input_shape))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = ds.train
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, len(y), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (net(ds.test[0]).argmax(1) == ds.test[1]).float().mean().item()
    assert accuracy > 0.7  # chance is 0.25


def test_classes_option_keeps_only_those_labels_for_every_data_set():
    from lottery.data import load_dataset

    full = load_dataset("synthetic", n_train=400, n_test=200)
    some = load_dataset("synthetic", n_train=400, n_test=200, classes=[3, 1])
    for part, whole in ((some.train, full.train), (some.test, full.test)):
        assert set(part[1].tolist()) == {1, 3}
    keep = (full.test[1] == 1) | (full.test[1] == 3)
    assert torch.equal(some.test[0], full.test[0][keep])  # the same samples, in order
    assert some.num_classes == full.num_classes  # the head still fits a checkpoint trained on other classes


@pytest.mark.parametrize("bad", [[], [4], [1, 1], ["1"], 2, [-1]])
def test_classes_option_refuses_what_is_not_a_label(bad):
    from lottery.data import load_dataset

    with pytest.raises(ConfigError, match="classes must be distinct labels in"):
        load_dataset("synthetic", classes=bad)


def test_chance_of_a_class_subset_is_one_over_its_labels():
    from lottery.data import load_dataset
    from lottery.drivers.compare_inits import chance_of

    assert chance_of(load_dataset("synthetic", classes=[0, 1])) == 0.5
    assert chance_of(load_dataset("synthetic")) == 0.25


@pytest.mark.parametrize("name", ["cifar10", "fashion_mnist", "mnist"])
def test_fill_is_the_normalized_black_pixel(name, data_root, trust_tiny_cifar):
    """Augmentation pads with a zero (black) pixel of the raw image, as padding before normalizing would: each
    image data set hands that value per channel."""
    from lottery.data.augment import crop_flip

    root, _, _ = data_root
    ds = load_dataset(name, root=root, val_size=2)
    raw_black = torch.zeros((1, *ds.input_shape))
    for c, v in enumerate(ds.fill):  # undo standardize: the fill must map back to 0
        raw_black[0, c] = v
    x = ds.train[0][:2]
    out = crop_flip(x, torch.tensor([0, 8]), torch.tensor([0, 8]), torch.tensor([False, True]), 4, ds.fill)
    assert len(ds.fill) == ds.input_shape[0]
    assert torch.equal(out[0, :, :4, :], raw_black[0, :, :4, :].expand_as(out[0, :, :4, :]))  # top padding rows
    mean = {"cifar10": 0.4914, "fashion_mnist": 0.2860, "mnist": 0.1307}[name]
    std = {"cifar10": 0.2470, "fashion_mnist": 0.3530, "mnist": 0.3081}[name]
    assert ds.fill[0] * std + mean == pytest.approx(0.0, abs=1e-7)
