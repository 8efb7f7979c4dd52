"""Fault injection for the crash tests: kill the process at a named point, as a power cut or ``kill -9`` would.

Set ``LOTTERY_CRASH_AT=name`` (or ``name#N``: the N-th time that point is reached) and the process SIGKILLs
itself there — no ``finally`` blocks, no atexit handlers, no flushing, exactly like a real kill. Unset, every
point costs one environment lookup. The points:

- ``train:levelN`` / ``train:levelN:reinit`` / ``train:levelN:random_mask``: every training step of that run
  (``train:level1#10`` = after the 10th update of level 1's ticket);
- ``prune:levelN``: level N's mask is computed but not yet saved;
- ``write:FILENAME`` (config.json, init.pt, rewind.pt, final.pt, mask.npz, results.json): the new content is
  complete in its temp file, the old file is still in place (``write:final.pt#2`` = the second final.pt written).
"""
from __future__ import annotations

import os
import signal

ENV = "LOTTERY_CRASH_AT"
_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``LOTTERY_CRASH_AT`` names this point (and this is the N-th time it is reached)."""
    target = os.environ.get(ENV)
    if target is None or not target.startswith(name):
        return
    point, _, nth = target.partition("#")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)


class CrashingProgress:
    """A progress bar (or None) whose every ``update`` is the crash point ``name``: a kill in mid-training."""

    def __init__(self, bar, name: str):
        self._bar, self._name = bar, name

    def update(self, n: int = 1) -> None:
        crash_point(self._name)
        if self._bar is not None:
            self._bar.update(n)

    def __getattr__(self, attr):  # set_postfix and the rest go to the real bar; a no-op without one
        if self._bar is None:
            return lambda *a, **k: None
        return getattr(self._bar, attr)


def crash_progress(bar, name: str | None):
    """``bar`` itself in normal use (or when ``name`` is None); wrapped so each training step is crash point
    ``name`` when one is armed. Callers name their points explicitly, never from a progress bar's label."""
    return bar if name is None or ENV not in os.environ else CrashingProgress(bar, name)
