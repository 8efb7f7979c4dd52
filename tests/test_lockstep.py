"""compare-inits with --pack: every trunk advances level by level in lockstep, the runs of all trunks fused.

The promise is the one of --pack on one run (lottery/fused.py, tests/test_fused.py): the same statuses, levels,
early-stop steps and masks as the trunks run unpacked, and test accuracies within one test sample (float rounding).
"""
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

import lottery.fused as fused
from lottery.drivers.compare_inits import compare_inits, parse_init_variant
from lottery.config import from_dict
from lottery.storage.rundir import RunDir
from lottery.storage.summary import load_summary
from tests.fault_helpers import lottery_process

N_TEST = 512  # the synthetic data set's test split: one sample is 1/512 of accuracy
SETTINGS = dict(dataset="synthetic", model_options={"hidden": [8]}, steps=20, eval_every=10, batch_size=32,
                levels=2, lr=5e-3, progress=False, device="cpu")
INITS, SEEDS = "normal,xavier_normal", 2
CLI = ["compare-inits", "--dataset", "synthetic", "--model-options", "hidden=[8]", "--steps", "20",
       "--eval-every", "10", "--batch-size", "32", "--levels", "2", "--lr", "0.005", "--no-progress",
       "--device", "cpu", "--inits", INITS, "--seeds", str(SEEDS), "--pack", "4"]


def _grid(out, **overrides):
    return compare_inits(from_dict({**SETTINGS, "out": str(out), **overrides}), INITS, SEEDS, plots=False, log=None)


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    return _grid(tmp_path_factory.mktemp("unpacked"))


def _assert_same(a_summary, b_summary):
    """Trunk by trunk: same statuses, levels, early-stop steps and masks; accuracies within one test sample."""
    for sa, sb in zip(a_summary["schemes"], b_summary["schemes"]):
        assert sa["status"] == sb["status"]
        for ra, rb in zip(sa["runs"], sb["runs"]):
            _assert_same_run(RunDir(ra["run_dir"]), RunDir(rb["run_dir"]))


def _assert_same_run(run_a, run_b):
    a, b = run_a.load_results(), run_b.load_results()
    assert a["status"] == b["status"] == "complete"
    assert [e["level"] for e in a["levels"]] == [e["level"] for e in b["levels"]] == [0, 1, 2]
    for ea, eb in zip(a["levels"], b["levels"]):
        assert (ea["num_kept"], ea["status"], ea["early_stop_step"]) == (eb["num_kept"], eb["status"],
                                                                         eb["early_stop_step"])
        assert abs(ea["test_accuracy"] - eb["test_accuracy"]) <= 1 / N_TEST + 1e-12
        assert set(ea["controls"]) == set(eb["controls"]) == ({"reinit", "random_mask"} if ea["level"] else set())
        for c, x in ea["controls"].items():
            y = eb["controls"][c]
            assert (x["status"], x["early_stop_step"]) == (y["status"], y["early_stop_step"])
            assert abs(x["test_accuracy"] - y["test_accuracy"]) <= 1 / N_TEST + 1e-12
        assert run_a.load_mask(ea["level"]).iou(run_b.load_mask(ea["level"])) == 1.0


def test_lockstep_equals_unpacked(unpacked, tmp_path, monkeypatch):
    passes = []
    real = fused.train_fused
    monkeypatch.setattr(fused, "train_fused",
                        lambda models, *a, **k: passes.append(len(models)) or real(models, *a, **k))
    packed = _grid(tmp_path, pack=4)
    # level 0: the 4 dense runs in one pass; levels 1 and 2: 4 trunks x (ticket + 2 controls) in passes of 4
    assert passes == [4] + [4, 4, 4] * 2
    _assert_same(unpacked, packed)


def test_a_diverged_trunk_drops_out(unpacked, tmp_path):
    """A trunk whose dense run diverges (weights of std 1e20 overflow float32) stops there; the other, fused with
    it at level 0, goes on to the results it has alone."""
    s = compare_inits(from_dict({**SETTINGS, "out": str(tmp_path), "pack": 4}), "normal:std=1e20,xavier_normal", 1,
                      plots=False, log=None)
    big, xavier = s["schemes"]
    assert big["status"] == "diverged" and big["diverged_runs"] == [{"seed": 0, "level": 0}]
    (alone,) = [r for sc in unpacked["schemes"] if sc["label"] == "xavier_normal" for r in sc["runs"] if r["seed"] == 0]
    _assert_same_run(RunDir(alone["run_dir"]), RunDir(xavier["runs"][0]["run_dir"]))


def _cli(out, crash=None):
    return lottery_process(CLI, out, crash, timeout=600, OMP_NUM_THREADS="1")


def _levels_done(out):
    """Per trunk: (status, [(level, controls recorded), ...])."""
    results = [json.loads(p.read_text()) for p in out.glob("*/results.json")]
    return [(r["status"], [(e["level"], sorted(e["controls"])) for e in r["levels"]]) for r in results]


@pytest.mark.slow
def test_killed_lockstep_resumes(unpacked, tmp_path):
    """Killed while recording level 1 (one trunk half recorded), then killed again once three trunks finished:
    each start resumes every trunk where it stopped, reuses the finished ones, and the results equal the
    unpacked grid's within the --pack promise."""
    both = ["random_mask", "reinit"]
    # results.json writes: 4 for level 0, then trunk by trunk: ticket, reinit, random_mask; the 6th is the first
    # trunk's reinit, so it has level 1's ticket only when killed
    assert _cli(tmp_path, crash="write:results.json#6").returncode == -signal.SIGKILL
    done = _levels_done(tmp_path)
    assert sorted(levels for _, levels in done) == [[(0, [])]] * 3 + [[(0, []), (1, [])]]
    assert all(status == "running" for status, _ in done)
    # second start: 2 + 3 * 3 writes finish level 1; level 2 writes 4 per trunk (3 runs, then the final status),
    # so the 24th is the last trunk's level-2 ticket: three trunks complete, one at level 1
    assert _cli(tmp_path, crash="write:results.json#24").returncode == -signal.SIGKILL
    done = _levels_done(tmp_path)
    assert sorted(status for status, _ in done) == ["complete"] * 3 + ["running"]
    assert [levels for status, levels in done if status == "running"] == [[(0, []), (1, both)]]
    r = _cli(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "lockstep: 3 of 4 runs finished already, 1 to run" in r.stderr
    (summary,) = [load_summary(p.parent) for p in tmp_path.glob("compare-*/summary.json")]
    _assert_same(unpacked, summary)


@pytest.mark.parametrize("pack", [1, 4])
def test_a_trunk_held_by_another_process_is_waited_for(pack, tmp_path):
    """One trunk's lock is held elsewhere (here: this thread, as another grid would): the comparison, one trunk
    after another or in lockstep, runs the others, says in one line that it waits, and runs it once free."""
    base = from_dict({**SETTINGS, "levels": 1, "out": str(tmp_path), "pack": pack})
    lines, summaries, waiting = [], [], threading.Event()

    def log(line):
        lines.append(line)
        if "waiting for it" in line:
            waiting.set()

    grid = threading.Thread(target=lambda: summaries.append(compare_inits(base, INITS, SEEDS, plots=False, log=log)))
    with RunDir.for_config(parse_init_variant("normal").apply(base).replace(seed=0)) as held:
        grid.start()
        assert waiting.wait(timeout=300), lines
        assert not (held.path / "results.json").exists()  # nothing was written into the held run
        others = [p for p in tmp_path.glob("*/results.json") if p.parent != held.path]
        assert len(others) == 3 and all(json.loads(p.read_text())["status"] == "complete" for p in others)
    grid.join(timeout=300)
    assert [line for line in lines if "in use by pid" in line] == [
        f"{held.path} is in use by pid {os.getpid()} (another grid on this runs directory?); waiting for it to "
        "finish, then reusing it"]
    (summary,) = summaries
    assert [r["status"] for s in summary["schemes"] for r in s["runs"]] == ["complete"] * 4


@pytest.mark.slow
def test_a_killed_packed_grid_resumes(unpacked, tmp_path):
    """--jobs 2 --pack 3: two workers, each with two of the four trunks in lockstep (level 0: its 2 dense runs in
    one pass; then 2 trunks x 3 arms in passes of 3), and the grid line says so. A worker killed mid-level: one
    clear line, and the same command finishes the grid with the unpacked grid's results (within the --pack
    promise)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOTTERY_CRASH_AT": "write:results.json#4"}
    argv = [sys.executable, "-m", "lottery", *CLI[:-1], "3", "--jobs", "2", "--out", str(tmp_path)]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert ("grid: 0 of 4 runs finished already, 4 to run (local, 2 workers, each in lockstep with up to 3 networks "
            "per fused pass)") in r.stderr
    assert r.returncode != 0 and "a grid worker died mid-run" in r.stderr, r.stderr
    env.pop("LOTTERY_CRASH_AT")
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (summary,) = [load_summary(p.parent) for p in tmp_path.glob("compare-*/summary.json")]
    _assert_same(unpacked, summary)
