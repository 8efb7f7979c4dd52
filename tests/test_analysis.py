"""lottery.analysis: IoU matrices on hand-made masks and on a run, the sparsity profile, histogram counts."""
import numpy as np
import pytest
import torch

from lottery.analysis.histograms import kept_pruned_histograms, plot_weight_histograms, weight_histograms
from lottery.analysis.overlap import (
    iou_matrix, overlap_across_levels, overlap_across_runs, overlap_across_schemes, plot_overlap, random_iou,
)
from lottery.analysis.profile import plot_profile, sparsity_profile
from lottery.errors import LotteryError
from lottery.drivers.imp import run_imp
from lottery.masks import Mask
from tests.engine_helpers import tiny


def _mask(*bits, **layers):
    tensors = {"a.weight": torch.tensor(bits, dtype=torch.bool)} if bits else {}
    tensors.update({f"{k}.weight": torch.tensor(v, dtype=torch.bool) for k, v in layers.items()})
    return Mask(tensors)


def test_iou_matrix_hand_made():
    a = _mask(1, 1, 1, 1, 0, 0)
    b = _mask(1, 1, 0, 0, 0, 0)  # subset of a: 2 / 4
    c = _mask(0, 0, 0, 0, 1, 1)  # disjoint from both
    m = iou_matrix({"a": a, "b": b, "c": c})
    assert np.allclose(m, [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])
    assert np.allclose(m, m.T) and iou_matrix([a]).tolist() == [[1.0]]
    assert random_iou(0.5, 0.5) == pytest.approx(1 / 3) and random_iou(1.0, 0.2) == pytest.approx(0.2)


def test_iou_matrix_per_layer():
    a = _mask(x=[1, 1, 0, 0], y=[1, 0])
    b = _mask(x=[1, 0, 1, 0], y=[1, 0])
    assert iou_matrix([a, b], layer="x.weight")[0, 1] == pytest.approx(1 / 3)
    assert iou_matrix([a, b], layer="y.weight")[0, 1] == 1.0
    assert iou_matrix([a, b])[0, 1] == pytest.approx(2 / 4)
    with pytest.raises(LotteryError, match="z.weight"):
        iou_matrix([a, b], layer="z.weight")


def test_profile_table():
    results = {"levels": [
        {"level": 0, "density": 1.0, "layer_density": {"fc1.weight": 1.0, "fc2.weight": 1.0}},
        {"level": 1, "density": 0.8, "layer_density": {"fc1.weight": 0.7, "fc2.weight": 0.95}},
        {"level": 2, "density": 0.64, "layer_density": {"fc1.weight": 0.5, "fc2.weight": 0.9}},
    ]}
    p = sparsity_profile(results)
    assert p.levels == [0, 1, 2] and p.layers == ["fc1.weight", "fc2.weight"]
    assert np.allclose(p.values, [[0, 0], [0.3, 0.05], [0.5, 0.1]])
    assert np.allclose(sparsity_profile(results, measure="density").values, 1 - p.values)
    text = p.format()
    assert "fc1" in text and "50.00" in text and len(text.splitlines()) == 6
    assert p.to_dict()["values"][2] == pytest.approx([0.5, 0.1])
    with pytest.raises(LotteryError):
        sparsity_profile(results, measure="nope")


def test_histogram_counts():
    w = {"a.weight": torch.tensor([0.05, -0.15, 0.25, -0.35, 0.95]), "a.bias": torch.tensor([100.0])}
    m = _mask(0, 0, 1, 1, 1)
    h = kept_pruned_histograms(w, m, bins=10, value_range=(0.0, 1.0))
    assert h["kept"].sum() == 3 and h["pruned"].sum() == 2  # biases never counted
    assert h["pruned"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert h["kept"].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 1]
    assert len(h["edges"]) == 11
    auto = kept_pruned_histograms(w, m, bins=4)
    assert auto["edges"][-1] == pytest.approx(0.95) and auto["kept"].sum() + auto["pruned"].sum() == 5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analysis")
    cfgs = [tiny(tmp, model_options={"hidden": [8]}, steps=20, eval_every=10, levels=2, controls=(), seed=s)
            for s in (0, 1)]
    for cfg in cfgs:
        run_imp(cfg)
    return [tmp / "runs" / cfg.run_name() for cfg in cfgs]


def test_overlap_of_a_run_and_across_seeds(runs, tmp_path):
    levels = overlap_across_levels(runs[0])
    assert levels.labels == ["L1", "L2"]
    assert levels.matrix[0, 1] == pytest.approx(levels.densities[1] / levels.densities[0], abs=1e-6)  # nested
    seeds = overlap_across_runs({"seed 0": runs[0], "seed 1": runs[1]}, level=2)
    assert seeds.matrix.shape == (2, 2) and 0 < seeds.matrix[0, 1] < 1
    assert seeds.random_baseline()[0, 1] == pytest.approx(random_iou(*seeds.densities))
    assert "seed 1" in seeds.format()
    summary = {"seeds": [0], "schemes": [{"label": "x", "runs": [{"seed": 0, "run_dir": str(runs[0])}]},
                                         {"label": "y", "runs": [{"seed": 0, "run_dir": str(runs[1])}]}]}
    assert np.allclose(overlap_across_schemes(summary, level=2).matrix, seeds.matrix)
    plot_overlap(seeds).savefig(tmp_path / "o.png")
    assert (tmp_path / "o.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.render
def test_run_profile_and_histograms(runs, tmp_path):
    p = sparsity_profile(runs[0])
    assert p.levels == [0, 1, 2] and p.layers == ["fc1.weight", "fc2.weight"] and p.values[0].tolist() == [0, 0]
    plot_profile(p).savefig(tmp_path / "p.png")
    h = weight_histograms(runs[0], level=2, bins=20)
    mask = Mask.load(runs[0] / "level_02" / "mask.npz")
    assert h["init"]["kept"].sum() == mask.num_kept
    assert h["final"]["pruned"].sum() == mask.num_total - mask.num_kept
    # level 1 prunes the smallest final dense weights: every kept |w| is at least every pruned |w|
    h1 = weight_histograms(runs[0], level=1, bins=50)["final"]
    assert np.nonzero(h1["kept"])[0].min() >= np.nonzero(h1["pruned"])[0].max()
    plot_weight_histograms(h).savefig(tmp_path / "h.png")
    for name in ("p.png", "h.png"):
        assert (tmp_path / name).stat().st_size > 2000
    with pytest.raises(LotteryError, match="level 9"):
        weight_histograms(runs[0], level=9)
