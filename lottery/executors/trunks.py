"""Trunks: the independent IMP runs of a grid (a comparison's (variant, seed) pairs, a run's seeds), each an
ordinary ``run_imp`` run directory — reused when finished, resumed when not — trained one after another, in
lockstep with their runs fused (lottery/executors/lockstep.py), or in worker processes / a job array
(lottery/executors/grid.py). ``run_trunks`` picks the way from ``jobs``, ``executor`` and ``pack``.
"""
from __future__ import annotations

from pathlib import Path

from lottery import distributed
from lottery.config import Config
from lottery.drivers import imp
from lottery.executors.grid import check, run_grid
from lottery.executors.lockstep import run_lockstep
from lottery.session import data_key
from lottery.storage.rundir import RunDir, RunLockedError


def run_trunks(configs: dict, base: Config, data, pack: int, *, jobs: int = 1, executor: str = "local",
               submitit: dict | None = None, folder: Path | None = None, log=None) -> dict:
    """Train (or reuse) every trunk of ``configs`` (key -> Config sharing ``base``'s data, loaded as ``data``);
    returns ``{key: {"results": ..., "run_dir": ...}}``. ``jobs`` > 1 or ``executor="submitit"``: worker
    processes / a job array (``folder`` holds submitit's files); else ``pack`` > 1: lockstep; else one by one."""
    local = not distributed.from_env(base.device).active
    if jobs != 1 or executor != "local":
        return _run_grid(configs, jobs, executor, submitit, folder or Path(base.out) / "submitit", base.progress, log,
                         pack if executor == "local" and local else 1)
    if pack > 1 and local:
        return _run_lockstep(configs, base, pack, data, base.progress, log)
    return _run_serial(configs, log)


def _describe(key) -> str:
    """A trunk's name in the log: ``(variant, seed)`` or a bare seed."""
    return f"{key[0]} seed {key[1]}" if isinstance(key, tuple) else f"seed {key}"


def run_finished(cfg: Config) -> dict | None:
    """The results of ``cfg``'s run when it already finished (complete or diverged), without touching its files."""
    path = RunDir.path_for(cfg)
    if not (path / "results.json").is_file():
        return None
    run = RunDir.for_config(cfg)  # refuses a directory holding another experiment
    results = run.load_results_strict()
    return results if results and results.get("status") in ("complete", "diverged", "exhausted") else None


def _run_serial(configs: dict, log) -> dict:
    """One trunk after another, each reused when it finished already."""
    done = {}
    for i, (key, cfg) in enumerate(configs.items(), start=1):
        finished = run_finished(cfg) is not None
        if log:
            log(f"[{i}/{len(configs)}] {_describe(key)}: "
                + (f"finished run reused ({cfg.run_name()})" if finished else f"running IMP ({cfg.run_name()})"))
        if not finished:
            try:
                done[key] = imp.run_imp(cfg)
            except RunLockedError:  # another process trains it: _collect comes back to it after the others
                pass
    return _collect(configs, done, log)


def _run_grid(configs: dict, jobs, executor, submitit, folder: Path, progress: bool, log, pack: int = 1) -> dict:
    """The unfinished trunks through lottery.executors.grid (worker processes or submitit); every trunk's results."""
    check(jobs, executor, submitit)
    pending = {key: cfg for key, cfg in configs.items() if run_finished(cfg) is None}
    if log:
        log(f"grid: {len(configs) - len(pending)} of {len(configs)} runs finished already, {len(pending)} to run "
            f"({executor}, {jobs} worker{'s' if jobs != 1 else ''}"
            + (f", each in lockstep with up to {pack} networks per fused pass)" if pack > 1 else ")"))
    done = dict(zip(pending, run_grid(list(pending.values()), jobs=jobs, executor=executor, submitit=submitit,
                                      folder=folder, progress=progress, log=log, pack=pack))) if pending else {}
    return _collect(configs, done, log)


def _run_lockstep(configs: dict, base: Config, pack: int, data, progress: bool, log) -> dict:
    """The unfinished trunks level by level together, their runs fused up to ``pack`` per pass (lottery/executors/lockstep.py)."""
    pending = {key: cfg for key, cfg in configs.items() if run_finished(cfg) is None}
    if log:
        log(f"lockstep: {len(configs) - len(pending)} of {len(configs)} runs finished already, {len(pending)} to run "
            f"level by level, up to {pack} networks per fused pass")
    done = run_lockstep(pending, pack, datasets={data_key(base): data}, progress=progress, log=log) if pending else {}
    return _collect(configs, done, log)


def _collect(configs: dict, done: dict, log) -> dict:
    """Every trunk's results and run directory: run now (``done``), finished before, or — held by another process
    all along (a second grid on this runs directory) — waited for, then reused or resumed."""
    return {key: {"results": done.get(key) or run_finished(cfg) or imp.run_imp_when_free(cfg, log),
                  "run_dir": str(RunDir.path_for(cfg))} for key, cfg in configs.items()}
