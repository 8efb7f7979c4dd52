"""How many threads a CPU run uses: never more than the cores free to the process.

torch starts one OpenMP thread per core. On a machine whose cores are busy with other work, every parallel
region then waits at its barrier for a thread the kernel has descheduled, and a small network's step slows down
many times over (measured on the busy 2-core machine: LeNet-5's first convolution at batch 64 took 31 ms on two
threads against 8.1 ms on one; a whole `lottery run` spent 133 ms per SGD update of 62k weights on two threads).
So a process that is free to choose (no ``OMP_NUM_THREADS``, no thread count set by a grid worker) takes the
cores that the other work running *now* leaves idle, at least one: the kernel's count of runnable tasks
(``procs_running`` in /proc/stat, less this process), averaged over a few samples a few ms apart. Not the
1-minute load average: it lags by a minute either way, so a run started just after a long job ended took one
thread on an idle machine (measured: `lottery run` 1.4x slower right after a 150 s job), and one started just
after a job began took them all. Where /proc/stat is missing (not Linux) the 1-minute load average stands in.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

import torch

_fitted = False


def cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


SAMPLES, SAMPLE_GAP_S = 6, 0.004


def running_elsewhere(samples: int = SAMPLES, gap: float = SAMPLE_GAP_S, stat: str = "/proc/stat") -> float | None:
    """Tasks other than this one that are runnable now: ``procs_running`` less 1 (the reader), averaged over
    ``samples`` reads ``gap`` seconds apart; None where the file or the field is missing."""
    counts = []
    for i in range(samples):
        try:
            with open(stat) as f:
                line = next((ln for ln in f if ln.startswith("procs_running")), None)
        except OSError:
            return None
        if line is None:
            return None
        counts.append(max(0, int(line.split()[1]) - 1))
        if i + 1 < samples:
            time.sleep(gap)
    return sum(counts) / len(counts)


def other_load() -> float:
    """The CPU demand of other work now (``running_elsewhere``), else the 1-minute load average, else 0."""
    now = running_elsewhere()
    if now is not None:
        return now
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average here: assume the machine is ours
        return 0.0


def free_cores(load: float | None = None, total: int | None = None) -> int:
    """Cores that ``load`` (default: ``other_load()``) leaves idle (rounded), between 1 and ``total``."""
    total = cores() if total is None else total
    load = other_load() if load is None else load
    return max(1, min(total, round(total - load)))


def fit_threads() -> int:
    """Lower torch's thread count to the free cores, once per process, unless the user chose it
    (``OMP_NUM_THREADS`` / ``LOTTERY_THREADS`` set, or ``torch.set_num_threads`` called below the core count).
    Returns the thread count in use."""
    global _fitted
    chosen = os.environ.get("LOTTERY_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if os.environ.get("LOTTERY_THREADS"):
        torch.set_num_threads(max(1, int(os.environ["LOTTERY_THREADS"])))
    elif not _fitted and not chosen and torch.get_num_threads() >= cores():
        torch.set_num_threads(min(torch.get_num_threads(), free_cores()))
    _fitted = True
    return torch.get_num_threads()


@contextmanager
def using_threads(n: int | None):
    """Run the block on ``n`` threads (None: as it is), then restore the count: to retrain a recorded run bit for
    bit, whose sums were split over that many threads (another count rounds them differently)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
