"""Atomic, safe file I/O: every file is written to a temp file then renamed, and tensors load with weights_only.

A run killed mid-write leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from lottery.errors import CorruptFileError
from lottery.testing import crash_point


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path`` (same directory, so rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a plain open() would respect the umask
    finally:
        os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        crash_point(f"write:{path.name}")  # the temp file is complete; the target is still the old one
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_regular(path: str | os.PathLike, what: str = "file"):
    """``open(path, "rb")`` refusing anything but a regular file: a FIFO or device would block or never end.

    Opened non-blocking (a FIFO opens at once), checked with fstat, so nothing is read before the check.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except IsADirectoryError:
        raise CorruptFileError(f"{path} is a directory, not a {what}; remove it") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptFileError(f"{path} is not a regular file (a directory, FIFO, device or socket), refused "
                                   "unread; remove it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def save_json(path: str | os.PathLike, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=False, allow_nan=True)
            f.write("\n")

    atomic_write(path, write)


def load_json(path: str | os.PathLike, fix: str = "delete or restore it") -> Any:
    """A JSON file's content; not UTF-8, not JSON, nested too deep or not a regular file: one line naming it,
    ending in ``fix``."""
    with open_regular(path, "JSON file") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{path} is not UTF-8 text (byte {e.start}); {fix}") from None
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); {fix}") from None
    except RecursionError:
        raise CorruptFileError(f"{path} is nested too deeply to be a lottery file; {fix}") from None


def finite(v: object, lo: float = -math.inf, hi: float = math.inf) -> bool:
    """A real number (not bool), finite, in [lo, hi]: what every stored measurement must be."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Save a flat ``name -> tensor`` dict (moved to CPU) atomically."""
    cpu = {k: v.detach().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: torch.save(cpu, tmp))


def torch_load(path: str | os.PathLike, fix: str) -> Any:
    """``torch.load`` with ``weights_only=True`` (a planted pickle cannot execute code) onto the CPU; a file it
    refuses is a one-line CorruptFileError ending in ``fix``. The only place lottery calls ``torch.load``."""
    with open_regular(path, "tensor file") as f:
        return _torch_load(f, path, fix)


def _torch_load(f, path, fix: str) -> Any:
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would be a second line of output
            warnings.simplefilter("ignore")
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, unsupported global: all mean "not our file"
        text = str(e).strip()
        # torch's multi-line message suggests weights_only=False; the reason is all a user should see
        code = re.search(r"WeightsUnpickler error: (.*?)(?: Please use|\n|$)", text)
        reason = f"it holds pickled code, not loaded: {code.group(1)}" if code else (
            text.splitlines()[0] if text else type(e).__name__)
        raise CorruptFileError(f"{path} is not a readable tensor file ({reason}); {fix}") from None


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a ``name -> tensor`` dict with ``weights_only=True``: a planted pickle cannot execute code."""
    obj = torch_load(path, "delete it to recompute")
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CorruptFileError(f"{path} does not hold a name -> tensor dict; delete it to recompute")
    return obj
