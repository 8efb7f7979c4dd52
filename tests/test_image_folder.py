"""The streaming path: an ImageNet-style folder read by DataLoader workers, under the unchanged IMP engine."""
import dataclasses

import pytest
import torch

import lottery as lt
from lottery.data import DataNotFoundError, load_dataset
from lottery.data.image_folder import FolderImages
from lottery.errors import ConfigError
from lottery.train import train
from tests.engine_helpers import tiny
from tests.image_helpers import write_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("start_step", [0, 13])  # 13: a late start (step:K rewinding) in the third epoch
def test_streaming_batches_equal_the_in_memory_batches(folder, start_step):
    """Same images, same seed: training from disk (2 workers) gives bit-identical weights to training from memory."""
    streamed = load_dataset("image_folder", root=folder, workers=2, val_size=6)
    assert isinstance(streamed.train[0], FolderImages) and streamed.input_shape == (3, 8, 8)
    in_memory = dataclasses.replace(streamed, train=(streamed.train[0].load(), streamed.train[1]),
                                    val=(streamed.val[0].load(), streamed.val[1]),
                                    test=(streamed.test[0].load(), streamed.test[1]))
    cfg = tiny(folder, steps=25, eval_every=10, batch_size=8)  # 42 training images: the epoch wraps around
    results = []
    for data in (streamed, in_memory):
        model = lt.build_model("mlp", data.input_shape, data.num_classes, hidden=(16,))
        lt.init_weights(model, "xavier_normal", seed=0)
        mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.5)
        mask.apply(model)
        results.append((train(model, data, cfg, mask, seed=3, start_step=start_step), lt.snapshot(model)))
    (r_disk, w_disk), (r_mem, w_mem) = results
    assert r_disk.curve == r_mem.curve and r_disk.test_accuracy == r_mem.test_accuracy
    assert r_disk.steps == 25 - start_step and r_disk.curve[0][0] == start_step
    assert all(torch.equal(w_disk[k], w_mem[k]) for k in w_mem)


def test_imp_runs_on_an_image_folder(folder, tmp_path):
    cfg = tiny(tmp_path, dataset="image_folder", data_root=str(folder), dataset_options={"workers": 1},
               model_options={"hidden": [32]}, levels=1, steps=30, eval_every=10, batch_size=12,
               controls=("random_mask",))
    results = lt.run_imp(cfg)
    assert results["status"] == "complete" and [e["level"] for e in results["levels"]] == [0, 1]
    assert results["levels"][0]["test_accuracy"] > 0.6  # 3 classes: chance is 1/3
    assert results["levels"][1]["density"] == pytest.approx(0.8, abs=0.01)


def test_folder_errors_name_the_fix(tmp_path, folder):
    with pytest.raises(DataNotFoundError, match="ImageNet layout"):
        load_dataset("image_folder", root=tmp_path)
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        load_dataset("image_folder", root=folder, channels=2)
    gray = load_dataset("image_folder", root=folder, channels=1, image_size=6, workers=0)
    assert gray.input_shape == (1, 6, 6) and gray.test[0][0:2].shape == (2, 1, 6, 6)


def test_evaluation_batches_cover_the_split_in_order(tmp_path):
    """Workers read pieces of 256 images; evaluation receives them joined into its own batch size, in order."""
    x = load_dataset("image_folder", root=write_image_folder(tmp_path, n_train=100, n_val=1), workers=1,
                     val_size=5).train[0]
    full = x.load()
    for batch in (7, 300, 2048):
        parts = list(x.batches(batch))
        assert [len(p) for p in parts] == [min(batch, len(x) - i) for i in range(0, len(x), batch)]
        assert torch.equal(torch.cat(parts), full)
