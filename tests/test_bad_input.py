"""Bad input beyond tests/test_cli.py: wrong types in TOML files, out-of-range settings, unusable paths, and a run
directory locked by another process. Each answer is one line on stderr, exit code 2, no traceback, and nothing
in an existing run directory changes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lottery.cli import main
from lottery.storage.rundir import RunDir, RunLockedError
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
    ('steps = "x"', ["key 'steps' must be an integer or auto"]),
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


@pytest.mark.slow
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


# -- the hash covers where the data comes from -----------------------------------------------------------------
def test_the_hash_covers_the_data_root_and_dataset_options(tmp_path, monkeypatch):
    from lottery.config import Config

    base = Config()
    assert base.replace(data_root=None).hash() == base.hash() == "d7d15db9c2"  # existing runs keep their hash (the defaults since 0.2)
    a, b = tmp_path / "a", tmp_path / "b"
    assert base.replace(data_root=str(a)).hash() != base.replace(data_root=str(b)).hash()
    assert base.replace(data_root=str(a)).hash() != base.hash()
    monkeypatch.chdir(tmp_path)  # the same folder written two ways is the same run
    assert base.replace(data_root="a").hash() == base.replace(data_root=str(a)).hash()
    assert base.replace(dataset_options={"n": 1}).hash() != base.hash()


# -- report of several runs: seeds of one experiment only ------------------------------------------------------
@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds")
    for extra in (["--seed", "0"], ["--seed", "1"], ["--seed", "2", "--lr", "0.01"]):
        assert main(["run", *TINY, *extra, "--out", str(out)]) == 0
    dirs = sorted(out.iterdir(), key=lambda d: RunDir(d).config().seed)
    return dirs


def test_report_of_several_runs_refuses_the_same_run_twice(seed_runs, capsys):
    a = seed_runs[0]
    _one_line_error(capsys, ["report", str(a), str(a)], "same run")
    _one_line_error(capsys, ["report", str(a), str(a) + "/"], "same run")


def test_report_of_several_runs_refuses_runs_that_differ_beyond_the_seed(seed_runs, capsys):
    _one_line_error(capsys, ["report", *map(str, seed_runs)], "'lr'", "not only in the seed")


def test_report_of_several_seeds_of_one_experiment_still_works(seed_runs, capsys, tmp_path):
    assert main(["report", str(seed_runs[0]), str(seed_runs[1]), "--out", str(tmp_path)]) == 0
    assert "± " in capsys.readouterr().out


# -- diverged and exhausted runs -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("diverged")
    assert main(["run", *TINY, "--init-scale", "1e30", "--levels", "0", "--out", str(out)]) == 0
    (run,) = out.iterdir()
    return run


@pytest.mark.parametrize("argv", [["export", "--level", "0", "--no-report"], ["stability", "--level", "0"],
                                  ["supermask", "--densities", "0.5"]], ids=["export", "stability", "supermask"])
def test_a_diverged_level_is_refused_in_one_line(diverged_run, capsys, argv):
    before = sorted(p.name for p in diverged_run.rglob("*"))
    _one_line_error(capsys, [argv[0], str(diverged_run), *argv[1:]], "diverged")
    assert sorted(p.name for p in diverged_run.rglob("*")) == before


def test_imp_stops_as_exhausted_when_a_level_would_prune_nothing(tmp_path, capsys):
    # synthetic inputs x 1 hidden unit + 1 x classes: round(0.003 x that) = 0, so level 1 would equal level 0
    assert main(["run", *TINY, "--model-options", "hidden=[1]", "--prune-fraction", "0.003", "--levels", "3",
                 "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    (run,) = tmp_path.iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "exhausted" and [e["level"] for e in results["levels"]] == [0]
    assert "would prune nothing" in results["exhausted"] and "would prune nothing" in captured.err + captured.out


def test_imp_stops_as_exhausted_after_a_layer_collapses_and_the_table_shows_it(tmp_path, capsys):
    # as in test_numerical_faults: global 95 % per level empties fc1 at level 2
    assert main(["run", *TINY, "--model-options", "hidden=[16]", "--prune-fraction", "0.95", "--levels", "4",
                 "--steps", "30", "--eval-every", "10", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "exhausted" and len(results["levels"]) == 3
    assert results["levels"][-1]["collapsed_layers"] == ["fc1.weight"]
    assert "collapsed: fc1.weight" in out and "no weights left" in out


# -- read-only places ------------------------------------------------------------------------------------------
def test_report_on_a_read_only_run_prints_its_table(seed_runs, capsys, monkeypatch):
    """An archived run: writing its plots fails (simulated: the tests may run as root, whom chmod does not stop)."""
    import lottery.reporting.tables

    def read_only(path, results, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(path) / "accuracy_vs_density.png"))

    monkeypatch.setattr(lottery.reporting.tables, "write_plots", read_only)
    assert main(["report", str(seed_runs[0])]) == 0
    captured = capsys.readouterr()
    assert "weights %" in captured.out and "status: complete" in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and "plots skipped" in captured.err


def test_stability_checks_it_can_write_before_training(seed_runs, capsys, monkeypatch):
    import lottery.storage.rundir

    monkeypatch.setattr(lottery.storage.rundir.os, "access", lambda path, mode: False)  # as a read-only mount answers
    _one_line_error(capsys, ["stability", str(seed_runs[0]), "--level", "1"], "not writable")
    assert not (seed_runs[0] / "stability.json").exists()


def test_an_unwritable_cache_names_it_and_the_variable_that_moves_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "home").write_text("a file, so nothing can be created under it")
    monkeypatch.setenv("LOTTERY_CACHE", str(tmp_path / "home" / ".cache"))
    _one_line_error(capsys, ["run", "--levels", "0", "--steps", "5", "--no-progress", "--out", str(tmp_path / "o")],
                    str(tmp_path / "home" / ".cache"), "LOTTERY_CACHE")


# -- everything a user can type: one line, exit 2, before any training -----------------------------------------
@pytest.mark.parametrize("flags, needles", [
    (["--epochs", "inf"], ["epochs"]),
    (["--epochs", "nan"], ["epochs"]),
    (["--gamma", "inf"], ["gamma"]),
    (["--model-options", '{"a": ' + "[" * 5000 + "]" * 5000 + "}"], ["nested too deeply"]),
    (["--dataset-options", "a=" + "[" * 40 + "]" * 40], ["nested too deeply"]),
])
def test_values_that_used_to_overflow_or_recurse(tmp_path, capsys, flags, needles):
    _one_line_error(capsys, ["run", *TINY, *flags, "--out", str(tmp_path)], *needles)
    assert not any(tmp_path.iterdir())


def test_a_deeply_nested_toml_file_is_one_line(tmp_path, capsys):
    (tmp_path / "x.toml").write_text("model_options = {a = " + "[" * 5000 + "]" * 5000 + "}\n")
    _one_line_error(capsys, ["run", "--config", str(tmp_path / "x.toml"), "--out", str(tmp_path)])


@pytest.mark.parametrize("flags, needles", [
    (["--prune-every", "0"], ["--prune-every"]),
    (["--prune-every", "-3"], ["--prune-every"]),
    (["--begin-step", "4", "--end-step", "2"], ["--end-step", "--begin-step"]),
    (["--begin-step", "-1"], ["--begin-step"]),
    (["--final-densities", "1e-300"], ["keeps no weight"]),
    (["--end-step", "100"], ["beyond"]),
], ids=["every-0", "every-neg", "begin>end", "begin<0", "density~0", "end>budget"])
def test_gradual_options_are_refused_not_replaced(tmp_path, capsys, flags, needles):
    _one_line_error(capsys, ["gradual", *TINY, "--steps", "20", "--with-imp", *flags, "--out", str(tmp_path)],
                    *needles)
    assert not list(tmp_path.rglob("gradual.json")) and not list(tmp_path.rglob("final.pt"))


def test_compare_inits_validates_every_variant_before_the_first_run(tmp_path, capsys):
    _one_line_error(capsys, ["compare-inits", "--inits", "normal,xavier_normal,normal:nope=1", *TINY,
                             "--out", str(tmp_path)], "normal:nope=1", "nope")
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("init.pt"))


def test_export_threads_zero_is_refused_before_writing(seed_runs, capsys):
    _one_line_error(capsys, ["export", str(seed_runs[0]), "--level", "1", "--threads", "0"], "--threads")
    assert not list(seed_runs[0].rglob("ticket-*"))


# -- sizes that cannot be allocated, demo settings out of range (one line each) -------------------------------
def test_a_model_too_large_for_memory_is_one_line(tmp_path, capsys):
    from tests.test_export import _memory_cap

    with _memory_cap(extra=1 << 30):
        code = main(["run", *TINY, "--model-options", "hidden=[100000000]", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "out of memory" in err and "GiB" in err, err


@pytest.mark.parametrize("settings, needle", [({"lr": 1e300}, "lr"), ({"seed": 2**70}, "seed"),
                                              ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed")])
def test_demo_settings_out_of_range_are_one_line(settings, needle):
    from lottery.demo.playground import Settings
    from lottery.errors import ConfigError

    with pytest.raises(ConfigError, match=needle) as e:
        Settings(**settings)
    assert len(str(e.value).splitlines()) == 1


def test_demo_on_a_busy_port_fails_before_announcing_the_url(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert "serving at" not in captured.out and f"--port {port} is not free" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
