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
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.7, 0.0, 0.0))
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
