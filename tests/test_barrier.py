"""The error barrier: zero between identical networks, the endpoints' errors bit for bit, recorded per level by
IMP (--barrier-points), drawn in the run's plots, shared with the stability study, and a stopping signal."""
from __future__ import annotations

import pytest
import torch

import lottery as lt
from lottery.barrier import barrier_height, error_barrier
from lottery.errors import ConfigError
from lottery.pruning.level_plan import plan_level
from lottery.reporting.plots.run import RUN_FILES, run_plots
from tests.engine_helpers import tiny
from tests.test_adaptive import entry, settings


def test_two_identical_networks_have_no_barrier():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    own = {k: v.clone() for k, v in net.state_dict().items()}
    result = error_barrier(net, own, own, x, y, points=5)
    assert result["barrier"] == 0.0 and len(set(result["errors"])) == 1
    assert result["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(torch.equal(net.state_dict()[k], own[k]) for k in own)  # the model's weights are put back


def test_barrier_height_is_the_peak_above_the_endpoints_mean():
    assert barrier_height([0.1, 0.3, 0.2]) == pytest.approx(0.15)
    assert barrier_height([0.2, 0.1, 0.2]) == pytest.approx(0.0)  # the endpoints are the peak: no barrier


def test_imp_records_the_barrier_to_the_parent_level_and_draws_it(tmp_path):
    cfg = tiny(tmp_path, levels=2, controls=(), barrier_points=3)
    results = lt.run_imp(cfg)
    for e, parent in zip(results["levels"][1:], results["levels"]):
        b = e["barrier"]
        assert b["alphas"] == [0.0, 0.5, 1.0] and e["parent"] == parent["level"]
        # the endpoints are the two levels' final weights on the validation split, bit for bit (torch.lerp)
        assert b["errors"][0] == pytest.approx(1 - parent["curve"][-1][2], abs=1e-12)
        assert b["errors"][-1] == pytest.approx(1 - e["curve"][-1][2], abs=1e-12)
        assert b["barrier"] == barrier_height(b["errors"])
    assert "barrier" not in results["levels"][0]
    written = run_plots(tmp_path / "runs" / cfg.run_name(), results)
    assert RUN_FILES["barrier"] in [p.name for p in written]


def test_a_barrier_above_the_threshold_ends_pruning():
    s = settings(barrier_stop=0.02, barrier_points=5)
    entries = [entry(0, 1.0, 0.9), entry(1, 0.8, 0.9, barrier=0.01)]
    assert plan_level(s, entries, 2).parent == 1
    entries[1] = entry(1, 0.8, 0.9, barrier=0.05)
    assert "barrier 0.0500 exceeds 0.02" in plan_level(s, entries, 2)


@pytest.mark.parametrize("over, needle", [({"barrier_stop": 0.02}, "add --barrier-points"),
                                          ({"barrier_points": 1}, "barrier_points must be 0"),
                                          ({"barrier_points": 5, "barrier_stop": 1.5}, "barrier_stop must be")])
def test_bad_barrier_settings(tmp_path, over, needle):
    with pytest.raises(ConfigError, match=needle):
        tiny(tmp_path, **over)
