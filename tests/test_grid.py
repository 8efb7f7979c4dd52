"""The grid executor: compare-inits trunks in worker processes or a submitit job array give the serial results;
a worker killed mid-run leaves its run resumable; bad settings are one line."""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lottery.cli import main

FLAGS = ["--dataset", "synthetic", "--model-options", "hidden=[8]", "--steps", "20", "--eval-every", "10",
         "--batch-size", "32", "--levels", "1", "--lr", "0.005", "--no-progress", "--device", "cpu",
         "--inits", "normal,xavier_normal", "--seeds", "2"]


def _levels(out):
    """Every scheme's per-level table of the one comparison under ``out`` (run paths left out)."""
    (summary,) = [json.loads(p.read_text()) for p in out.glob("compare-*/summary.json")]
    return [(s["label"], s["status"], s["levels"]) for s in summary["schemes"]]


def _cli(out, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "lottery", "compare-inits", *FLAGS, "--out", str(out), *extra],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900)


def _sigterm_once_training(extra: list, started: str, wait: float) -> subprocess.CompletedProcess:
    """``compare-inits`` with 20000 steps per run (minutes of work left) and ``extra``, sent SIGTERM as soon as a
    file matching ``started`` shows a run is training; its exit code and stderr."""
    import signal
    import time

    flags = [f if f != "20" else "20000" for f in FLAGS]
    grid = subprocess.Popen([sys.executable, "-m", "lottery", "compare-inits", *flags, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_dir = Path(extra[extra.index("--out") + 1])
    deadline = time.time() + wait
    while not list(out_dir.glob(started)) and time.time() < deadline:
        time.sleep(0.2)
    grid.send_signal(signal.SIGTERM)
    _, err = grid.communicate(timeout=60)
    return subprocess.CompletedProcess(grid.args, grid.returncode, "", err)


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    """The grid run one trunk after another in this process: its runs directory and per-level tables."""
    out = tmp_path_factory.mktemp("serial")
    assert main(["compare-inits", *FLAGS, "--out", str(out)]) == 0
    return out, _levels(out)


@pytest.fixture(scope="module")
def serial(serial_run):
    return serial_run[1]


@pytest.mark.slow
def test_worker_killed_mid_run_resumes(serial, tmp_path):
    """--jobs 2 with a worker SIGKILLed mid-run: one error line; run again, it finishes the grid, and every level
    equals the serial run's bit for bit (one thread per worker, as in the serial run)."""
    r = _cli(tmp_path, "--jobs", "2", env={"LOTTERY_CRASH_AT": "train:level1#5"})
    assert "grid: 0 of 4 runs finished already, 4 to run (local, 2 workers)" in r.stderr
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("lottery: error: a grid worker died")
    assert not list(tmp_path.glob("compare-*/summary.json"))  # no summary from half a grid
    r = _cli(tmp_path, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert _levels(tmp_path) == serial


@pytest.mark.slow
def test_two_grids_on_one_runs_directory(serial, tmp_path):
    """Two grids started together on one runs directory: neither crashes; a trunk one finds in use by the other
    is waited for (one line), then reused; both summaries are complete, and a third start trains nothing."""
    cmd = [sys.executable, "-m", "lottery", "compare-inits", *FLAGS, "--out", str(tmp_path), "--jobs", "2"]
    grids = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for grid in grids:
        _, err = grid.communicate(timeout=900)
        assert grid.returncode == 0 and "Traceback" not in err, err
        assert all(line.endswith(("waiting for it to finish, then reusing it", "reusing it now"))
                   for line in err.splitlines() if "in use" in line)
    assert _levels(tmp_path) == serial


def test_a_finished_grid_trains_nothing(serial_run, capsys):
    out, serial = serial_run
    assert main(["compare-inits", *FLAGS, "--out", str(out), "--jobs", "2"]) == 0
    assert "grid: 4 of 4 runs finished already, 0 to run" in capsys.readouterr().err
    assert _levels(out) == serial


@pytest.mark.slow
def test_submitit_local_executor(serial, tmp_path):
    pytest.importorskip("submitit")
    toml = tmp_path / "grid.toml"
    toml.write_text('[submitit]\ncluster = "local"\ntimeout_min = 10\n')
    r = _cli(tmp_path / "runs", "--executor", "submitit", "--config", str(toml))
    assert r.returncode == 0, r.stderr
    assert _levels(tmp_path / "runs") == serial
    assert list((tmp_path / "runs").glob("compare-*/submitit/*_log.out"))  # the job array's logs


@pytest.mark.parametrize("argv, needle", [
    (["--jobs", "0"], "jobs must be an integer >= 1"),
    (["--jobs", "-2"], "jobs must be an integer >= 1"),
])
def test_bad_jobs_is_one_line(argv, needle, tmp_path, capsys):
    assert main(["compare-inits", *FLAGS, "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not any(tmp_path.iterdir())  # nothing trained or written


def test_unknown_submitit_setting_is_one_line(tmp_path, capsys):
    pytest.importorskip("submitit")
    toml = tmp_path / "grid.toml"
    toml.write_text('[submitit]\ncluster = "local"\nno_such_setting = 3\n')
    assert main(["compare-inits", *FLAGS, "--out", str(tmp_path / "runs"), "--executor", "submitit",
                 "--config", str(toml)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[submitit] setting not accepted" in err[0] and "no_such_setting" in err[0]


@pytest.mark.slow
def test_sigterm_stops_the_workers_at_once(tmp_path):
    """SIGTERM (a scheduler's limit, `kill`) ends a --jobs grid like a run: the workers stop now, not after the
    queued trunks, exit 143, and no trunk stays locked (each resumes like any killed run)."""
    from lottery.storage.rundir import RunDir

    grid = _sigterm_once_training(["--out", str(tmp_path), "--jobs", "2"], "*/init.pt", 120)
    err = grid.stderr
    assert grid.returncode == 143, err
    assert "Traceback" not in err
    for run in (p.parent for p in tmp_path.glob("*/config.json")):
        with RunDir(run):  # a worker still training would hold it: RunLockedError
            pass


class _DoomedManager:
    """A spawn context whose Manager is SIGKILLed ``after`` seconds into the grid (as `kill -9` would)."""

    def __init__(self, ctx, after):
        self.ctx, self.after = ctx, after

    def __getattr__(self, name):
        return getattr(self.ctx, name)

    def Manager(self):
        import signal
        import threading

        manager = self.ctx.Manager()

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):  # already gone: the grid failed to outlive the timer
                os.kill(manager._process.pid, signal.SIGKILL)

        threading.Timer(self.after, kill).start()
        return manager


@pytest.mark.parametrize("after", [0.2, pytest.param(6.0, marks=pytest.mark.slow)])
def test_a_killed_manager_is_the_worker_died_error(tmp_path, capsys, monkeypatch, after):
    """SIGKILL of the progress queue's manager (before or while the workers train): a one-line error, non-zero,
    no summary — never a silent exit 0."""
    import multiprocessing
    import types

    from lottery.executors import grid

    monkeypatch.setattr(grid, "multiprocessing", types.SimpleNamespace(
        get_context=lambda name: _DoomedManager(multiprocessing.get_context(name), after)))
    longer = ["--steps", "100000"] if after > 1 else []  # still training when the manager dies (it ends on the error)
    code = main(["compare-inits", *FLAGS, "--out", str(tmp_path), "--jobs", "2", "--pack", "2", *longer])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("lottery: error: a grid worker died"), err
    assert not any("Traceback" in line for line in err)
    assert not list(tmp_path.glob("compare-*/summary.json"))


def test_only_a_closed_stdout_is_taken_for_a_closed_reader(monkeypatch, capsys):
    """cli.main: a BrokenPipeError from anything but stdout (a dead helper process) is an error, not exit 0."""
    import dataclasses

    from lottery.drivers.registry import DRIVERS

    def broken(target, opts):
        raise BrokenPipeError(32, "Broken pipe")

    original = DRIVERS["list"]
    dict.__setitem__(DRIVERS, "list", dataclasses.replace(original, run=broken))
    try:
        assert main(["list"]) != 0
    finally:
        dict.__setitem__(DRIVERS, "list", original)
    assert "Broken pipe" in capsys.readouterr().err


@pytest.mark.parametrize("setting, needle", [
    ('cpus_per_task = "two"', "cpus_per_task"), ('mem_gb = "lots"', "mem_gb"), ("timeout_min = -5", "timeout_min"),
    ("cpus_per_task = -1", "cpus_per_task"), ("cpus_per_task = 0", "cpus_per_task"), ("timeout_min = 1.5", "timeout_min"),
    ("mem_gb = true", "mem_gb"),
])
def test_bad_submitit_values_are_one_line(tmp_path, capsys, setting, needle):
    pytest.importorskip("submitit")
    toml = tmp_path / "grid.toml"
    toml.write_text(f'[submitit]\ncluster = "local"\n{setting}\n')
    assert main(["compare-inits", *FLAGS, "--out", str(tmp_path / "runs"), "--executor", "submitit",
                 "--config", str(toml)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "[submitit]" in err[0], err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_sigterm_cancels_the_submitit_jobs(tmp_path):
    """SIGTERM of the launcher (local submitit): exit 143, and the jobs it started end too — no trunk stays
    locked by a job that ignored the signal."""
    from lottery.storage.rundir import RunDir

    pytest.importorskip("submitit")
    toml = tmp_path / "grid.toml"
    toml.write_text('[submitit]\ncluster = "local"\ntimeout_min = 10\n')
    grid = _sigterm_once_training(["--out", str(tmp_path / "runs"), "--executor", "submitit", "--config", str(toml)],
                                  "*/init.pt", 180)
    err = grid.stderr
    assert grid.returncode == 143 and "Traceback" not in err, err
    runs = [p.parent for p in tmp_path.glob("runs/*/config.json")]
    assert runs
    for run in runs:
        with RunDir(run):  # a job still training would hold it: RunLockedError
            pass


def test_cancel_sends_sigterm_again_to_a_job_that_was_still_starting(tmp_path):
    """A submitit task ignores SIGTERM until its own handler is installed (submitit's handler bypasses it): the
    launcher sends SIGTERM again each second, so such a task still stops cleanly, and the controller is never
    interrupted (SIGINT prints its traceback into the launcher's stderr)."""
    import signal
    import time

    from lottery.executors.grid import _cancel

    ready = tmp_path / "ready"
    script = ("import signal, sys, time, pathlib\n"
              "seen = []\n"
              "def on_term(*a):\n"
              "    seen.append(1)\n"
              "    if len(seen) > 1: sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, on_term)\n"
              f"pathlib.Path({str(ready)!r}).touch()\n"
              "while True: time.sleep(0.05)\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        while not ready.exists():
            time.sleep(0.05)

        class Job:
            job_id = str(proc.pid)
            cancelled = False

            @property
            def state(self):
                return "RUNNING" if proc.poll() is None else "FINISHED"

            def cancel(self, check=True):
                self.cancelled = True
                proc.send_signal(signal.SIGINT)

        job = Job()
        start = time.monotonic()
        _cancel([job], wait_s=10.0)
        assert proc.wait(timeout=5) == 0 and not job.cancelled
        assert time.monotonic() - start < 5
    finally:
        proc.kill()
        proc.wait()
