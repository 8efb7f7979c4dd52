"""Adaptive pruning steps and the other level plans: growing while levels match, backing off from the deepest
matching level when one is made to fail, the frontier, target density and budget, the one-seed rule, and every
new result field resuming after a kill bit for bit."""
from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

import lottery as lt
from lottery.imp_engine import ImpSettings
from lottery.pruning import level_plan
from lottery.pruning.level_plan import LevelPlan, grow, judge, matches, plan_level, scaled_layer_fractions
from tests.engine_helpers import strip_times, tiny
from tests.fault_helpers import lottery_process
from tests.test_cli import _one_line_error


def settings(**over) -> ImpSettings:
    return ImpSettings(**{"levels": 10, "prune_fraction": 0.2, **over})


def entry(level, density, acc, fraction=0.2, parent=None, search=False, steps=100, barrier=None) -> dict:
    e = {"level": level, "density": density, "status": "ok", "test_accuracy": acc, "early_stop_test_accuracy": acc,
         "steps": steps, "early_stop_step": steps, "curve": [[0, 2.0, 0.1], [steps, 0.5, acc]]}
    if level:
        e.update(prune_fraction=fraction, parent=level - 1 if parent is None else parent)
    if search:
        e.update(search=True, test_accuracy=None, early_stop_test_accuracy=None)
    if barrier is not None:
        e["barrier"] = {"barrier": barrier}
    return e


def test_the_fixed_plan_is_the_old_level_loop():
    s = settings(levels=2)
    entries = [entry(0, 1.0, 0.9), entry(1, 0.8, 0.5), entry(2, 0.64, 0.5)]
    assert plan_level(s, entries[:1], 1) == LevelPlan(0, 0.2)
    assert plan_level(s, entries[:2], 2) == LevelPlan(1, 0.2)  # a level below dense changes nothing
    assert plan_level(s, entries, 3) == "2 levels trained"


def test_adaptive_grows_while_levels_match():
    s = settings(prune_schedule="adaptive")
    entries = [entry(0, 1.0, 0.90), entry(1, 0.8, 0.905)]
    plan = plan_level(s, entries, 2)
    assert (plan.parent, plan.fraction) == (1, pytest.approx(grow(0.2))) and grow(0.2) == pytest.approx(0.36)
    assert plan.judged["matched"] and plan.judged["rule"].startswith("one seed: ticket − dense >= −1 points")


def test_adaptive_backs_off_from_the_deepest_matching_level_when_one_fails():
    s = settings(prune_schedule="adaptive")
    # level 3 (21 %) falls 5 points short: level 4 starts again from level 2 (51 %), halfway in log density
    entries = [entry(0, 1.0, 0.90), entry(1, 0.8, 0.90), entry(2, 0.512, 0.90, 0.36),
               entry(3, 0.21, 0.85, 0.59)]
    plan = plan_level(s, entries, 4)
    assert plan.parent == 2 and not plan.judged["matched"]
    assert 0.512 * (1 - plan.fraction) == pytest.approx((0.512 * 0.21) ** 0.5)
    # level 4 matches: level 5 goes halfway between it and the level that fell short, from level 4
    entries.append(entry(4, 0.328, 0.90, plan.fraction, parent=2))
    plan = plan_level(s, entries, 5)
    assert plan.parent == 4 and 0.328 * (1 - plan.fraction) == pytest.approx((0.328 * 0.21) ** 0.5)
    # once the step is under half of prune_fraction, the frontier is found
    entries.append(entry(5, 0.29, 0.85, plan.fraction, parent=4))
    assert plan_level(s, entries, 6).startswith("the frontier: between level 4 (matches)")


def test_target_density_caps_the_step_and_ends_pruning():
    s = settings(prune_schedule="adaptive", target_density=0.3)
    entries = [entry(0, 1.0, 0.9), entry(1, 0.8, 0.9), entry(2, 0.512, 0.9, 0.36)]
    plan = plan_level(s, entries, 3)
    assert 0.512 * (1 - plan.fraction) == pytest.approx(0.3)  # not grow(0.36): it would overshoot
    entries.append(entry(3, 0.3, 0.9, plan.fraction))
    assert plan_level(s, entries, 4) == "target density 0.3 reached"


def test_budget_keeps_room_for_the_full_training_of_the_searched_mask():
    s = settings(early_bird=True, budget=2.0)
    entries = [entry(0, 1.0, 0.9, steps=100), entry(1, 0.8, 0.9, search=True, steps=30),
               entry(2, 0.64, 0.9, search=True, steps=30)]
    # spent 1.6; one more search (0.3) and the final training (1) would exceed 2: retrain level 2's mask now
    assert plan_level(s, entries, 3) == LevelPlan(2, 0.0, False, None)
    entries.append(entry(3, 0.64, 0.9, 0.0, parent=2, steps=100))
    assert plan_level(s, entries, 4) == "the deepest searched mask is trained fully"


def test_early_bird_with_adaptive_retrains_the_deepest_matching_search():
    s = settings(early_bird=True, prune_schedule="adaptive", levels=3)
    entries = [entry(0, 1.0, 0.9), entry(1, 0.8, 0.9, search=True), entry(2, 0.512, 0.9, search=True),
               entry(3, 0.21, 0.9, search=True)]
    entries[3]["curve"][-1][2] = 0.5  # its validation accuracy at the stop step is far below dense's at that step
    plan = plan_level(s, entries, 4)
    assert plan == LevelPlan(2, 0.0, False, plan.judged) and not plan.judged["matched"]


def test_matches_uses_the_verdict_with_several_seeds_and_says_which_rule():
    assert matches({0: 0.90}, {0: 0.905}) == (True, "one seed: ticket − dense >= −1 points")
    assert judge(entry(1, 0.8, 0.90), entry(0, 1.0, 0.905), seed=4)["seeds"] == [4]  # a run alone: labelled
    assert matches({0: 0.88}, {0: 0.90})[0] is False
    ok, rule = matches({0: 0.901, 1: 0.899, 2: 0.900}, {0: 0.900, 1: 0.900, 2: 0.900})
    assert ok and rule == "verdict over 3 seeds: matches"


def test_layer_fractions_scale_with_the_step():
    assert scaled_layer_fractions({"fc3.weight": 0.1}, 0.2, 0.2) == {"fc3.weight": 0.1}
    two = scaled_layer_fractions({"fc3.weight": 0.1}, 0.2, grow(0.2))["fc3.weight"]
    assert two == pytest.approx(1 - 0.9 ** 2)  # two levels' worth in every layer


def test_a_level_made_to_fail_makes_the_run_back_off(tmp_path, monkeypatch):
    real = level_plan.judge_level

    def fail_level_2(runs, level):
        return {**real(runs, level), "matched": level != 2}

    monkeypatch.setattr(level_plan, "judge_level", fail_level_2)
    results = lt.run_imp(tiny(tmp_path, levels=4, controls=(), prune_schedule="adaptive"))
    levels = results["levels"]
    assert [e.get("parent") for e in levels] == [None, 0, 1, 1, 3]
    assert [round(e["prune_fraction"], 4) for e in levels[1:]] == [0.2, 0.36, round(1 - (levels[2]["density"] / 0.8)
                                                                                   ** 0.5, 4),
                                                                   round(1 - (levels[2]["density"]
                                                                              / levels[3]["density"]) ** 0.5, 4)]
    assert levels[3]["previous_level"] == {**levels[3]["previous_level"], "level": 2, "matched": False}
    assert levels[3]["density"] == pytest.approx((0.8 * levels[2]["density"]) ** 0.5, rel=0.02)


@pytest.mark.parametrize("flags, needle", [
    (["--prune-schedule", "bisect"], "prune_schedule must be one of fixed, adaptive"),
    (["--target-density", "1.5"], "target_density must be in (0, 1)"),
    (["--target-density", "0"], "target_density must be in (0, 1)"),
    (["--budget", "1"], "budget must be a number of dense trainings > 1"),
    (["--budget", "0.5"], "budget must be a number of dense trainings > 1"),
])
def test_bad_plan_settings_are_one_line_and_exit_2(tmp_path, capsys, flags, needle):
    from tests.test_early_bird import TINY

    _one_line_error(capsys, ["run", *TINY, "--out", str(tmp_path), *flags], needle)


ARGS = ["--dataset", "synthetic", "--model", "mlp", "--model-options", "hidden=[16]", "--steps", "60",
        "--eval-every", "10", "--batch-size", "32", "--levels", "3", "--lr", "5e-3", "--controls", "random_mask",
        "--early-bird", "--early-bird-window", "2", "--prune-schedule", "adaptive", "--barrier-points", "3",
        "--device", "cpu", "--no-progress", "--name", "c"]


def _cli(out: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    return lottery_process(["run", *ARGS], out, crash)


@pytest.mark.parametrize("point", ["train:level2#5", pytest.param("write:results.json#3", marks=pytest.mark.slow)])
def test_new_result_fields_resume_after_a_kill_bit_for_bit(tmp_path, point):
    assert _cli(tmp_path / "ref").returncode == 0
    killed = _cli(tmp_path / "killed", point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _cli(tmp_path / "killed").returncode == 0

    def load(out):
        run = next(out.glob("c-*"))
        return strip_times(json.loads((run / "results.json").read_text())), run

    (ref, ref_dir), (got, got_dir) = load(tmp_path / "ref"), load(tmp_path / "killed")
    for e in got["levels"]:
        e.pop("threads", None)
    for e in ref["levels"]:
        e.pop("threads", None)
    assert {k: v for k, v in got.items() if k != "config"} == {k: v for k, v in ref.items() if k != "config"}
    assert any(e.get("search") for e in ref["levels"]) and all("barrier" in e for e in ref["levels"][1:])
    for level in range(len(ref["levels"])):
        assert lt.Mask.load(got_dir / f"level_{level:02d}" / "mask.npz") == \
            lt.Mask.load(ref_dir / f"level_{level:02d}" / "mask.npz")
