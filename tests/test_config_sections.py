"""Config's typed sections: every setting belongs to one, and the keys that decide which runs may share a data set,
a fused pass or a comparison follow from the sections (no list of field names kept by hand elsewhere)."""
from dataclasses import fields

import pytest

from lottery.config import SECTIONS, Config, from_dict
from lottery.session import data_key

# a different valid value for every field, to see which keys notice the change
OTHER = {"dataset": "synthetic", "dataset_options": {"n": 3}, "data_root": "/tmp/elsewhere", "val_size": 50,
         "augment": "crop_flip", "augment_options": {"pad": 2},
         "model": "conv2", "model_options": {"hidden": [8]}, "activation": "tanh",
         "init": "kaiming_normal", "init_scale": 2.0, "init_options": {"gain": 2.0},
         "optimizer": "sgd", "lr": 0.1, "momentum": 0.5, "weight_decay": 1e-4, "batch_size": 7, "steps": 9,
         "epochs": 1.5, "schedule": "cosine", "milestones": (3,), "gamma": 0.5, "warmup_steps": 2, "eval_every": 3,
         "fused": False, "record_signal": False, "amp": True,
         "levels": 2, "prune_fraction": 0.5, "scope": "layer", "layer_fractions": {"0.weight": 0.1},
         "min_kept_per_layer": 1, "strategy": "random",
         "structure": "neuron", "structure_options": {"norm": "l1"}, "rewind": "lr", "controls": (),
         "early_bird": True, "early_bird_epsilon": 0.2, "early_bird_window": 3, "prune_schedule": "adaptive",
         "target_density": 0.1, "budget": 3.0, "plan_seeds": (0, 1), "barrier_points": 5, "barrier_stop": 0.02,
         "control_init": "sparse",
         "seed": 3, "name": "other", "pack": 4, "device": "cpu", "out": "elsewhere", "progress": False,
         "log": "tensorboard"}


def test_every_setting_has_one_known_section_and_the_blocks_follow_the_sections():
    sections = [f.metadata["section"] for f in fields(Config)]
    assert set(sections) == set(SECTIONS)
    assert set(OTHER) == {f.name for f in fields(Config)}, "OTHER needs a value for a new setting"
    # fields are declared section by section, in SECTIONS order: a new setting goes into its block
    assert sections == sorted(sections, key=SECTIONS.index)
    cfg = Config()
    assert {k for s in SECTIONS for k in cfg.section(s)} == set(cfg.to_dict())
    with pytest.raises(ValueError, match="known: data, model"):
        cfg.section("optim")


@pytest.mark.parametrize("name", sorted(OTHER))
def test_fuse_key_notices_exactly_the_data_model_and_training_sections(name):
    """Runs may train in one fused pass when they differ only in init, pruning, seed or unhashed run settings
    (those are in each run's start state, mask and data order); device places the data."""
    base = Config()
    other = Config(**{**base.__dict__, name: OTHER[name]})  # no validation: only the key is looked at
    section = next(f.metadata["section"] for f in fields(Config) if f.name == name)
    expected = section in ("data", "model", "training") or name == "device"
    assert (base.fuse_key() != other.fuse_key()) == expected


@pytest.mark.parametrize("name", sorted(OTHER))
def test_comparison_settings_leave_out_the_init_section_and_the_seed(name):
    base = from_dict({"init": "normal"})
    other = Config(**{**base.__dict__, name: OTHER[name]})
    section = next(f.metadata["section"] for f in fields(Config) if f.name == name)
    hashed = next(f.metadata["hashed"] for f in fields(Config) if f.name == name)
    expected = hashed and section not in ("init", "run")
    assert (base.comparison_settings() != other.comparison_settings()) == expected


def test_xavier_gain_marker_stays_out_of_the_comparison_and_in_the_hash():
    cfg = from_dict({"init": "xavier_uniform", "lr": 0.01})
    assert cfg.hashed_settings()["xavier_gain"] == 1
    assert cfg.comparison_settings() == {"lr": 0.01}


@pytest.mark.parametrize("name", ["dataset", "dataset_options", "data_root", "val_size", "model", "lr", "seed",
                                  "init"])
def test_data_key_is_the_data_section(name):
    base = Config(device="cpu")
    other = Config(**{**base.__dict__, name: OTHER[name]})
    section = next(f.metadata["section"] for f in fields(Config) if f.name == name)
    assert (data_key(base) != data_key(other)) == (section == "data")
