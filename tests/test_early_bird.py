"""Early-bird levels: the mask distance, the stopping rule, a search run that stops and the full retraining after
it, its honest entries and costs, find_tickets' stop_early, bad input, and unchanged hashes."""
from __future__ import annotations

import pytest
import torch

import lottery as lt
from lottery import stats
from lottery.errors import ConfigError
from lottery.pruning.early_bird import EarlyBird, mask_distance
from tests.engine_helpers import tiny
from tests.test_cli import _one_line_error

TINY = ["--dataset", "synthetic", "--model-options", "hidden=[8]", "--steps", "5", "--eval-every", "5",
        "--batch-size", "32", "--levels", "1", "--controls", "none", "--no-progress", "--device", "cpu"]


def _mask(*layers) -> lt.Mask:
    return lt.Mask({f"l{i}.weight": torch.tensor(bits, dtype=torch.bool) for i, bits in enumerate(layers)})


def test_mask_distance_on_constructed_masks():
    a = _mask([1, 1, 0, 0], [1, 0])
    assert mask_distance(a, a) == 0.0
    assert mask_distance(a, _mask([0, 0, 1, 1], [0, 1])) == 1.0  # the complement
    assert mask_distance(a, _mask([1, 0, 0, 0], [1, 1])) == pytest.approx(2 / 6)  # over all weights, not per layer
    assert mask_distance(a, _mask([1, 0, 0, 0], [1, 1])) == mask_distance(_mask([1, 0, 0, 0], [1, 1]), a)
    # within a level's live weights: the pruned ones agree trivially and do not count
    live = _mask([1, 1, 1, 0], [1, 0])
    assert mask_distance(_mask([1, 1, 0, 0], [1, 0]), _mask([1, 0, 1, 0], [1, 0]), within=live) == 0.5
    with pytest.raises(ValueError, match="different weights"):
        mask_distance(a, _mask([1, 1, 0, 0]))


def test_stopping_rule_needs_window_checks_in_a_row_below_epsilon():
    a, b = _mask([1, 1, 0, 0, 0, 0, 0, 0, 0, 0]), _mask([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])  # distance 0.2
    rule = EarlyBird(lambda model: None, epsilon=0.1, window=3)
    # a b a: two large distances; then a a a: three in a row below 0.1 -> stops at the third
    seen = [rule.observe(step, m) for step, m in zip(range(0, 60, 10), [a, b, a, a, a, a])]
    assert seen == [False] * 5 + [True]
    assert rule.stop_step == 50
    assert [d for _, d in rule.distances[:2]] == [pytest.approx(0.2), pytest.approx(0.2)]
    assert rule.record()["distances"][2] == [30, 0.0]


def _early_bird_run(tmp_path, **over):
    # lr 1e-9: the weights barely move, so the candidate mask is the same at every check and the search stops as
    # soon as the window allows: at check 1 + window (step 20 x 3 = 60 of 200)
    cfg = tiny(tmp_path, lr=1e-9, steps=200, eval_every=20, levels=2, controls=("random_mask",), early_bird=True,
               early_bird_window=3, **over)
    return cfg, lt.run_imp(cfg)


def test_a_search_stops_once_its_mask_is_stable_and_the_ticket_then_trains_in_full(tmp_path):
    cfg, results = _early_bird_run(tmp_path)
    levels = results["levels"]
    assert [e["level"] for e in levels] == [0, 1, 2, 3]
    dense, searches, ticket = levels[0], levels[1:3], levels[3]
    assert dense["steps"] == 200 and "early_bird" not in dense  # the dense baseline is trained in full
    for e in searches:
        assert e["search"] and e["early_bird"]["stop_step"] == 60 and e["steps"] == 60
        assert [d for _, d in e["early_bird"]["distances"]] == [0.0, 0.0, 0.0]
        # a search is no ticket: no test accuracy is reported for it (its stopped weights' is kept aside)
        assert e["test_accuracy"] is None and e["early_stop_test_accuracy"] is None
        assert e["early_bird"]["search_test"]["test_accuracy"] is not None
        assert e["controls"] == {}
    # the reported ticket: the deepest searched mask, trained again from the rewind state for the whole budget
    assert ticket["prune_fraction"] == 0 and ticket["parent"] == 2 and ticket["steps"] == 200
    assert ticket["num_kept"] == searches[-1]["num_kept"] and ticket["test_accuracy"] is not None
    assert list(ticket["controls"]) == ["random_mask"]
    assert lt.Mask.load(tmp_path / "runs" / cfg.run_name() / "level_03" / "mask.npz") == \
        lt.Mask.load(tmp_path / "runs" / cfg.run_name() / "level_02" / "mask.npz")
    assert results["plan_end"] == "the deepest searched mask is trained fully"
    # costs are counted with the steps trained: 1 + 2 x 0.3 + 1
    assert stats.run_costs(results)[3]["ticket"] == pytest.approx(2.6)
    # search levels are not tickets: the verdict table skips them and compares the trained ticket, its cost included
    rows = stats.compare_levels({0: results})["levels"]
    assert [r["level"] for r in rows] == [0, 3] and rows[1]["cost"] == pytest.approx(2.6)


def test_without_a_stable_mask_the_search_trains_to_the_end(tmp_path):
    cfg = tiny(tmp_path, steps=60, eval_every=20, levels=1, controls=(), early_bird=True,
               early_bird_window=5)  # four checks: never five distances
    results = lt.run_imp(cfg)
    search = results["levels"][1]
    assert search["early_bird"]["stop_step"] is None and search["steps"] == 60
    assert len(search["early_bird"]["distances"]) == 3


def test_find_tickets_stops_when_the_loop_asks(tmp_path):
    torch.manual_seed(0)
    stops = []

    def train_fn(model, mask, run):
        for step in range(0, 101, 10):
            if run.stop_early(model, step):
                stops.append((run.level, step))
                return {"test_accuracy": 0.5, "steps": step}
        return {"test_accuracy": 0.5, "steps": 100}

    results = lt.find_tickets(torch.nn.Linear(10, 10), train_fn, out=str(tmp_path), levels=2, controls="none",
                              progress=False, early_bird=True, early_bird_window=2)
    assert stops == [(1, 20), (2, 20)]  # nothing changes the weights: three checks are two zero distances
    assert [e["steps"] for e in results["levels"]] == [100, 20, 20, 100]
    assert results["levels"][1]["test_accuracy"] is None and results["levels"][3]["test_accuracy"] == 0.5


@pytest.mark.parametrize("flags, needle", [
    (["--early-bird", "--early-bird-epsilon", "1.5"], "early_bird_epsilon must be in (0, 1)"),
    (["--early-bird", "--early-bird-epsilon", "0"], "early_bird_epsilon must be in (0, 1)"),
    (["--early-bird", "--early-bird-window", "0"], "early_bird_window must be an integer >= 1"),
    (["--early-bird-epsilon", "0.2"], "add --early-bird"),
])
def test_bad_early_bird_settings_are_one_line_and_exit_2(tmp_path, capsys, flags, needle):
    _one_line_error(capsys, ["run", *TINY, "--out", str(tmp_path), *flags], needle)


def test_find_tickets_refuses_bad_early_bird_settings(tmp_path):
    with pytest.raises(ConfigError, match="early_bird_window"):
        lt.find_tickets(torch.nn.Linear(4, 4), lambda m, k, r: {"test_accuracy": 0.5}, out=str(tmp_path),
                        early_bird=True, early_bird_window=0, progress=False)


def test_hashes_change_only_when_an_option_is_set():
    base = lt.Config()
    assert base.hash() == "d7d15db9c2"  # tests/test_imp.py pins it too
    assert base.replace(lr=1e-3).hash() == "bbc4a2c616"
    same = base.replace(early_bird=False, early_bird_epsilon=0.1, early_bird_window=5, prune_schedule="fixed",
                        target_density=None, budget=None, barrier_points=0, barrier_stop=None)
    assert same.hash() == base.hash()
    changed = [base.replace(early_bird=True), base.replace(prune_schedule="adaptive"),
               base.replace(target_density=0.1), base.replace(budget=3.0), base.replace(barrier_points=5)]
    assert len({c.hash() for c in changed} | {base.hash()}) == 6


@pytest.mark.parametrize("command", ["gradual", "prune-at-init"])
def test_early_bird_on_a_driver_that_cannot_stop_early_is_refused(tmp_path, capsys, command):
    _one_line_error(capsys, [command, *TINY, "--out", str(tmp_path), "--early-bird"], "nothing can stop early")
