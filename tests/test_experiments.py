"""Every named experiment parses, validates and builds its model; the paper settings are what the README says."""
from pathlib import Path

import pytest

import lottery as lt
from lottery.config import from_dict, load_toml

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.toml"))
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "mnist1d": (40,), "cifar10": (3, 32, 32)}


def _config(path):
    settings = load_toml(path)
    for key in ("inits", "seeds", "run"):  # compare-inits keys and `lottery run`'s table, read by those commands
        settings.pop(key, None)
    return from_dict(settings, source=str(path))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_config_is_valid_and_fits_its_model(path):
    cfg = _config(path)
    model = lt.build_model(cfg.model, SHAPES[cfg.dataset], 10, activation=cfg.activation, **cfg.model_options)
    mask = lt.Mask.ones_like(model)
    unknown = [k for k in cfg.layer_fractions if k not in mask]
    assert not unknown, f"{path.name}: layer_fractions name no prunable weight: {unknown}"


def test_the_default_run_is_the_mnist1d_experiment():
    path = next(p for p in EXPERIMENTS if p.stem == "mnist1d_mlp")
    assert _config(path).hashed_settings() == lt.Config().hashed_settings()  # nothing but the defaults


def test_lenet300_recipe_matches_frankle_and_carbin():
    cfg = _config(next(p for p in EXPERIMENTS if p.stem == "lenet300_mnist"))
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.steps, cfg.scope) == ("adam", 1.2e-3, 60, 50000, "layer")
    assert cfg.layer_fractions == {"fc3.weight": 0.1} and cfg.prune_fraction == 0.2 and cfg.rewind == "init"


def test_init_study_tables_read_a_comparison(tmp_path):
    """experiments/init_study.py's tables come from a real (tiny) comparison: labels, densities, IoU baseline."""
    import importlib.util

    from lottery.drivers.compare_inits import compare_inits

    spec = importlib.util.spec_from_file_location("init_study", Path(__file__).parent.parent / "experiments/init_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    base = from_dict({"dataset": "synthetic", "levels": 2, "steps": 40, "eval_every": 20, "controls": "none",
                      "progress": False, "out": str(tmp_path)})
    summary = compare_inits(base, "kaiming_normal,zeros", seeds=2, plots=False, log=None)
    rescue = study.rescue_table(summary)
    assert "best dense network: kaiming_normal" in rescue and "stalled" in rescue.splitlines()[-1]
    overlap = study.overlap_table(summary["comparison_dir"], level=2)
    assert "kaiming_normal" in overlap and "1.00 [1.00]" in overlap  # the diagonal
    assert "[0.47]" in overlap  # independent random masks at 64 % density: 0.64² / (2·0.64 − 0.64²) = 0.47
    assert study.time_line(summary).startswith("training: 12 runs")  # 2 schemes x 2 seeds x (dense + 2 levels)
    seeds = study.seeds_table(summary, level=2).splitlines()
    assert "random masks of those densities: 0.47" in seeds[0]
    assert seeds[1].split() == ["kaiming_no/s0", "kaiming_no/s1"]  # the stalled scheme's masks are left out
    assert seeds[2].split()[1] == "1.00" and 0.0 < float(seeds[2].split()[2]) < 1.0  # itself; the other seed


def test_same_runs_compares_one_grid_trained_two_ways(tmp_path, monkeypatch):
    """experiments/same_runs.py pairs run directories by name (the settings' hash): a tiny grid trained one run at a
    time and again with --pack 3 in another runs directory gives every run in both, the same statuses, and
    accuracies that differ by float rounding only; an unrelated directory is one clear line."""
    import importlib.util

    from lottery.drivers.compare_inits import compare_inits

    spec = importlib.util.spec_from_file_location("same_runs", Path(__file__).parent.parent / "experiments/same_runs.py")
    same = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(same)
    settings = {"dataset": "synthetic", "model_options": {"hidden": [8]}, "levels": 1, "steps": 20, "eval_every": 10,
                "batch_size": 32, "progress": False}
    for name, pack in (("a", 1), ("b", 3)):
        compare_inits(from_dict({**settings, "out": str(tmp_path / name), "pack": pack}), "kaiming_normal,zeros",
                      seeds=2, plots=False, log=None)
    rows = list(same.pairs(tmp_path / "a", tmp_path / "b"))
    # 2 schemes x 2 seeds, every run found in both
    assert {r[1] for r in rows} == {"kaiming_normal", "zeros"} and len({r[0] for r in rows}) == 4
    table = same.run_table(rows)
    assert f"{len(rows)} training runs compared" in table and f"same status: {len(rows)}" in table
    diffs = [abs(a["test_accuracy"] - b["test_accuracy"]) for *_, a, b in rows if a.get("test_accuracy") is not None]
    assert diffs and max(diffs) <= 1 / 512 + 1e-12  # one test sample of the synthetic set
    assert "cells with >= 2 seeds" in same.spread_table(rows)
    (tmp_path / "c").mkdir()
    monkeypatch.setattr("sys.argv", ["same_runs.py", str(tmp_path / "c"), str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="nothing to compare"):
        same.main()


CIFAR = [p for p in EXPERIMENTS if _config(p).dataset == "cifar10"]


@pytest.mark.parametrize("path", CIFAR, ids=lambda p: p.stem)
def test_cifar_configs_train_as_open_lth_does_and_never_download(path):
    """Random crop from 4-pixel zero padding + horizontal flip; the data only from --data-root unless asked."""
    cfg = _config(path)
    assert cfg.augment == "crop_flip" and cfg.augment_options == {"pad": 4, "flip": True}
    assert not cfg.dataset_options.get("download", False)


@pytest.mark.parametrize("stem, model, rewind, ignored", [("resnet20_cifar10", "resnet20", "step:500", {}),
                                                          ("vgg16_cifar10", "vgg16", "step:2000", {"fc.weight": 0.0})])
def test_deep_cifar_recipes_are_open_lths(stem, model, rewind, ignored):
    """SGD 0.1 momentum 0.9, wd 1e-4, batch 128, 160 epochs of 391 iterations, lr / 10 at epochs 80 and 120, no
    warmup, global 20 % per level, rewinding to an early iteration."""
    cfg = _config(next(p for p in EXPERIMENTS if p.stem == stem))
    assert (cfg.model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == \
        (model, "sgd", 0.1, 0.9, 1e-4, 128)
    assert (cfg.steps, cfg.schedule, cfg.milestones, cfg.gamma, cfg.warmup_steps) == \
        (160 * 391, "step", (80 * 391, 120 * 391), 0.1, 0)
    assert (cfg.scope, cfg.prune_fraction, cfg.rewind, cfg.layer_fractions) == ("global", 0.2, rewind, ignored)


@pytest.mark.parametrize("stem, lr, steps, conv", [("conv2_cifar10", 2e-4, 20000, 0.1), ("conv4_cifar10", 3e-4, 25000, 0.1),
                                                   ("conv6_cifar10", 3e-4, 30000, 0.15)])
def test_conv_recipes_are_frankle_and_carbins(stem, lr, steps, conv):
    """Adam, batch 60; per level conv layers lose 10/10/15 %, hidden fc 20 %, the output layer 10 %."""
    cfg = _config(next(p for p in EXPERIMENTS if p.stem == stem))
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.steps, cfg.scope, cfg.prune_fraction, cfg.rewind) == \
        ("adam", lr, 60, steps, "layer", 0.2, "init")
    convs = [k for k in cfg.layer_fractions if k.startswith("conv")]
    assert len(convs) == int(stem[4]) and all(cfg.layer_fractions[k] == conv for k in convs)
    assert cfg.layer_fractions["fc3.weight"] == 0.1 and "fc1.weight" not in cfg.layer_fractions


def test_experiments_readme_gives_a_command_for_every_paper_config():
    readme = (EXPERIMENTS[0].parent / "README.md").read_text()
    for path in CIFAR + [p for p in EXPERIMENTS if p.stem == "lenet300_mnist"]:
        assert f"--config experiments/{path.name}" in readme, path.name
