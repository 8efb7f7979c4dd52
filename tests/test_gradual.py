"""Gradual magnitude pruning: the cubic schedule exactly, exact counts at every pruning step, the final density,
pruned weights that stay zero, and the IMP-format results and comparison."""
import pytest
import torch

import lottery as lt
from lottery.cli import main
from lottery.data import load_dataset
from lottery.errors import ConfigError
from lottery.drivers.gradual import CubicSchedule, compare_table, run_gradual, train_gradual
from lottery.models import build_model
from lottery.pruning import kept_counts
from lottery.reporting.tables import format_table
from tests.engine_helpers import tiny


def test_cubic_schedule_values():
    s = CubicSchedule(final_density=0.1, begin_step=10, end_step=50, every=10, initial_density=0.8)
    assert s.steps() == [10, 20, 30, 40, 50]
    for t in s.steps():
        expected = 0.9 + (0.2 - 0.9) * (1 - (t - 10) / 40) ** 3
        assert s.sparsity(t) == pytest.approx(expected, abs=1e-15)
    assert s.sparsity(10) == pytest.approx(0.2) and s.sparsity(50) == pytest.approx(0.9)
    assert s.sparsity(0) == pytest.approx(0.2) and s.sparsity(999) == pytest.approx(0.9)  # held outside [t0, t1]


def test_schedule_rejects_bad_timing():
    with pytest.raises(ConfigError, match="multiple"):
        CubicSchedule(0.1, 0, 25, every=10)
    with pytest.raises(ConfigError, match="final_density"):
        CubicSchedule(1.5, 0, 20, every=10)
    d = CubicSchedule.for_budget(0.1, 2000)
    assert (d.begin_step, d.end_step, d.every) == (200, 1200, 100)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_densities_follow_the_schedule_exactly_at_every_pruning_step(tmp_path, scope):
    cfg = tiny(tmp_path, scope=scope, steps=80)
    data = load_dataset("synthetic", n_train=256, n_test=64)
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[32, 16])
    schedule = CubicSchedule(final_density=0.05, begin_step=10, end_step=60, every=10)
    result, mask, history = train_gradual(model, data, cfg, schedule, seed=0)
    full = lt.Mask.ones_like(model)
    assert [step for step, _ in history] == [20, 30, 40, 50, 60]  # step 10 has sparsity 0: nothing to prune
    for step, density in history:
        expected = sum(kept_counts(full, schedule.sparsity(step), scope).values())
        assert density == expected / full.num_total
    if scope == "layer":
        assert mask.layer_kept() == {k: v for (k,), v in kept_counts(full, 0.95, "layer").items()}
    assert mask.num_kept == sum(kept_counts(full, 0.95, scope).values())
    params = dict(model.named_parameters())
    assert all(not params[k][~m].any() for k, m in mask.items())  # pruned weights (and their Adam moments) stay 0
    assert result.status == "ok" and result.early_stop_step >= 60 and result.steps == 80
    assert 0 <= result.early_stop_test_accuracy <= 1  # the early-stop weights' own test accuracy


def test_run_gradual_reports_like_imp_and_compares(tmp_path, capsys):
    cfg = tiny(tmp_path, levels=2)
    results = run_gradual(cfg, [0.3], every=10)
    assert [e["level"] for e in results["levels"]] == [0, 1]
    assert results["levels"][1]["density"] == pytest.approx(0.3, abs=1e-3)
    assert "weights %" in format_table(results)
    again = run_gradual(cfg, [0.3], every=10)  # resumed: nothing retrains
    assert again["levels"] == results["levels"]
    imp = lt.run_imp(cfg)
    table = compare_table(imp, results)
    assert "IMP ticket" in table and "30.00" in table

    argv = ["gradual", "--final-densities", "0.4", "--prune-every", "10", "--with-imp", "--dataset", "synthetic",
            "--model-options", "hidden=[16]", "--steps", "40", "--eval-every", "10", "--batch-size", "32",
            "--levels", "1", "--controls", "none", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "c")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "IMP ticket vs gradual" in out and "39.99" in out
