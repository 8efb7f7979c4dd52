"""Fault injection: SIGKILL a real `lottery run` at named points, resume, and get the uninterrupted run bit for bit.

Each case kills a subprocess with ``LOTTERY_CRASH_AT=<point>`` (see lottery/testing.py), checks that it died by
SIGKILL, resumes without the variable, and compares results.json (minus wall times), every mask and every level's
final weights with one uninterrupted reference run. Levels finished before the kill must not be touched.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lottery as lt
from lottery.cli import build_parser, config_from_args
from lottery.testing import ENV, crash_point
from tests.engine_helpers import strip_times
from tests.fault_helpers import DropoutNet, run_cli_with_crash, run_cli_with_crash_dropout

# rewind to step 5 so that rewind.pt exists too; two controls so control training and its results are covered
ARGS = ["--dataset", "synthetic", "--model", "mlp", "--model-options", "hidden=[16]", "--steps", "30",
        "--eval-every", "10", "--batch-size", "32", "--levels", "2", "--lr", "5e-3", "--rewind", "step:5",
        "--controls", "reinit,random_mask", "--device", "cpu", "--no-progress", "--name", "f"]
ROOT = Path(__file__).resolve().parents[1]


def _cfg(out: Path):
    return config_from_args(build_parser().parse_args(["run", *ARGS, "--out", str(out)]))


def _run_dir(out: Path) -> Path:
    return out / _cfg(out).run_name()


def _tensors(run: Path) -> dict:
    """Every mask and every tensor file of a run directory, loaded (file bytes embed names and times)."""
    out = {}
    for p in sorted(run.rglob("*")):
        if p.name == "mask.npz":
            out[str(p.relative_to(run))] = lt.Mask.load(p)
        elif p.suffix == ".pt":
            out[str(p.relative_to(run))] = torch.load(p, weights_only=True)
    return out


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        if isinstance(a[k], lt.Mask):
            if a[k] != b[k]:
                return False
        elif a[k].keys() != b[k].keys() or not all(torch.equal(a[k][n], b[k][n]) for n in a[k]):
            return False
    return True


def _stat(paths) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    results = lt.run_imp(_cfg(out))
    assert results["status"] == "complete" and len(results["levels"]) == 3
    return strip_times(results), _tensors(_run_dir(out))


# (crash point, what it interrupts). results.json is written after level 0, 1, 1's reinit, 1's random_mask, 2, 2's
# reinit, 2's random_mask, and once more with the final status.
CASES = [
    ("write:config.json", "creating the run directory"),
    ("write:init.pt", "saving the init draw"),
    ("train:level0#12", "level 0 training, after the rewind snapshot at step 5 but before rewind.pt is saved"),
    ("write:rewind.pt", "saving the step-5 rewind state"),
    ("write:final.pt", "saving level 0's final weights"),
    ("write:mask.npz", "saving level 0's (dense) mask"),
    ("write:results.json", "recording level 0"),
    ("write:mask.npz#2", "saving level 1's mask"),
    ("train:level1#20", "level 1 ticket training"),
    ("write:final.pt#2", "saving level 1's final weights"),
    ("train:level1:reinit#3", "level 1 reinit control training"),
    ("write:results.json#3", "recording level 1's reinit control"),
    ("train:level1:random_mask#25", "the last step of level 1's random-mask control (steps 5..30: 25 updates)"),
    ("prune:level2", "pruning: level 2's mask computed, not saved"),
    ("write:results.json#8", "recording the finished run (status complete)"),
]


# One real `python -m lottery run` per module; the other kills go to processes forked from a server that has
# imported lottery once: a fresh process each, as the kill must be, without paying torch's import every time.
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["lottery.cli", "lottery.drivers.imp", "tests.fault_helpers"])


def _killed_run(point: str, out: Path, *, subprocess_cli: bool, args=ARGS, target=run_cli_with_crash) -> None:
    argv = ["run", *args, "--out", str(out)]
    if subprocess_cli:
        env = {**os.environ, ENV: point, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-m", "lottery", *argv], env=env, capture_output=True, text=True,
                              timeout=300, cwd=ROOT)
        rc, why = proc.returncode, proc.stderr[-2000:]
    else:
        child = _FORKSERVER.Process(target=target, args=(point, argv))
        child.start()
        child.join(300)
        rc, why = child.exitcode, "(forked child)"
    assert rc == -signal.SIGKILL, f"not killed at {point}: rc={rc} {why}"


QUICK = {"train:level1#20", "write:results.json#3"}  # the quick tier's kills: mid-training (the real command), mid-write


@pytest.mark.parametrize("point", [c[0] if c[0] in QUICK else pytest.param(c[0], marks=pytest.mark.slow)
                                   for c in CASES], ids=[c[0] for c in CASES])
def test_killed_run_resumes_bit_identical(tmp_path, reference, point):
    ref_results, ref_tensors = reference
    out = tmp_path / "runs"
    _killed_run(point, out, subprocess_cli=point == "train:level1#20")

    run = _run_dir(out)
    if point.startswith("write:"):  # the kill left the complete temp file next to the untouched target
        assert list(run.rglob(f".{point[6:].split('#')[0]}.*.tmp")), point
    done = json.loads((run / "results.json").read_text())["levels"] if (run / "results.json").exists() else []
    finished = [p for e in done if e["controls"].keys() == {"reinit", "random_mask"} or e["level"] == 0
                for p in (run / f"level_{e['level']:02d}").iterdir()]
    before = _stat(finished)
    # a half-written temp file from an earlier crash, as a kill inside write() would leave it
    (run / "level_00").mkdir(exist_ok=True)
    (run / "level_00" / ".final.pt.half.tmp").write_bytes(b"PK\x03\x04 truncated")

    results = lt.run_imp(_cfg(out))

    assert strip_times(results) == ref_results
    assert _same(_tensors(run), ref_tensors)
    assert _stat(finished) == before, "a level finished before the kill was rewritten"
    leftovers = [p.name for p in run.rglob(".*.tmp") if not p.name.startswith(".config.json.")]
    assert leftovers == []


def test_crash_point_is_inert_without_the_variable(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    crash_point("write:results.json")  # returns: nothing armed
    monkeypatch.setenv(ENV, "write:results.json#3")
    crash_point("write:results.json")  # 1st and 2nd time: not yet
    crash_point("write:results.jso")  # a prefix of the armed name is another point
    crash_point("write:results.json")


@pytest.mark.slow
def test_killed_again_while_resuming(tmp_path, reference):
    ref_results, ref_tensors = reference
    out = tmp_path / "runs"
    _killed_run("train:level1#20", out, subprocess_cli=False)
    _killed_run("write:mask.npz", out, subprocess_cli=False)  # the resume dies writing level 2's mask
    _killed_run("train:level2:random_mask#2", out, subprocess_cli=False)
    assert strip_times(lt.run_imp(_cfg(out))) == ref_results
    assert _same(_tensors(_run_dir(out)), ref_tensors)


@pytest.mark.slow
def test_dropout_model_resumes_bit_identical(tmp_path):
    """Dropout draws from the global RNG: seeded per training run, a resumed run equals an uninterrupted one."""
    DropoutNet.register()
    try:
        args = [*ARGS[:ARGS.index("--model")], "--model", DropoutNet.name, "--model-options", "{}",
                *ARGS[ARGS.index("--steps"):]]
        cfg = lambda out: config_from_args(build_parser().parse_args(["run", *args, "--out", str(out)]))  # noqa: E731
        reference = strip_times(lt.run_imp(cfg(tmp_path / "ref")))
        out = tmp_path / "killed"
        _killed_run("train:level1:reinit#12", out, subprocess_cli=False, args=args, target=run_cli_with_crash_dropout)
        torch.rand(7)  # this process's global RNG is wherever the program left it
        assert strip_times(lt.run_imp(cfg(out))) == reference
        ref_dir, run_dir = (p / cfg(p).run_name() for p in (tmp_path / "ref", out))
        assert _same(_tensors(run_dir), _tensors(ref_dir))
    finally:
        lt.MODELS.pop(DropoutNet.name, None)
