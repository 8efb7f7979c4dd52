"""Every figure is produced here and is a valid, non-empty PNG with visible (non-blank) pixels."""
import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from lottery.drivers.compare_inits import InitVariant, summarize
from lottery.drivers.imp import run_imp
from lottery.reporting.plots import COMPARE_FILES, RUN_FILES, compare_plots, input_shape_of, run_plots, seed_plots
from lottery.reporting.plots.run import first_layer_pixels
from lottery.masks import Mask
from lottery.reporting.tables import write_plots
from tests.engine_helpers import tiny

pytestmark = pytest.mark.render  # these tests look at the pixels


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    rgb = img[..., :3]
    assert (rgb < 0.9).mean() > 0.005, f"{path.name} is blank"  # something besides the white background
    assert rgb.reshape(-1, 3).std(axis=0).max() > 0.05


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run on 1x12x12 synthetic images with both controls (two levels)."""
    tmp = tmp_path_factory.mktemp("plots")
    cfg = tiny(tmp, model_options={"hidden": [8]}, steps=20, eval_every=10, levels=2, barrier_points=3)
    results = run_imp(cfg)
    return tmp / "runs" / cfg.run_name(), results


def test_run_plots_every_file(run):
    path, results = run
    written = write_plots(path, results)  # the entry point `lottery run` / `report` call
    assert sorted(p.name for p in written) == sorted(RUN_FILES.values())
    for p in written:
        assert_png(p)


def test_seed_plots_bands(run, tmp_path):
    _, results = run
    other = json.loads(json.dumps(results))
    for e in other["levels"]:  # a second "seed" a few points off, so the std band is drawn
        e["test_accuracy"] -= 0.05
    for p in seed_plots(tmp_path, [results, other]):
        assert_png(p)


def test_mask_image_only_for_image_inputs(run, tmp_path):
    path, results = run
    assert input_shape_of(results["config"]) == (1, 12, 12)
    assert input_shape_of({"dataset": "mnist1d"}) is None
    assert input_shape_of({"dataset": "fashion_mnist"}) == (1, 28, 28)
    flat = json.loads(json.dumps(results))
    flat["config"]["dataset"] = "mnist1d"
    names = [p.name for p in run_plots(path, flat, input_shape=(40,))]
    assert "mask_pixels.png" not in names
    mask = Mask({"fc1.weight": torch.ones(3, 2 * 4 * 5, dtype=torch.bool), "fc2.weight": torch.ones(2, 3, dtype=torch.bool)})
    name, img = first_layer_pixels(mask, (2, 4, 5))
    assert name == "fc1.weight" and img.shape == (4, 5) and np.allclose(img, 1.0)


def test_compare_plots_every_file(run, tmp_path):
    _, results = run
    diverged = {"status": "diverged", "levels": [{"level": 0, "density": 1.0, "test_accuracy": None,
                                                  "early_stop_step": 0, "status": "diverged", "controls": {}}]}
    shifted = json.loads(json.dumps(results))
    for e in shifted["levels"]:
        e["test_accuracy"] -= 0.03
    runs = {("a", 0): {"results": results, "run_dir": "x"}, ("a", 1): {"results": shifted, "run_dir": "y"},
            ("b", 0): {"results": diverged, "run_dir": "z"}, ("b", 1): {"results": diverged, "run_dir": "w"}}
    summary = summarize([InitVariant("a", "xavier_normal"), InitVariant("b", "normal")], [0, 1], runs, chance=0.25)
    written = compare_plots(tmp_path, summary)
    assert sorted(p.name for p in written) == sorted(COMPARE_FILES.values())
    for p in written:
        assert_png(p)


def test_run_plots_of_a_diverged_run(tmp_path):
    results = {"config": {"name": "d", "dataset": "synthetic"}, "status": "diverged",
               "levels": [{"level": 0, "density": 1.0, "layer_density": {"fc1.weight": 1.0}, "status": "diverged",
                           "test_accuracy": None, "early_stop_step": 0, "controls": {},
                           "curve": [[0, 1.4, 0.25], [10, float("nan"), 0.25]]}]}
    written = run_plots(tmp_path, results)  # no saved masks here: the mask image is skipped
    assert [p.name for p in written] == [RUN_FILES[k] for k in ("accuracy", "early_stop", "layer_density",
                                                               "training_curves")]
    for p in written:
        assert_png(p)
