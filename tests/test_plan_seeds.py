"""Adaptive steps judged over the seeds in the run (lottery/drivers/plan_seeds.py): a level one seed alone would
call matching is backed off from when the verdict over the seeds says below; every seed trains the same plan and
records the rule and the seeds; a killed multi-seed run resumes bit for bit; runs without it keep their hashes; a
target density is an upper bound even with per-layer fractions."""
from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

import lottery as lt
from lottery.drivers.plan_seeds import run_together, together
from lottery.drivers.seeds import run_seeds
from lottery.imp_engine import ImpSettings
from lottery.pruning.level_plan import PlanEnd, _to_target, judge_level, plan_level
from tests.engine_helpers import strip_times, tiny
from tests.fault_helpers import lottery_process
from tests.test_adaptive import entry
from tests.test_cli import _one_line_error


def adaptive(seed=0, **over) -> ImpSettings:
    return ImpSettings(**{"levels": 10, "prune_fraction": 0.2, "prune_schedule": "adaptive", "seed": seed, **over})


def seed_runs(level1: dict, dense: float = 0.90) -> dict:
    """seed -> entries: dense at ``dense``, level 1 (80 %) and level 2 (51 %, two levels' worth) at the given
    accuracies; level 2 is the one judged."""
    return {seed: [entry(0, 1.0, dense), entry(1, 0.8, dense), entry(2, 0.512, acc, 0.36)]
            for seed, acc in level1.items()}


def test_one_seed_alone_would_match_but_the_verdict_over_the_seeds_backs_off():
    # seed 0 is 0.9 points below dense (the one-seed rule: matches); the other four are 3 points below
    runs = seed_runs({0: 0.891, 1: 0.870, 2: 0.871, 3: 0.869, 4: 0.870})
    alone = plan_level(adaptive(0), runs[0], 3)
    assert alone.judged["matched"] and alone.judged["rule"].startswith("one seed: ticket − dense >= −1 points")
    assert alone.judged["seeds"] == [0] and alone.parent == 2  # alone, it would go on from level 2
    plans = [plan_level(adaptive(s), runs[s], 3, {o: runs[o] for o in runs if o != s}) for s in runs]
    joint = plans[0]
    assert not joint.judged["matched"] and joint.judged["rule"].startswith("verdict over 5 seeds: below")
    assert joint.judged["seeds"] == [0, 1, 2, 3, 4] and joint.judged["difference"] == pytest.approx(-0.0258)
    assert joint.parent == 1  # backs off: from the deepest matching level, halfway to the one that fell short
    assert 0.8 * (1 - joint.fraction) == pytest.approx((0.8 * 0.512) ** 0.5)
    assert all(p == joint for p in plans)  # every seed plans the same level


def test_judge_level_counts_only_the_seeds_that_trained_the_level_and_a_diverged_one_fails_it():
    runs = {s: {e["level"]: e for e in es} for s, es in seed_runs({0: 0.90, 1: 0.90, 2: 0.90}).items()}
    del runs[2][2]  # seed 2 ended before level 2
    assert judge_level(runs, 2)["seeds"] == [0, 1]
    runs[1][2] = {**runs[1][2], "status": "diverged"}
    assert judge_level(runs, 2) == {"level": 2, "seeds": [0, 1], "matched": False, "rule": "diverged",
                                    "difference": None}


def test_budget_and_barrier_read_every_seed():
    runs = seed_runs({0: 0.9, 1: 0.9})
    for s, es in runs.items():
        es[2]["barrier"] = {"barrier": 0.01 if s == 0 else 0.05}
    s0 = adaptive(0, barrier_points=3, barrier_stop=0.02)
    assert plan_level(s0, runs[0], 3) != plan_level(s0, runs[0], 3, {1: runs[1]})  # alone: 0.01 < 0.02
    end = plan_level(s0, runs[0], 3, {1: runs[1]})
    assert isinstance(end, PlanEnd) and end == "level 2's barrier 0.0300 (mean of 2 seeds) exceeds 0.02"
    assert end.judged["seeds"] == [0, 1]
    runs[1][2]["steps"] = 300  # seed 1 trained level 2 three times as long: it sets what is spent
    end = plan_level(adaptive(0, budget=3.5), runs[0], 3, {1: runs[1]})
    assert end.startswith("budget: 5.00 of 3.5 dense trainings spent (the most of any seed)")


def test_a_target_density_is_an_upper_bound_on_the_exact_counts():
    # two layers of 900 and 100 weights; the small one prunes at its own, smaller rate (10 % per 20 % level)
    sizes, base_f, small_f = {"a": 900, "b": 100}, 0.2, 0.1

    def density_after(parent, fraction):
        power = __import__("math").log1p(-fraction) / __import__("math").log1p(-base_f)
        kept_a = 900 - round(fraction * 900)
        keep_b = (1 - small_f) ** power
        return (kept_a + 100 - round((1 - keep_b) * 100)) / sum(sizes.values())

    parent = {"level": 0, "density": 1.0}
    plain = _to_target(0.1, parent)
    assert density_after(0, plain) > 0.1  # the step over all weights leaves the ticket above the target
    capped = _to_target(0.1, parent, density_after)
    assert density_after(0, capped) <= 0.1 and capped > plain


def test_runs_together_train_the_same_plan_and_record_the_rule(tmp_path):
    cfg = tiny(tmp_path, levels=3, controls=(), prune_schedule="adaptive")
    out = run_seeds(cfg, (0, 1), jobs=1, plots=False)
    runs = {s: json.loads((Path(d) / "results.json").read_text()) for s, d in out["run_dirs"].items()}
    plans = {s: [(e["level"], e.get("parent"), e.get("prune_fraction"), e["num_kept"]) for e in r["levels"]]
             for s, r in runs.items()}
    assert plans["0"] == plans["1"] and len(plans["0"]) >= 3
    for r in runs.values():
        assert r["config"]["plan_seeds"] == [0, 1] and r["status"] == "complete" and "waiting" not in r
        judged = [e["previous_level"] for e in r["levels"][2:]] + [r["last_level"]]
        assert all(j["seeds"] == [0, 1] and j["rule"].startswith("verdict over 2 seeds: ") for j in judged)
    assert Path(out["run_dirs"]["0"]).name == cfg.replace(seed=0, plan_seeds=(0, 1)).run_name()


def test_hashes_of_runs_without_the_joint_plan_are_unchanged(tmp_path):
    # the hashes of lottery 0.3.0 before plan_seeds existed (same settings, out aside)
    cfg = tiny(tmp_path)
    assert cfg.hash() == "5d28b1e76a"
    assert cfg.replace(prune_schedule="adaptive").hash() == "347d35ef4d"
    assert cfg.replace(prune_schedule="adaptive", seed=1, target_density=0.3).hash() == "bef7c6132d"
    assert cfg.replace(early_bird=True, budget=3.0).hash() == "1764624ec3"
    assert together(cfg, (0, 1, 2)) == cfg  # the fixed schedule over seeds: each seed's plain run
    assert together(cfg.replace(prune_schedule="adaptive"), (4,)).plan_seeds == ()  # one seed: the one-seed rule
    joint = together(cfg.replace(prune_schedule="adaptive"), (2, 0, 1))
    assert joint.plan_seeds == (0, 1, 2) and joint.hash() != cfg.replace(prune_schedule="adaptive").hash()


def test_run_together_refuses_to_loop_forever():
    stuck = {"status": "running", "levels": [{}], "waiting": "level 1 waits for seed 9 to finish level 0"}
    with pytest.raises(RuntimeError, match="stopped advancing"):
        run_together(lambda: {0: stuck})
    rounds = iter([{0: {**stuck, "levels": []}}, {0: {"status": "complete", "levels": [{}]}}])
    assert run_together(lambda: next(rounds)) == {0: {"status": "complete", "levels": [{}]}}


@pytest.mark.parametrize("flags, needle", [
    (["--plan-seeds", "0,1"], "plan_seeds judges adaptive steps over several seeds; add --prune-schedule adaptive"),
    (["--prune-schedule", "adaptive", "--plan-seeds", "1,2"], "plan_seeds must be two or more distinct seeds"),
    (["--prune-schedule", "adaptive", "--plan-seeds", "0,1"], "plan_seeds is set from the seeds run together"),
])
def test_bad_plan_seeds_are_one_line_and_exit_2(tmp_path, capsys, flags, needle):
    from tests.test_early_bird import TINY

    _one_line_error(capsys, ["run", *TINY, "--out", str(tmp_path), *flags], needle)


ARGS = ["--dataset", "synthetic", "--model", "mlp", "--model-options", "hidden=[16]", "--steps", "60",
        "--eval-every", "10", "--batch-size", "32", "--levels", "3", "--lr", "5e-3", "--controls", "none",
        "--early-bird", "--early-bird-window", "2", "--prune-schedule", "adaptive", "--seeds", "0,1", "--jobs", "1",
        "--device", "cpu", "--no-progress", "--name", "c"]


def _cli(out: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    return lottery_process(["run", *ARGS], out, crash)


@pytest.mark.parametrize("point", ["train:level2#5", pytest.param("write:results.json#4", marks=pytest.mark.slow)])
def test_a_killed_multi_seed_run_resumes_to_the_same_plan_bit_for_bit(tmp_path, point):
    assert _cli(tmp_path / "ref").returncode == 0
    killed = _cli(tmp_path / "killed", point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _cli(tmp_path / "killed").returncode == 0

    def load(out: Path, seed: int):
        run = next(d for d in out.glob("c-*")
                   if json.loads((d / "results.json").read_text())["config"]["seed"] == seed)
        results = strip_times(json.loads((run / "results.json").read_text()))
        for e in results["levels"]:
            e.pop("threads", None)
        return {k: v for k, v in results.items() if k != "config"}, run

    for seed in (0, 1):
        (ref, ref_dir), (got, got_dir) = load(tmp_path / "ref", seed), load(tmp_path / "killed", seed)
        assert got == ref and ref["status"] == "complete"
        assert any(e.get("search") for e in ref["levels"]) and ref["levels"][-1]["prune_fraction"] == 0
        assert all(e["previous_level"]["rule"].startswith("verdict over 2 seeds") for e in ref["levels"][2:])
        for level in range(len(ref["levels"])):
            assert lt.Mask.load(got_dir / f"level_{level:02d}" / "mask.npz") == \
                lt.Mask.load(ref_dir / f"level_{level:02d}" / "mask.npz")


def test_a_target_density_with_layer_fractions_ends_at_or_under_it(tmp_path):
    cfg = tiny(tmp_path, levels=8, controls=(), scope="layer", layer_fractions={"fc3.weight": 0.1},
               target_density=0.3)
    results = lt.run_imp(cfg)
    assert results["plan_end"] == "target density 0.3 reached"
    last = results["levels"][-1]
    assert 0.29 < last["density"] <= 0.3 and last["layer_density"]["fc3.weight"] > 0.3
