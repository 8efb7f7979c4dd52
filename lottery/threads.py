"""How many threads a CPU run uses: never more than the cores free to the process.

torch starts one OpenMP thread per core. On a machine whose cores are busy with other work, every parallel
region then waits at its barrier for a thread the kernel has descheduled, and a small network's step slows down
many times over (measured on the busy 2-core machine: LeNet-5's first convolution at batch 64 took 31 ms on two
threads against 8.1 ms on one; a whole `lottery run` spent 133 ms per SGD update of 62k weights on two threads).
So a process that is free to choose (no ``OMP_NUM_THREADS``, no thread count set by a grid worker) takes the
cores that the 1-minute load average leaves idle, at least one.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

_fitted = False


def cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores(load: float | None = None, total: int | None = None) -> int:
    """Cores the load average leaves idle (rounded), between 1 and ``total``."""
    total = cores() if total is None else total
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average here: assume the machine is ours
            load = 0.0
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
