"""The command line: runs, reports, lists, and answers every bad input with one line and exit code 2."""
import json
import subprocess
import sys

import pytest

from lottery.cli import main

TINY = ["--dataset", "synthetic", "--model-options", "hidden=[16]", "--steps", "30", "--eval-every", "10",
        "--batch-size", "32", "--levels", "2", "--no-progress", "--device", "cpu"]


def _one_line_error(capsys, argv, *needles):
    code = None
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.render
def test_run_prints_table_and_writes_plots_then_report_repeats_it(tmp_path, capsys):
    assert main(["run", *TINY, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "weights %" in out and "random %" in out and out.count("\n") >= 5
    (run_dir,) = tmp_path.iterdir()
    for png in ("accuracy_vs_density.png", "early_stop_vs_density.png"):
        data = (run_dir / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
        (run_dir / png).unlink()
    assert main(["report", str(run_dir)]) == 0
    assert "weights %" in capsys.readouterr().out
    assert (run_dir / "accuracy_vs_density.png").exists()


def test_config_file_and_flag_override(tmp_path, capsys):
    toml = tmp_path / "exp.toml"
    toml.write_text('dataset = "synthetic"\nlevels = 5\nsteps = 30\neval_every = 10\nbatch_size = 32\n'
                    'controls = "none"\n[model_options]\nhidden = [8]\n')
    assert main(["run", "--config", str(toml), "--levels", "1", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["levels"]) == 2 and results["levels"][1]["controls"] == {}
    assert results["config"]["model_options"] == {"hidden": [8]}


def test_list_names_every_axis(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("models:", "mlp", "lenet_300_100", "data sets:", "mnist1d", "init schemes:", "xavier_normal",
                 "pruning strategies:", "magnitude"):
        assert word in out


@pytest.mark.parametrize("argv, needles", [
    (["run", "--model", "nope"], ["unknown model 'nope'", "lenet_300_100"]),
    (["run", "--dataset", "nope"], ["unknown data set", "mnist1d"]),
    (["run", "--init", "nope"], ["unknown init scheme", "xavier_normal"]),
    (["run", "--strategy", "nope"], ["unknown pruning strategy", "magnitude"]),
    (["run", "--prune-fraction", "1.5"], ["prune_fraction", "(0, 1)"]),
    (["run", "--prune-fraction", "0"], ["(0, 1)"]),
    (["run", "--levels", "-1"], ["levels must be an integer >= 0"]),
    (["run", "--steps", "0"], ["steps must be > 0"]),
    (["run", "--steps", "ten"], ["--steps", "an integer or auto"]),
    (["run", "--rewind", "sometime"], ["rewind must be init, lr or step:K"]),
    (["run", "--controls", "reinit,magic"], ["unknown control 'magic'"]),
    (["run", "--scope", "row"], ["scope must be one of"]),
    (["run", "--config", "/nonexistent/exp.toml"], ["does not exist"]),
    (["run", "--bogus-flag", "1"], ["unrecognized arguments"]),
    (["run", "--fused", "maybe"], ["expected true or false"]),
    (["report", "/nonexistent/run"], ["not a run directory"]),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, needles):
    _one_line_error(capsys, argv, *needles)


def test_device_cuda_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _one_line_error(capsys, ["run", "--device", "cuda"], "CUDA is not available")


def test_bad_config_files(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("levels = = 3\n")
    _one_line_error(capsys, ["run", "--config", str(bad)], "not valid TOML")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("levles = 3\n")
    _one_line_error(capsys, ["run", "--config", str(unknown)], "unknown", "'levles'")


def test_report_on_corrupt_results_and_failed_start_changes_nothing(tmp_path, capsys):
    assert main(["run", *TINY, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    (run_dir,) = tmp_path.iterdir()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".png"}
    _one_line_error(capsys, ["run", *TINY, "--out", str(tmp_path), "--prune-fraction", "2"], "(0, 1)")
    assert {p: p.read_bytes() for p in before} == before
    (run_dir / "results.json").write_text('{"levels": [')
    _one_line_error(capsys, ["report", str(run_dir)], "not valid JSON")


@pytest.mark.slow
def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lottery", "list"], capture_output=True, text=True)
    assert proc.returncode == 0 and "models:" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "lottery", "run", "--levels", "x"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.render
def test_report_over_several_seeds_prints_intervals_and_verdicts(tmp_path, capsys):
    for seed in ("0", "1"):
        assert main(["run", *TINY, "--controls", "random_mask", "--seed", seed, "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    runs = sorted(str(p) for p in (tmp_path / "r").iterdir())
    assert main(["report", *runs, "--out", str(tmp_path / "agg")]) == 0
    out = capsys.readouterr().out
    assert "2 seeds [0, 1]" in out and "±" in out and "smallest matching density" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    png = (tmp_path / "agg" / "seeds_accuracy_vs_density.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


# -- one meaning per flag across subcommands -----------------------------------------------------------------


def test_run_takes_the_compare_inits_init_grammar():
    from lottery.cli import build_parser, config_from_args

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["run", *argv]))

    a = cfg("--init", "normal:std=0.01*2")
    assert (a.init, a.init_options, a.init_scale) == ("normal", {"std": 0.01}, 2.0)
    assert a.hash() == cfg("--init", "normal", "--init-options", "std=0.01", "--init-scale", "2").hash()


@pytest.mark.parametrize("argv, needles", [
    (["run", "--init", "normal:std"], ["must look like key=value"]),
    (["run", "--init", "nope:std=1"], ["unknown init scheme 'nope'"]),
    (["run", "--init", "normal:std=0.01", "--init-options", "std=0.1"], ["'std' is given twice"]),
    (["run", "--init", "normal*2", "--init-scale", "3"], ["init_scale is 3.0"]),
    (["run", "--init", "normal:nope=1"], ["has no option 'nope'"]),
])
def test_bad_init_variants_are_one_line(capsys, argv, needles):
    _one_line_error(capsys, argv, *needles)


@pytest.mark.parametrize("command", [["run"], ["gradual"], ["prune-at-init"], ["compare-inits", "--inits", "normal"]])
def test_negative_levels_are_refused_by_every_subcommand(capsys, command, tmp_path):
    _one_line_error(capsys, [*command, "--levels", "-1", "--out", str(tmp_path)], "levels must be an integer >= 0")
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("command", ["run", "gradual", "prune-at-init", "compare-inits", "stability", "supermask"])
def test_every_training_subcommand_takes_no_progress(command):
    from lottery.cli import build_parser

    args = build_parser().parse_args([command, *(["RUN_DIR"] if command in ("stability", "supermask") else []),
                                      "--no-progress"])
    assert args.progress is False


@pytest.mark.slow
def test_export_imports_nothing_that_warns_about_cuda(tmp_path):
    """`torch.utils.benchmark` imports torch's C++-extension builder, which logs "No CUDA runtime is found" on a
    CPU-only machine with a CUDA_HOME; the export report must not import it."""
    assert main(["run", *TINY, "--levels", "1", "--controls", "none", "--out", str(tmp_path)]) == 0
    run = next(tmp_path.iterdir())
    code = ("import sys; from lottery.cli import main; rc = main(['export', sys.argv[1], '--level', '1']); "
            "print('cpp_extension' in ' '.join(sys.modules)); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False" and "CUDA" not in p.stderr, p.stdout + p.stderr

# -- output fit for logs ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_closed_pipe_ends_quietly():
    """`lottery list | head -1`: the reader is gone before the output is flushed; exit 0, nothing on stderr."""
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "lottery", "list"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.slow
def test_progress_in_a_log_is_plain_lines(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lottery", "run", *[a for a in TINY if a != "--no-progress"],
                           "--levels", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("level 1 ticket: 30/30") for line in lines), proc.stderr
    assert any(line.startswith("IMP mlp-synthetic-") and "density=0.800" in line for line in lines), proc.stderr


@pytest.mark.slow
def test_sigterm_says_the_run_is_resumable(tmp_path):
    import signal
    import time

    argv = [sys.executable, "-m", "lottery", "run", *TINY, "--steps", "200000", "--eval-every", "1000",
            "--out", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.rglob("init.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # init.pt is written just before level 0 starts training
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "resume" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), pytest.param(0o077, 0o600, marks=pytest.mark.slow),
                                         pytest.param(0o002, 0o664, marks=pytest.mark.slow)])
def test_files_respect_the_umask(tmp_path, capsys, umask, mode):
    import os

    old = os.umask(umask)
    try:
        assert main(["run", *TINY, "--levels", "1", "--out", str(tmp_path)]) == 0
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}


@pytest.mark.slow
def test_run_with_a_compare_inits_file_says_which_init_it_trains(tmp_path, capsys):
    """One file serves both commands; `run` on a comparison's file trains its base config and says so."""
    from lottery.cli import main

    toml = tmp_path / "grid.toml"
    toml.write_text('inits = ["zeros", "normal"]\nseeds = 2\ndataset = "synthetic"\nsteps = 20\nlevels = 0\n'
                    'controls = "none"\n')
    assert main(["run", "--config", str(toml), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "is a compare-inits file; `run` trains one config with init =" in err
    assert main(["run", "--config", str(toml), "--init", "zeros", "--out", str(tmp_path / "runs"),
                 "--no-progress"]) == 0
    assert "compare-inits file" not in capsys.readouterr().err


def test_a_sigterm_swallowed_by_python_still_ends_the_run(tmp_path):
    """SIGTERM's exception raised inside a ``__del__`` (or a GC callback) is only printed by Python; the note the
    handler leaves ends the run at its next training step, resumable, and is cleared once reported."""
    from lottery import errors

    try:
        errors.terminate()
    except errors.Terminated:
        pass  # as if Python had swallowed it in a __del__
    assert main(["run", *TINY, "--out", str(tmp_path)]) == 143
    assert main(["run", *TINY, "--out", str(tmp_path)]) == 0  # the note is cleared: the same command resumes


def test_a_second_sigterm_does_not_interrupt_the_unwinding_of_the_first():
    import signal

    from lottery import errors

    try:
        with pytest.raises(errors.Terminated):
            errors.on_sigterm(signal.SIGTERM, None)
        errors.on_sigterm(signal.SIGTERM, None)  # the run is already unwinding: no second exception in its clean-up
        with pytest.raises(errors.Terminated):
            errors.raise_if_terminated()
    finally:
        errors.terminate(False)
    errors.raise_if_terminated()  # cleared


def test_ranks_leave_together_only_after_a_command_succeeded(monkeypatch, tmp_path):
    """cli.main waits for every torchrun rank (a barrier) after success, so no rank tears its process group down
    while rank 0 still writes; never after a failure, where the other ranks may not come."""
    import lottery.cli as cli

    calls = []
    monkeypatch.setattr(cli, "leave_together", lambda: calls.append(1))
    assert cli.main(["list"]) == 0 and calls == [1]
    assert cli.main(["run", "--dataset", "no_such_data", "--out", str(tmp_path)]) == 2 and calls == [1]
