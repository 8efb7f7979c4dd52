"""Bad input beyond tests/test_cli.py: wrong types in TOML files, out-of-range settings, unusable paths, and a run
directory locked by another process. Each answer is one line on stderr, exit code 2, no traceback, and nothing
in an existing run directory changes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lottery.cli import main
from lottery.runs import RunDir, RunLockedError
from tests.test_cli import _one_line_error

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "synthetic", "--model-options", "hidden=[8]", "--steps", "5", "--eval-every", "5",
        "--batch-size", "32", "--levels", "1", "--controls", "none", "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("toml, needles", [
    ("controls = 5", ["key 'controls' must be a list"]),
    ("name = 5", ["key 'name' must be a string"]),
    ("device = 5", ["key 'device' must be a string"]),
    ("rewind = 1", ["key 'rewind' must be a string"]),
    ('dataset = ["a"]', ["key 'dataset' must be a string"]),
    ("model_options = 3", ["key 'model_options' must be a table"]),
    ('levels = "three"', ["key 'levels' must be an integer"]),
    ("levels = true", ["key 'levels' must be an integer"]),
    ("eval_every = 2.5", ["key 'eval_every' must be an integer"]),
    ("init_scale = true", ["key 'init_scale' must be a number"]),
    ('lr = "fast"', ["key 'lr' must be a number"]),
    ('steps = "x"', ["key 'steps' must be an integer"]),
    ('layer_fractions = {"fc1.weight" = "x"}', ["layer_fractions['fc1.weight']"]),
    ('milestones = "a"', ["cannot read 'a' as a list of int"]),
])
def test_wrong_types_in_a_config_file(tmp_path, capsys, toml, needles):
    path = tmp_path / "exp.toml"
    path.write_text(toml + "\n")
    _one_line_error(capsys, ["run", "--config", str(path), "--out", str(tmp_path / "runs")], *needles)
    assert not (tmp_path / "runs").exists()


def test_config_file_that_is_not_text(tmp_path, capsys):
    path = tmp_path / "exp.toml"
    path.write_bytes(b"\xff\xfe\x00binary")
    _one_line_error(capsys, ["run", "--config", str(path)], "not valid TOML")


@pytest.mark.parametrize("flags, needles", [
    (["--lr", "-1"], ["lr must be > 0"]),
    (["--lr", "nan"], ["lr must be > 0"]),
    (["--init-scale", "inf"], ["init_scale must be > 0"]),
    (["--init-scale", "0"], ["init_scale must be > 0"]),
    (["--batch-size", "0"], ["batch_size must be an integer > 0"]),
    (["--eval-every", "0"], ["eval_every must be an integer > 0"]),
    (["--epochs", "-1"], ["epochs must be > 0"]),
    (["--momentum", "-1"], ["momentum must be >= 0"]),
    (["--gamma", "0"], ["gamma must be > 0"]),
    (["--weight-decay", "-1"], ["weight_decay must be >= 0"]),
    (["--warmup-steps", "-1"], ["warmup_steps must be an integer >= 0"]),
    (["--seed", "-1"], ["seed must be an integer >= 0"]),
    (["--prune-fraction", "nan"], ["prune_fraction"]),
    (["--layer-fractions", "fc1.weight=1"], ["layer_fractions['fc1.weight']", "[0, 1)"]),
    (["--min-kept-per-layer", "-1"], ["min_kept_per_layer must be an integer >= 0"]),
    (["--model-options", "{bad"], ["--model-options"]),
    (["--model-options", "nope=1"], ["has no option 'nope'"]),
    (["--dataset-options", "nope=1"], ["nope"]),
    (["--init-options", "nope=1"], ["has no option 'nope'"]),
    (["--name", "../escape"], ["may hold only letters"]),
    (["--optimizer", "lbfgs"], ["optimizer must be one of"]),
    (["--schedule", "x"], ["schedule must be one of"]),
    (["--activation", "swish"], ["unknown activation 'swish'"]),
    (["--milestones", "a,b"], ["--milestones"]),
    (["--rewind", "step:999"], ["beyond the 5 training steps"]),
    (["--val-size", "-5"], ["val_size"]),
    (["--init", "checkpoint", "--init-options", "path=/nonexistent/w.pt"], ["/nonexistent/w.pt"]),
])
def test_bad_settings(tmp_path, capsys, flags, needles):
    _one_line_error(capsys, ["run", *TINY, "--out", str(tmp_path / "runs"), *flags], *needles)
    assert not list((tmp_path / "runs").rglob("init.pt")), "a refused start trained or drew nothing"


def test_unknown_layer_in_layer_fractions_fails_before_any_training(tmp_path, capsys):
    _one_line_error(capsys, ["run", *TINY, "--out", str(tmp_path), "--layer-fractions", "fc9.weight=0.1"],
                    "fc9.weight", "known: fc1.weight, fc2.weight")
    assert not list(tmp_path.rglob("*.pt"))


def test_out_is_a_file_or_unwritable(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line_error(capsys, ["run", *TINY, "--out", str(afile)], "Not a directory")
    _one_line_error(capsys, ["report", str(afile)], "not a run directory")


def test_locked_run_directory_stops_a_second_process_with_the_holder_pid(tmp_path, capsys):
    assert main(["run", *TINY, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".png"}
    holder = RunDir(run_dir).__enter__()  # this test process is the first one
    try:
        with pytest.raises(RunLockedError, match=f"in use by pid {os.getpid()}"):
            RunDir(run_dir).__enter__()
        proc = subprocess.run([sys.executable, "-m", "lottery", "run", *TINY, "--out", str(tmp_path)],
                              capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        err = proc.stderr.strip()
        assert proc.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"is in use by pid {os.getpid()}" in err and str(run_dir) in err, err
        changed = {p for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".png"} ^ set(before)
        assert not changed and all(p.read_bytes() == b for p, b in before.items() if p.name != ".lock"), \
            "the second process wrote into a locked run"
    finally:
        holder.__exit__(None, None, None)
    assert main(["run", *TINY, "--out", str(tmp_path)]) == 0  # released: the run opens (and is already done)
