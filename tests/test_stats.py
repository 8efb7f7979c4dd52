"""The statistics behind every verdict (lottery/stats.py) and the cost of a run (lottery/cost.py), checked against
scipy and hand counts on fixed numbers, and the verdict read the same way by `lottery report` and `lt.verdicts`."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torch import nn

import lottery as lt
from lottery.cli import main
from lottery.cost import layer_macs, step_flops
from lottery.stats import (compare_levels, dense_still_learning, interval, paired_interval, run_costs,
                           seeds_to_decide, smallest_matching_density, still_learning_note, verdict)
from tests.engine_helpers import tiny


@pytest.mark.parametrize("values", [[0.61, 0.64, 0.66], [0.8, 0.81], [0.5, 0.52, 0.49, 0.55, 0.51, 0.53]])
def test_interval_is_students_t(values):
    r = interval(values)
    lo, hi = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert r["mean"] == pytest.approx(np.mean(values)) and r["n"] == len(values)
    assert r["lo"] == pytest.approx(lo) and r["hi"] == pytest.approx(hi)


def test_welch_interval_is_scipys_welch_test():
    from lottery.stats import welch_interval

    he, glorot = [0.852, 0.849, 0.855, 0.851], [0.714, 0.850, 0.836, 0.801, 0.83]
    r = welch_interval(he, glorot)
    res = sps.ttest_ind(he, glorot, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert r["lo"] == pytest.approx(ci.low) and r["hi"] == pytest.approx(ci.high)


def test_paired_interval_pairs_by_seed_and_skips_missing():
    ticket = {0: 0.70, 1: 0.74, 2: 0.71, 3: None}
    dense = {0: 0.69, 1: 0.72, 2: 0.71, 3: 0.70, 4: 0.7}
    r = paired_interval(ticket, dense)
    d = [0.01, 0.02, 0.0]
    lo, hi = sps.t.interval(0.95, 2, loc=np.mean(d), scale=sps.sem(d))
    assert r["seeds"] == [0, 1, 2] and r["lo"] == pytest.approx(lo) and r["hi"] == pytest.approx(hi)
    # pairing removes the between-seed spread that an unpaired interval would carry
    assert r["hi"] - r["lo"] < interval(ticket.values())["hi"] - interval(ticket.values())["lo"]


@pytest.mark.parametrize("diff, tol, expected", [
    ({"n": 3, "lo": 0.001, "hi": 0.03}, 0.01, "beats"),
    ({"n": 3, "lo": -0.0099, "hi": 0.03}, 0.01, "matches"),
    ({"n": 3, "lo": -0.03, "hi": -0.011}, 0.01, "below"),
    ({"n": 3, "lo": -0.03, "hi": -0.009}, 0.01, "inconclusive"),
    ({"n": 3, "lo": -0.03, "hi": -0.009}, 0.0, "below"),
    ({"n": 1, "lo": None, "hi": None, "mean": 0.05}, 0.01, "one seed"),
    ({"n": 0, "lo": None, "hi": None, "mean": None}, 0.01, "no data"),
])
def test_each_verdict(diff, tol, expected):
    assert verdict(diff, tol) == expected


def test_a_diverged_seed_is_no_match_and_stops_the_frontier():
    assert verdict({"n": 3, "lo": 0.01, "hi": 0.02}, diverged=1) == "diverged"
    rows = [{"level": 0, "density": 1.0, "verdict": "dense"}, {"level": 1, "density": 0.8, "verdict": "beats"},
            {"level": 2, "density": 0.64, "verdict": "diverged"}, {"level": 3, "density": 0.51, "verdict": "matches"}]
    assert smallest_matching_density(rows) == 0.8
    assert smallest_matching_density(rows[:1] + rows[2:]) is None


def test_seeds_to_decide_is_where_the_half_width_fits():
    diff = {"mean": -0.004, "std": 0.01, "n": 3}
    n = seeds_to_decide(diff, 0.01)
    half = lambda k: sps.t.ppf(0.975, k - 1) * 0.01 / math.sqrt(k)  # noqa: E731
    assert half(n) < 0.006 <= half(n - 1)
    assert seeds_to_decide({"mean": -0.01, "std": 0.01, "n": 3}, 0.01) is None  # on the boundary: never


def _results(seed, dense, tickets, controls=None, steps=1000, stop=None, diverged=()):
    """A results.json with ``tickets[L]`` at level L + 1 (early-stop accuracy = final accuracy)."""
    def arm(acc, level):
        ok = level not in diverged
        return {"status": "ok" if ok else "diverged", "test_accuracy": acc if ok else None,
                "early_stop_test_accuracy": acc if ok else None, "early_stop_step": stop or steps // 2,
                "steps": steps}
    levels = [{"level": 0, "density": 1.0, **arm(dense, 0), "controls": {}}]
    for i, acc in enumerate(tickets, start=1):
        cs = {name: arm(v[i - 1], -1) for name, v in (controls or {}).items()}
        levels.append({"level": i, "density": 0.8 ** i, **arm(acc, i), "controls": cs})
    return {"config": {"seed": seed}, "levels": levels}


def test_compare_levels_on_constructed_runs():
    runs = {s: _results(s, 0.80 + 0.01 * s, [0.81 + 0.01 * s, 0.795 + 0.01 * s, 0.70 + 0.01 * s],
                        controls={"reinit": [0.79 + 0.01 * s, 0.7, 0.6], "random_mask": [0.78, 0.7, 0.6]})
            for s in range(3)}
    c = compare_levels(runs, "early_stop", 0.01)
    assert [r["verdict"] for r in c["levels"]] == ["dense", "beats", "matches", "below"]
    assert c["smallest_matching_density"] == pytest.approx(0.64)
    level1 = c["levels"][1]
    assert level1["best_control"] == "reinit" and level1["ticket_minus_control"]["mean"] == pytest.approx(0.02)
    assert level1["cost"] == pytest.approx(2.0) and level1["cost_all"] == pytest.approx(4.0)
    assert c["dense_still_learning"] is None
    # the final-step metric reads test_accuracy; a missing early-stop accuracy is missing, not the final one
    for r in runs.values():
        for e in r["levels"]:
            e["early_stop_test_accuracy"] = None
    assert compare_levels(runs, "early_stop")["levels"][1]["verdict"] == "no data"
    assert compare_levels(runs, "final")["levels"][1]["verdict"] == "beats"


def test_one_seed_and_a_diverged_seed():
    one = compare_levels({0: _results(0, 0.8, [0.9])})
    assert one["levels"][1]["verdict"] == "one seed" and one["smallest_matching_density"] is None
    runs = {s: _results(s, 0.8, [0.81 + 0.001 * s, 0.82], diverged=(2,) if s == 1 else ()) for s in range(3)}
    c = compare_levels(runs)
    assert [r["verdict"] for r in c["levels"]] == ["dense", "beats", "diverged"]
    assert c["levels"][2]["diverged"] == 1 and c["smallest_matching_density"] == pytest.approx(0.8)


def test_dense_still_learning_is_flagged():
    runs = [_results(s, 0.8, [0.8], stop=stop) for s, stop in enumerate((950, 500, 400))]
    w = dense_still_learning(runs)
    assert w == {"early_stop_step": pytest.approx(616.67, abs=0.01), "steps": 1000, "seeds_late": 1, "seeds": 3}
    assert "--steps" in still_learning_note(w)
    assert dense_still_learning(runs[1:]) is None
    # the table carries it
    from lottery.reporting.tables import format_table

    assert "dense is still learning" in format_table(runs[0]) and "dense is still learning" not in \
        format_table(runs[1])


def test_run_costs_count_steps_in_dense_trainings():
    r = _results(0, 0.8, [0.8, 0.8], controls={"reinit": [0.8, 0.8]}, steps=1000)
    r["levels"][2]["steps"] = 500  # e.g. a late-rewound level trains T - K steps
    costs = run_costs(r)
    assert [costs[k]["ticket"] for k in (0, 1, 2)] == [1.0, 2.0, 2.5]
    assert costs[2]["all"] == pytest.approx(4.5)


def test_flops_of_lenet_300_100_and_a_convnet_by_hand():
    lenet = lt.build_model("lenet_300_100", (1, 28, 28), 10)
    macs = layer_macs(lenet, (1, 28, 28))
    assert macs == {"fc1.weight": 784 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}
    assert step_flops(macs, None, 60) == 6 * 266200 * 60
    mask = lt.Mask.ones_like(lenet)
    mask["fc1.weight"][:150] = False  # half of fc1
    assert step_flops(macs, mask, 1) == pytest.approx(6 * (784 * 150 + 300 * 100 + 100 * 10))

    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3),
                         nn.Flatten(), nn.Linear(16 * 14 * 14, 10))
    macs = layer_macs(conv, (3, 32, 32))
    assert macs == {"0.weight": 8 * 3 * 9 * 32 * 32, "3.weight": 16 * 8 * 9 * 14 * 14, "5.weight": 16 * 14 * 14 * 10}


def test_runs_record_their_flops(tmp_path):
    results = lt.run_imp(tiny(tmp_path, levels=1, controls=("random_mask",), steps=30))
    dense, level1 = results["levels"]
    assert dense["flops"] == pytest.approx(dense["dense_flops"]) and dense["steps"] == 30
    assert level1["flops"] == pytest.approx(0.8 * level1["dense_flops"], rel=0.02)  # global 20 %: ~80 % of MACs
    assert level1["controls"]["random_mask"]["flops"] > 0


@pytest.mark.render
def test_report_and_dataframe_give_the_same_verdicts(tmp_path, capsys):
    pytest.importorskip("pandas")
    dirs = []
    for seed in (0, 1, 2):
        lt.run_imp(tiny(tmp_path, levels=2, controls=("random_mask",), steps=30, seed=seed))
    dirs = sorted(str(p) for p in (tmp_path / "runs").iterdir())
    assert main(["report", *dirs, "--out", str(tmp_path / "agg")]) == 0
    out = capsys.readouterr().out
    printed = [line.split()[-1] if not line.rstrip().endswith(")") else line.split()[-3]
               for line in out.splitlines() if line[:5].strip().isdigit()]
    frame = lt.verdicts(lt.load_results(dirs))
    assert printed == frame["verdict"].tolist()
    import json

    stored = json.loads((tmp_path / "agg" / "verdicts.json").read_text())
    assert [r["verdict"] for r in stored["levels"]] == frame["verdict"].tolist()
    assert stored["levels"][1]["ticket_minus_dense"]["mean"] == pytest.approx(frame["ticket_minus_dense"][1])


def test_report_refuses_runs_of_different_experiments(tmp_path, capsys):
    lt.run_imp(tiny(tmp_path, levels=0, steps=20))
    lt.run_imp(tiny(tmp_path, levels=0, steps=20, lr=0.01, batch_size=16, seed=1))
    dirs = sorted(str(p) for p in (tmp_path / "runs").iterdir())
    assert main(["report", *dirs]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'lr'" in err and "'batch_size' (32 vs 16)" in err  # every setting


@pytest.mark.parametrize("argv, needle", [
    (["run", "--seeds", "0,0"], "--seeds"),
    (["run", "--seeds", "0,-1"], "--seeds"),
    (["run", "--tolerance", "1"], "--tolerance"),
    (["run", "--metric", "best"], "--metric"),
    (["run", "--steps", "auto", "--epochs", "2"], "steps auto"),
])
def test_bad_verdict_options_are_one_line(argv, needle, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not any(tmp_path.iterdir())


def test_steps_auto_needs_a_validation_split(tmp_path, monkeypatch):
    """The built-in data sets always carve one; a data set without one (a user's) is refused before training."""
    import dataclasses

    from lottery.drivers import imp
    from lottery.errors import ConfigError

    real = imp.load_data

    def no_val(cfg):
        data = real(cfg)
        return dataclasses.replace(data, val=(data.val[0][:0], data.val[1][:0]))

    monkeypatch.setattr(imp, "load_data", no_val)
    with pytest.raises(ConfigError, match="no validation split"):
        lt.run_imp(tiny(tmp_path, steps="auto"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("init.pt"))


def test_steps_auto_trains_dense_until_it_settles_and_reuses_its_budget(tmp_path):
    from lottery.train import AUTO_PATIENCE, AUTO_SETTLED

    results = lt.run_imp(tiny(tmp_path, steps="auto", levels=1, controls=("random_mask",), eval_every=10))
    dense, level1 = results["levels"]
    best, budget = dense["early_stop_step"], dense["steps"]
    assert budget - best >= AUTO_PATIENCE * 10 and best <= AUTO_SETTLED * budget
    assert level1["steps"] == budget and level1["controls"]["random_mask"]["steps"] == budget
    assert compare_levels({0: results})["dense_still_learning"] is None


def test_an_inconclusive_level_blocks_the_frontier_and_the_table_says_what_lies_below_it():
    # level 1: differences +3 / -3 / 0 points (inconclusive), level 2: +2.0 / +2.1 / +1.9 (beats)
    runs = {s: _results(s, 0.8, [0.8 + d1, 0.8 + d2]) for s, (d1, d2) in
            enumerate([(0.03, 0.020), (-0.03, 0.021), (0.0, 0.019)])}
    c = compare_levels(runs)
    assert [r["verdict"] for r in c["levels"][1:]] == ["inconclusive", "beats"]
    assert c["smallest_matching_density"] is None
    assert c["deepest_matching_density"] == pytest.approx(0.64) and c["not_matching_above"] == [1]
    from lottery.reporting.tables import format_verdicts

    assert "deepest level that beats or matches dense is at 64.00 %, but level 1 above it" in format_verdicts(c)


def test_one_listed_seed_is_a_single_run(tmp_path, capsys):
    argv = ["run", "--dataset", "synthetic", "--steps", "20", "--levels", "1", "--controls", "none",
            "--out", str(tmp_path), "--no-progress"]
    assert main([*argv, "--seeds", "4,"]) == 0
    out = capsys.readouterr().out
    assert "ONE seed (4)" in out and not list(tmp_path.glob("seeds-*"))
    (run,) = tmp_path.iterdir()
    import json

    assert str(run) in out and json.loads((run / "config.json").read_text())["config"]["seed"] == 4


def test_early_bird_searches_are_not_rows_but_count_in_the_cost():
    runs = {s: _results(s, 0.8, [0.8, 0.81 + 0.001 * s]) for s in range(3)}
    for r in runs.values():  # level 1 was a mask search of 300 steps; level 2 trains its mask fully
        r["levels"][1].update(search=True, test_accuracy=None, early_stop_test_accuracy=None, steps=300)
    c = compare_levels(runs)
    assert [r["level"] for r in c["levels"]] == [0, 2] and c["levels"][1]["verdict"] == "beats"
    assert c["levels"][1]["cost"] == pytest.approx(2.3) and c["smallest_matching_density"] == pytest.approx(0.64)


def test_gradual_and_prune_at_init_take_seeds_and_give_verdicts(tmp_path, capsys):
    base = ["--dataset", "synthetic", "--steps", "40", "--eval-every", "20", "--out", str(tmp_path), "--no-progress"]
    assert main(["gradual", *base, "--final-densities", "0.3", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "gradual pruning over seeds" in out and "2 seeds [0, 1]" in out
    assert main(["prune-at-init", *base, "--strategies", "random", "--densities", "0.2", "--ablations", "none",
                 "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "over seeds [0, 1]: subnetwork − dense" in out
    row = [line for line in out.splitlines() if line.startswith("random ")][-1]  # the table over seeds comes last
    assert row.split()[-1] in ("beats", "matches", "below", "inconclusive")
    assert len([p for p in tmp_path.iterdir() if (p / "config.json").exists()]) == 2  # one run directory per seed
