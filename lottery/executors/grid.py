"""Grid executor: the independent (variant, seed) trunks of a comparison in local worker processes or on SLURM.

Each trunk is one ordinary ``run_imp`` run directory, locked by its RunDir while a worker trains it, so workers
share the runs directory safely; a worker killed mid-run leaves its run resumable (started again, the grid reuses
what finished and resumes the rest), and the caller builds the summary only once every trunk is done. Two grids
on one runs directory share it too: a worker that finds a trunk held by the other grid moves on, and at the end
its grid waits for that trunk and reuses it (tests/test_grid.py).

- ``local``: ``jobs`` spawned worker processes, each with ``torch.set_num_threads(cores // jobs)``. Spawned
  workers import the script that started the grid: a script needs the ``if __name__ == "__main__":`` guard.
  With ``pack`` > 1 the trunks are dealt round-robin into ``jobs`` groups and each worker advances its group in
  lockstep, its runs fused up to ``pack`` per pass (lottery/executors/lockstep.py): on a 2-core CPU, two
  single-thread processes of fused passes are the fastest way through a grid (benchmarks/RESULTS.md).
- ``submitit``: a job array through submitit (``pip install 'lottery[grid]'``); settings come from the TOML's
  ``[submitit]`` table (``cluster`` = slurm / local / debug picks the backend; the rest go to
  ``update_parameters``, e.g. ``slurm_partition``, ``timeout_min``, ``cpus_per_task``).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Sequence

from lottery.config import Config
from lottery.errors import ConfigError, LotteryError, on_sigterm

EXECUTORS = ("local", "submitit")
LOST = (ConnectionError, EOFError)  # what a call through a dead multiprocessing manager's proxy raises
WORKER_DIED = ("a grid worker died mid-run (killed or out of memory); run the same command again to resume: "
               "finished runs are kept and the interrupted one resumes")


def check_jobs(jobs: object) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be an integer >= 1 (worker processes), got {jobs!r}")
    return jobs


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_trunk(cfg: Config, threads: int | None = None) -> dict | None:
    """One trunk in a worker: its share of the cores, no per-run progress bars (the grid has one bar). None when
    another process holds the run: the worker moves on, and the grid comes back to it at the end."""
    import torch

    from lottery.drivers.imp import run_imp
    from lottery.storage.rundir import RunLockedError

    if threads:
        torch.set_num_threads(threads)
    # under submitit, whose own handler ignores SIGTERM: unwind like Ctrl-C (the run's lock is released; it resumes)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run_imp(cfg.replace(progress=False))
    except RunLockedError:
        return None


def run_group(cfgs: Sequence[Config], pack: int, threads: int | None = None, ticks=None) -> list[dict | None]:
    """Trunks in one worker, in lockstep with up to ``pack`` fused networks per pass; results in the order of
    ``cfgs`` (None for a trunk another process holds). ``ticks`` (a queue) gets one item per trunk-level done."""
    import torch

    from lottery.executors.lockstep import run_lockstep

    if threads:
        torch.set_num_threads(threads)
    configs = dict(enumerate(cfgs))

    def on_round(n: int) -> None:
        try:
            ticks.put(n)
        except (OSError, EOFError):  # the grid's manager died: the grid is over, this worker's runs resume later
            raise LotteryError(WORKER_DIED) from None

    done = run_lockstep(configs, pack, on_round=on_round if ticks is not None else None)
    return [done.get(i) for i in configs]


def check(jobs: object, executor: str = "local", submitit: dict | None = None) -> None:
    """Refuse bad grid settings up front (before anything runs), each with one line."""
    check_jobs(jobs)
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if submitit is not None and not isinstance(submitit, dict):
        raise ConfigError(f"submitit settings must be a [submitit] table in the config file, got {submitit!r}")
    if executor == "submitit":
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            _executor(submitit or {}, Path(folder))


def run_grid(configs: Sequence[Config], *, jobs: int = 1, executor: str = "local", submitit: dict | None = None,
             folder: Path | None = None, progress: bool = True, log: Callable[[str], None] | None = None,
             pack: int = 1) -> list[dict]:
    """Run every config's IMP experiment (in order of ``configs``); returns their results in that order.
    ``pack`` > 1 (local workers only): each worker runs its share of the trunks in lockstep, fused.

    A run another process holds (a second grid on the same runs directory) is skipped by its worker; once the
    others are done, this process waits for the holder (one ``log`` line) and then reuses the run it finished,
    or resumes it had the holder died.
    """
    from lottery.drivers.imp import run_imp_when_free

    check(jobs, executor, submitit)
    if executor == "submitit":
        results = _submitit(configs, submitit or {}, folder or Path(configs[0].out) / "submitit")
    else:
        results = _local_packed(configs, jobs, pack, progress) if pack > 1 else _local(configs, jobs, progress)
    return [r if r is not None else run_imp_when_free(cfg.replace(progress=False), log)
            for r, cfg in zip(results, configs)]


def _local(configs: Sequence[Config], jobs: int, progress: bool) -> list[dict | None]:
    from tqdm.auto import tqdm

    threads = max(1, _cores() // jobs)
    results: list[dict | None] = [None] * len(configs)
    bar = tqdm(total=len(configs), desc="grid", unit="run", dynamic_ncols=True, disable=not progress)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_trunk, cfg, threads): i for i, cfg in enumerate(configs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
    except BrokenProcessPool:
        raise LotteryError(WORKER_DIED) from None
    except BaseException:  # Ctrl-C, SIGTERM: stop the workers now (their runs resume), not after the queue
        _stop(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return results


def _local_packed(configs: Sequence[Config], jobs: int, pack: int, progress: bool) -> list[dict | None]:
    """``jobs`` workers, each advancing its round-robin share of the trunks in lockstep; one bar of trunk-levels."""
    from tqdm.auto import tqdm

    threads = max(1, _cores() // jobs)
    groups = [list(range(len(configs)))[j::jobs] for j in range(jobs)]
    groups = [g for g in groups if g]
    results: list[dict | None] = [None] * len(configs)
    bar = tqdm(total=sum(c.levels + 1 for c in configs), desc="grid", unit="level", dynamic_ncols=True,
               disable=not progress)
    ctx = multiprocessing.get_context("spawn")
    manager = ctx.Manager()
    ticks = manager.Queue()
    pool = ProcessPoolExecutor(max_workers=len(groups), mp_context=ctx)
    try:
        futures = {pool.submit(run_group, [configs[i] for i in g], pack, threads, ticks): g for g in groups}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(ticks, bar)
            for future in finished:
                group = futures[future]
                for i, result in zip(group, future.result()):
                    results[i] = result
        _drain(ticks, bar)
        bar.update(bar.total - bar.n)  # trunks that stopped early (diverged, exhausted) skip their last levels
    except (BrokenProcessPool, *LOST) as e:  # a worker, or the manager of the progress queue, died
        _stop(pool)
        raise LotteryError(WORKER_DIED) from e
    except BaseException:
        _stop(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _shutdown(manager)
        bar.close()
    return results


def _shutdown(manager) -> None:
    """Stop the manager; one that was killed has nothing left to stop."""
    try:
        manager.shutdown()
    except LOST:
        pass


def _drain(ticks, bar) -> None:
    import queue

    while True:
        try:
            bar.update(ticks.get_nowait())
        except queue.Empty:
            return


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and kill the workers: a run killed mid-training resumes like any killed run.
    (ProcessPoolExecutor has no public way to stop a running task; shutdown would wait for it.)"""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.kill()


def _executor(settings: dict, folder: Path):
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor submitit needs submitit: pip install 'lottery[grid]'") from None
    settings = dict(settings)
    cluster = settings.pop("cluster", None)
    if cluster not in (None, "slurm", "local", "debug"):
        raise ConfigError(f"[submitit] cluster must be slurm, local or debug, got {cluster!r}")
    _check_submitit_values(settings)
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    try:
        ex.update_parameters(**settings)
    except (NameError, ValueError, TypeError, AssertionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"[submitit] setting not accepted ({first}); see submitit's AutoExecutor "
                          "parameters") from None
    return ex


# Sizes submitit passes on to the scheduler: checked here, since submitit asserts (a traceback) or defers the
# error to the scheduler. Whole numbers, except memory; zero GPUs is the one zero that means something.
_SUBMITIT_SIZES = {"timeout_min": (int, 1), "cpus_per_task": (int, 1), "mem_gb": (float, 0), "nodes": (int, 1),
                   "tasks_per_node": (int, 1), "gpus_per_node": (int, 0), "signal_delay_s": (int, 0)}


def _check_submitit_values(settings: dict) -> None:
    for key, (kind, low) in _SUBMITIT_SIZES.items():
        if key not in settings:
            continue
        v = settings[key]
        number = isinstance(v, int) or kind is float and isinstance(v, float)
        if isinstance(v, bool) or not number or v < low or kind is float and not v > 0:
            what = "a positive number of GB" if kind is float else f"a whole number >= {low}"
            raise ConfigError(f"[submitit] {key} must be {what}, got {v!r}")


def _submitit(configs: Sequence[Config], settings: dict, folder: Path) -> list[dict | None]:
    ex = _executor(settings, folder)
    threads = settings.get("cpus_per_task")
    jobs = []
    try:
        jobs = ex.map_array(run_trunk, list(configs), [threads] * len(configs))
        out = []
        for cfg, job in zip(configs, jobs):
            try:
                out.append(job.result())
            except Exception as e:  # submitit wraps the worker's error; its last line is the message
                if isinstance(e, LotteryError):
                    raise
                lines = [line for line in str(e).strip().splitlines() if line.strip()]
                raise LotteryError(f"grid job {job.job_id} ({cfg.run_name()}) failed: {lines[-1] if lines else e}; "
                                   f"its log is in {folder}; run the same command again to resume") from None
        return out
    except BaseException:  # Ctrl-C, SIGTERM, a failed job: stop the local jobs too, as --jobs stops its workers
        if settings.get("cluster") == "local":
            _cancel(jobs)
        raise


def _cancel(jobs, wait_s: float = 20.0) -> None:
    """Stop local submitit jobs and wait (a little) until they ended: the launcher's SIGTERM does not reach
    them, so without this they would go on training and hold their trunks' locks."""
    import time

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        running = [job for job in jobs if job.state == "RUNNING"]
        if not running:
            return
        # A local job's id is its controller's pid; the controller passes SIGTERM to its task. Sent again every
        # second: a task still starting up runs under submitit's own handler, which ignores SIGTERM.
        for job in running:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(job.job_id), signal.SIGTERM)
        pause = time.monotonic() + 1.0
        while time.monotonic() < min(pause, deadline) and any(job.state == "RUNNING" for job in running):
            time.sleep(0.1)
    for job in jobs:
        if job.state == "RUNNING":  # deaf to SIGTERM: SIGINT to the controller stops its task (SIGKILL after 1 s)
            job.cancel(check=False)
