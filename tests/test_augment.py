"""Seeded crop + flip augmentation on the device (lottery/data/augment.py): torchvision's pixels given the same draws,
one batch per (seed, step) whatever the process, the thread count, the DDP rank or the fused pass, and a config
setting that enters the hash only when set."""
import copy

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import lottery as lt
from lottery.config import from_dict
from lottery.data import load_dataset
from lottery.data.augment import augment_batch, augment_stacked, crop_flip, draw
from lottery.errors import ConfigError
from lottery.fused import train_fused
from lottery.models import build_model
from lottery.train import train


@pytest.mark.parametrize("pad", [0, 1, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_same_pixels_as_torchvision_random_crop_and_flip(pad, channels):
    """Given the offsets and flips drawn, every sample equals torchvision's pad(fill) -> crop -> horizontal flip."""
    x = torch.randn(16, channels, 9, 7)
    fill = tuple(float(v) for v in torch.randn(channels))
    rows, cols, flips = draw(3, 11, 16, pad, True)
    assert rows.min() >= 0 and rows.max() <= 2 * pad and cols.max() <= 2 * pad
    got = crop_flip(x, rows, cols, flips, pad, fill)
    for b in range(16):
        padded = TF.pad(x[b], [pad], fill=list(fill))  # RandomCrop(padding=pad) pads every side with fill
        want = TF.crop(padded, int(rows[b]), int(cols[b]), 9, 7)
        want = TF.horizontal_flip(want) if flips[b] else want
        assert torch.equal(got[b], want), b
    assert flips.any() and not flips.all()  # both kinds occur among these 16 seeded draws


def test_draws_are_a_function_of_seed_and_step_and_cover_the_range():
    a = draw(0, 5, 512, 4, True)
    assert all(torch.equal(u, v) for u, v in zip(a, draw(0, 5, 512, 4, True)))
    assert not torch.equal(a[0], draw(0, 6, 512, 4, True)[0]) and not torch.equal(a[0], draw(1, 5, 512, 4, True)[0])
    assert set(a[0].tolist()) == set(range(9)) and 0.4 < a[2].float().mean() < 0.6
    assert not draw(0, 5, 64, 4, False)[2].any()  # flip = false: never flipped


def test_ddp_ranks_slice_the_global_batch_draws():
    """Two ranks each augmenting their half of a global batch give the halves of the one-process batch."""
    x = torch.randn(8, 3, 6, 6)
    whole = augment_batch(x, "crop_flip", {"pad": 2, "flip": True}, seed=7, step=3)
    parts = [augment_batch(x[r * 4:(r + 1) * 4], "crop_flip", {"pad": 2, "flip": True}, seed=7, step=3,
                           shard=lambda t, r=r: t[r * 4:(r + 1) * 4], global_size=8) for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)


def test_fused_batches_are_each_networks_own():
    x = torch.randn(12, 1, 5, 5)
    got = augment_stacked(x, "crop_flip", {"pad": 4, "flip": True}, [4, 9], step=2)
    for k, seed in enumerate([4, 9]):
        own = augment_batch(x[k * 6:(k + 1) * 6], "crop_flip", {"pad": 4, "flip": True}, seed=seed, step=2)
        assert torch.equal(got[k * 6:(k + 1) * 6], own)


def test_unset_is_the_identity_and_channels_last_is_kept():
    x = torch.randn(4, 3, 5, 5)
    assert augment_batch(x, None, {}, 0, 0) is x
    cl = x.contiguous(memory_format=torch.channels_last)
    assert augment_batch(cl, "crop_flip", {}, 0, 0).is_contiguous(memory_format=torch.channels_last)


def test_config_hash_only_when_set_and_both_spellings_agree():
    base = from_dict({})
    assert "augment" not in base.hashed_settings() and "augment_options" not in base.hashed_settings()
    on = from_dict({"augment": "crop_flip"})
    assert on.hash() != base.hash() and on.augment_options == {"pad": 4, "flip": True}
    assert from_dict({"augment": "crop_flip", "augment_options": {"pad": 4, "flip": True}}).hash() == on.hash()
    assert from_dict({"augment": "crop_flip", "augment_options": {"pad": 2}}).hash() != on.hash()


@pytest.mark.parametrize("settings, words", [
    ({"augment": "cutout"}, "unknown augment 'cutout'"),
    ({"augment": "crop_flip", "augment_options": {"size": 3}}, "unknown augment option 'size'"),
    ({"augment": "crop_flip", "augment_options": {"pad": -1}}, "pad must be an integer"),
    ({"augment": "crop_flip", "augment_options": {"flip": "yes"}}, "flip must be true or false"),
    ({"augment_options": {"pad": 2}}, "augment is not"),
])
def test_bad_settings_are_one_line(settings, words):
    with pytest.raises(ConfigError, match=words):
        from_dict(settings)


def test_refused_on_data_that_is_not_an_image():
    cfg = from_dict({"dataset": "synthetic", "dataset_options": {"input_shape": [20]}, "augment": "crop_flip",
                     "steps": 5, "progress": False})
    data = load_dataset("synthetic", input_shape=[20])
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[8])
    with pytest.raises(ConfigError, match="needs image batches.*drop --augment"):
        train(model, data, cfg)


def _conv_setup(**extra):
    cfg = from_dict({"dataset": "synthetic", "model": "conv2", "augment": "crop_flip", "steps": 12, "eval_every": 4,
                     "batch_size": 16, "lr": 1e-3, "progress": False, "record_signal": False, "fused": False, **extra})
    data = load_dataset("synthetic", n_train=96, n_test=32, input_shape=[1, 8, 8])
    model = build_model("conv2", data.input_shape, data.num_classes)
    lt.init_weights(model, "kaiming_normal", seed=0)
    return cfg, data, model


def test_training_with_augmentation_is_reproducible_and_changes_the_run():
    cfg, data, model = _conv_setup()
    a, b, plain = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    ra, rb = train(a, data, cfg, seed=1), train(b, data, cfg, seed=1)
    assert ra.curve == rb.curve and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    train(plain, data, cfg.replace(augment=None, augment_options={}), seed=1)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), plain.parameters()))


def test_thread_count_does_not_change_the_draws():
    """The draws come from a CPU generator of their own: the batch of a step is the same on any thread count."""
    x = torch.randn(32, 3, 8, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = augment_batch(x, "crop_flip", {}, 5, 9)
        torch.set_num_threads(2)
        two = augment_batch(x, "crop_flip", {}, 5, 9)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_fused_training_with_augmentation_matches_training_alone():
    cfg, data, model = _conv_setup(fused=True)
    cfg = cfg.replace(steps=6, eval_every=3)
    data = data.__class__(**{**data.__dict__, "train": tuple(t.double() if t.is_floating_point() else t
                                                              for t in data.train),
                             "val": tuple(t.double() if t.is_floating_point() else t for t in data.val),
                             "test": tuple(t.double() if t.is_floating_point() else t for t in data.test)})
    models = [copy.deepcopy(model).double() for _ in range(2)]
    alone = [copy.deepcopy(m) for m in models]
    for m, s in zip(alone, (3, 4)):
        train(m, data, cfg, seed=s)
    train_fused(models, data, cfg, [None, None], seeds=[3, 4], method="vmap")
    for m, a in zip(models, alone):
        assert all(torch.allclose(p, q, rtol=1e-9, atol=1e-9) for p, q in zip(m.parameters(), a.parameters()))
