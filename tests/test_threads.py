"""Threads never exceed the cores free to the process (lottery/threads.py), unless the user chose a count."""
import torch

import lottery.threads as threads


def test_free_cores_follow_the_load_average():
    assert threads.free_cores(load=0.0, total=2) == 2
    assert threads.free_cores(load=1.2, total=2) == 1
    assert threads.free_cores(load=14.0, total=2) == 1  # a busy machine: one thread, never zero
    assert threads.free_cores(load=3.4, total=8) == 5


def test_fit_threads_lowers_the_count_once_unless_the_user_chose(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LOTTERY_THREADS", raising=False)
        monkeypatch.setattr(threads, "cores", lambda: 4)
        monkeypatch.setattr(threads, "other_load", lambda: 2.7)
        monkeypatch.setattr(threads, "_fitted", False)
        torch.set_num_threads(4)
        assert threads.fit_threads() == 1  # 4 cores, load 2.7: one free
        torch.set_num_threads(4)
        assert threads.fit_threads() == 4  # once per process: a later call leaves it be
        monkeypatch.setattr(threads, "_fitted", False)
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        assert threads.fit_threads() == 4  # the user's choice stands
        monkeypatch.setenv("LOTTERY_THREADS", "2")
        assert threads.fit_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_load_is_what_runs_now_not_the_minute_average(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n")
    assert threads.running_elsewhere(samples=3, gap=0, stat=str(stat)) == 2.0  # less the reader itself
    stat.write_text("cpu  1 2 3\nprocs_running 1\n")
    assert threads.running_elsewhere(samples=2, gap=0, stat=str(stat)) == 0.0
    assert threads.running_elsewhere(stat=str(tmp_path / "missing")) is None
    stat.write_text("cpu  1 2 3\n")
    assert threads.running_elsewhere(samples=1, stat=str(stat)) is None
    # a long job that just ended leaves a high minute average: the run still takes the idle cores
    monkeypatch.setattr(threads, "running_elsewhere", lambda: 0.0)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert threads.free_cores(total=2) == 2
    monkeypatch.setattr(threads, "running_elsewhere", lambda: 1.0)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.free_cores(total=2) == 1  # a job that began a second ago is already counted
    monkeypatch.setattr(threads, "running_elsewhere", lambda: None)  # no /proc/stat: the minute average
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert threads.free_cores(total=2) == 1
