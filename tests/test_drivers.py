"""The README's guarantees, for every driver: killed and resumed, a second process, a damaged stored file.

Each driver runs a tiny synthetic config through the `lottery` command. A kill (SIGKILL at a named point, see
lottery/testing.py) followed by the same command gives the uninterrupted driver's results file; a second process
on the same run (or the same driver file) is refused in one line and writes nothing; a damaged stored file is
set aside and recomputed, giving the undamaged results.
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from lottery.cli import build_parser, config_from_args, main
from lottery.drivers.registry import DRIVERS as REGISTRY
from lottery.storage.rundir import RunDir
from tests.fault_helpers import run_cli_with_crash

BASE = ["--dataset", "synthetic", "--model", "mlp", "--model-options", "hidden=[16]", "--steps", "30",
        "--eval-every", "10", "--batch-size", "32", "--levels", "1", "--lr", "5e-3", "--controls", "random_mask",
        "--device", "cpu", "--no-progress", "--name", "d"]
RUN = "{run}"  # stands for the run directory in a driver's argv


@dataclass(frozen=True)
class Driver:
    argv: tuple  # the command after `lottery`; RUN is replaced by the run directory
    results: str  # its results file in the run directory
    crash: str  # a crash point in the middle of its work
    damage: tuple  # stored files whose damage must be recomputed
    lock: str = ".lock"  # the lock it takes: the run's, or its own results file's
    needs_run: bool = False  # works on a finished IMP run (made first)
    rewrites: bool = False  # never reads its results file back (nothing trains): a rerun rewrites it whole


DRIVERS = {
    "run": Driver(("run", *BASE), "results.json", "train:level1#5", ("level_01/mask.npz", "level_01/final.pt")),
    "gradual": Driver(("gradual", *BASE, "--final-densities", "0.3", "--prune-every", "5"), "gradual.json",
                      "train:gradual:0.3#12", ("gradual.json",)),
    "prune-at-init": Driver(("prune-at-init", *BASE, "--strategies", "magnitude_init,random", "--densities", "0.3",
                             "--ablations", "shuffled"), "prune_at_init.json", "train:random:0.3#5",
                            ("prune_at_init.json", "prune_at_init/magnitude_init-0.3/mask.npz")),
    "stability": Driver(("stability", RUN, "--level", "1", "--points", "3", "--no-progress"), "stability.json",
                        "train:stability#40", ("stability.json",), ".stability.json.lock", True),
    "supermask": Driver(("supermask", RUN, "--densities", "0.5", "--criteria", "large_final,random",
                         "--no-progress"), "supermask.json", "write:supermask.json", ("supermask.json",),
                        ".supermask.json.lock", True, True),
    "transfer": Driver(("transfer", RUN, "--level", "1", "--seeds", "2", "--align", "none,sign", "--no-plot",
                        "--no-progress"), "transfer.json", "write:transfer.json#3", ("transfer.json",),
                       ".transfer.json.lock", True),
}


def test_every_registered_driver_has_a_row_here_and_a_subcommand(capsys):
    """A new driver is its module plus its registry entry: it then has a subcommand, `lottery list` names it, and
    this table must give it a row (the tests below are parametrized over it)."""
    # compare-inits writes a comparison directory of `run` trunks: its kill/resume and second-process guarantees are
    # tests/test_compare.py's and tests/test_grid.py's (a row here would need its own directory layout)
    # budget runs `run` trunks of another config (early-bird, adaptive): its kill/resume is tests/test_adaptive.py's
    # export, report, list and demo train nothing and write no results file of the run's (export: tests/test_export.py)
    assert set(DRIVERS) == set(REGISTRY) - {"compare-inits", "budget", "export", "report", "list", "demo"}
    for name, entry in REGISTRY.items():
        assert entry.options is None or entry.options.command == name
        assert build_parser().parse_args([name, *(["RUN"] if entry.study else [])]).command == name
    assert main(["list"]) == 0
    assert f"drivers (subcommands): {', '.join(sorted(REGISTRY))}" in capsys.readouterr().out


def test_a_driver_registered_anywhere_is_a_subcommand_with_no_edit_elsewhere(capsys):
    """The decorator in a driver's own module is all it takes: `lottery --help`, `lottery list`, its flags, its
    --config table and its entry point follow (registered here, in a test module, and removed after)."""
    from lottery.drivers.registry import register_driver
    from lottery.options import Options, int_option

    @dataclass(frozen=True)
    class EchoOptions(Options):
        command: ClassVar[str] = "echo-test"
        times: int = int_option(1, "how many times to say it", least=1)

    @register_driver("echo-test", "say the experiment's dataset (a test's driver)", options=EchoOptions,
                     report=lambda said, cfg, opts: said)
    def echo(cfg, opts: EchoOptions) -> str:
        return " ".join([cfg.dataset] * opts.times)

    try:
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "say the experiment's dataset (a test's driver)" in capsys.readouterr().out
        assert main(["list"]) == 0
        assert "echo-test" in capsys.readouterr().out.split("drivers (subcommands): ")[1]
        assert main(["echo-test", "--dataset", "synthetic", "--times", "2"]) == 0
        assert capsys.readouterr().out == "synthetic synthetic\n"
        with pytest.raises(ValueError, match="already registered"):
            register_driver("echo-test", "again")(echo)
    finally:
        del REGISTRY["echo-test"]
    assert "echo-test" not in build_parser().format_help()


CASES = [(name, target) for name, d in DRIVERS.items() for target in d.damage]
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["lottery.cli", "lottery.drivers.imp", "tests.fault_helpers"])


def _run_dir(out: Path) -> Path:
    return out / config_from_args(build_parser().parse_args(["run", *BASE, "--out", str(out)])).run_name()


def _argv(driver: Driver, out: Path) -> list[str]:
    run = str(_run_dir(out))
    argv = [run if a == RUN else a for a in driver.argv]
    return argv if driver.needs_run else [*argv, "--out", str(out)]


def _clean(obj):
    """A results file without wall times and paths, for exact comparisons between two runs."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if k not in ("wall_time", "level_wall_time", "out", "run")}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _stored(out: Path, driver: Driver):
    return _clean(json.loads((_run_dir(out) / driver.results).read_text()))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished one-level IMP run, copied for the drivers that study a run."""
    out = tmp_path_factory.mktemp("base")
    assert main(["run", *BASE, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def references(tmp_path_factory, base_run):
    """Each driver's results file from an uninterrupted run (made once, on first use)."""
    made = {}

    def get(name: str):
        if name not in made:
            out = _fresh(tmp_path_factory.mktemp(name), DRIVERS[name], base_run)
            assert main(_argv(DRIVERS[name], out)) == 0
            made[name] = (out, _stored(out, DRIVERS[name]))
        return made[name]
    return get


def _fresh(where: Path, driver: Driver, base_run: Path) -> Path:
    out = where / "runs"
    if driver.needs_run:
        shutil.copytree(base_run, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", DRIVERS)
def test_killed_driver_resumes_to_the_uninterrupted_results(tmp_path, base_run, references, name):
    driver = DRIVERS[name]
    _, reference = references(name)
    out = _fresh(tmp_path, driver, base_run)
    child = _FORKSERVER.Process(target=run_cli_with_crash, args=(driver.crash, _argv(driver, out)))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL, f"{name} was not killed at {driver.crash}"

    assert main(_argv(driver, out)) == 0
    assert _stored(out, driver) == reference
    leftovers = [p.name for p in _run_dir(out).rglob(".*.tmp") if not p.name.startswith(".config.json.")]
    assert leftovers == []


@pytest.mark.parametrize("name", DRIVERS)
def test_second_process_is_refused_in_one_line(tmp_path, base_run, capsys, name):
    driver = DRIVERS[name]
    out = _fresh(tmp_path, driver, base_run)
    if not driver.needs_run:
        RunDir.for_config(config_from_args(build_parser().parse_args(["run", *BASE, "--out", str(out)])))
    run = _run_dir(out)
    before = sorted(p.name for p in run.iterdir())
    with RunDir(run, lock=driver.lock):  # another process's lock: flock conflicts across open files
        assert main(_argv(driver, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is in use by pid" in err, err
    assert not (run / driver.results).exists()
    assert sorted(p.name for p in run.iterdir() if p.name != driver.lock) == sorted(set(before) - {driver.lock})


@pytest.mark.parametrize("name,target", CASES, ids=[f"{n}:{t}" for n, t in CASES])
def test_damaged_stored_file_is_recomputed(tmp_path, references, capfd, name, target):
    driver = DRIVERS[name]
    ref_out, reference = references(name)
    out = tmp_path / "runs"
    shutil.copytree(ref_out, out)
    (_run_dir(out) / target).write_bytes(b"PK\x03\x04 not what it was")

    assert main(_argv(driver, out)) == 0
    assert _stored(out, driver) == reference
    said = capfd.readouterr()
    assert driver.rewrites or "damaged" in said.err + said.out, "recomputed without a line saying why"


@pytest.mark.parametrize("name", [n for n, d in DRIVERS.items() if d.lock != ".lock"])
def test_run_studies_go_on_while_the_imp_run_holds_its_lock(tmp_path, base_run, references, name):
    """stability and supermask only read the run's files: their own lock, not the trunk's."""
    driver = DRIVERS[name]
    out = _fresh(tmp_path, driver, base_run)
    with RunDir(_run_dir(out)):
        assert main(_argv(driver, out)) == 0
    assert _stored(out, driver) == references(name)[1]


def test_a_run_study_leaves_the_trunks_temp_files_and_the_trunk_leaves_its(tmp_path, base_run):
    """Each lock holder removes only its own writers' stale temp files: a study's in-flight stability.json temp
    survives the IMP run taking the trunk's lock, and the other way round."""
    out = _fresh(tmp_path, DRIVERS["stability"], base_run)
    run = _run_dir(out)
    ours, theirs = run / ".stability.json.abc.tmp", run / ".results.json.abc.tmp"
    with RunDir(run, lock=".stability.json.lock"):
        ours.write_text("{}")
        theirs.write_text("{}")
        with RunDir(run):  # the trunk's lock: its own stale temp goes, the study's stays
            pass
        assert ours.exists() and not theirs.exists()
    theirs.write_text("{}")
    with RunDir(run, lock=".stability.json.lock"):  # the study's lock: its own stale temp goes
        pass
    assert not ours.exists() and theirs.exists()


@pytest.mark.parametrize("name", [n for n in DRIVERS if n != "run"])
def test_one_process_drivers_refuse_torchrun_in_one_line(tmp_path, monkeypatch, capsys, name):
    """Only IMP splits batches over torchrun's processes; the others say so instead of N processes racing."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(_argv(DRIVERS[name], tmp_path / "runs")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "without torchrun" in err, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.json"))
