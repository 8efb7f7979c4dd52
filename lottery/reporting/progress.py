"""Progress display: tqdm bars on a terminal, plain lines (no cursor codes) in a log file or a pipe.

A scheduler's log keeps every carriage return a bar draws; there each training run is one line when it ends and
each IMP level one line with its density and accuracy.
"""
from __future__ import annotations

import sys
import time


def progress_bar(total: int, desc: str, leave: bool = False):
    """A tqdm bar when stderr is a terminal, else a :class:`PlainProgress`."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=leave, dynamic_ncols=True)
    return PlainProgress(total, desc, leave)


class PlainProgress:
    """The part of tqdm's interface lottery uses, written as whole lines: one per update of a ``leave`` bar
    (with its postfix), one at the end of any other."""

    def __init__(self, total: int, desc: str, leave: bool = False, file=None):
        self.total, self.desc, self.leave, self.n = total, desc, leave, 0
        self.file = file or sys.stderr
        self._postfix, self._pending, self._started = "", False, time.perf_counter()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self._flush()
        self.n += n
        self._pending = self.leave

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        values = {**(ordered_dict or {}), **values}
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        self._flush()

    def close(self) -> None:
        if self._pending or (not self.leave and self.n):
            self._pending = True
            self._flush(f" ({time.perf_counter() - self._started:.1f} s)")

    def _flush(self, tail: str = "") -> None:
        if self._pending:
            post = f" {self._postfix}" if self._postfix else ""
            print(f"{self.desc}: {self.n}/{self.total}{post}{tail}", file=self.file, flush=True)
            self._pending = False
