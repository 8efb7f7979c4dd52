"""Run directories: ``runs/<name>-<hash>/`` with ``config.json``, ``results.json``, ``init.pt`` and ``level_NN/``.

Every file is written atomically and read safely; a finished stage is never recomputed, so starting the same
config again resumes where the last process stopped. A lock keeps two processes from writing one run at once.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import torch

from lottery import __version__
from lottery.config import Config, from_dict
from lottery.errors import ConfigError, CorruptFileError, LotteryError
from lottery.io import load_json, load_tensors, save_json, save_tensors
from lottery.masks import Mask


class RunLockedError(LotteryError):
    """Another process holds this run directory."""


def _number_or_none(v: object) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _valid_entry(e: object) -> bool:
    """A level entry of results.json with the fields the driver and the report read, of the right types."""
    runs = [e, *e["controls"].values()] if isinstance(e, dict) and isinstance(e.get("controls"), dict) else [None]
    return (
        isinstance(e, dict) and type(e.get("level")) is int and _number_or_none(e.get("density"))
        and e.get("density") is not None
        and all(isinstance(r, dict) and isinstance(r.get("status"), str) and _number_or_none(r.get("test_accuracy"))
                and _number_or_none(r.get("early_stop_step"))
                and all(isinstance(c, list) and len(c) == 3 for c in r.get("curve", [])) for r in runs)
    )


class RunDir:
    """One experiment's directory. Use as a context manager to hold its lock while writing."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None

    # -- opening ------------------------------------------------------------------------------------------
    @classmethod
    def for_config(cls, cfg: Config) -> "RunDir":
        """The directory of ``cfg``: created with its config.json, or checked against the stored one."""
        return cls.for_settings(Path(cfg.out) / cfg.run_name(), cfg.hashed_settings(), cfg.to_dict())

    @classmethod
    def for_settings(cls, path: str | os.PathLike, hashed: dict, config: dict, **extra) -> "RunDir":
        """The directory at ``path`` for settings whose results-changing part is ``hashed`` (what its name's hash
        covers): created with config.json (``config``, ``extra``), or checked against the stored settings."""
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        stored_path = run.path / "config.json"
        if stored_path.exists():
            stored = load_json(stored_path)
            if not isinstance(stored, dict) or not isinstance(stored.get("hashed"), dict):
                raise CorruptFileError(f"{stored_path} is not a lottery run config; restore it, or delete it if "
                                       "this directory holds exactly this experiment")
            if stored.get("hashed") != hashed:
                raise ConfigError(
                    f"{run.path} holds a different experiment (same hash, other settings); "
                    "use another --name or --out"
                )
        else:
            save_json(stored_path, {"hashed": hashed, "config": config, "version": __version__, **extra})
        return run

    def config(self) -> Config:
        """The Config stored in this directory (for ``report`` and resuming)."""
        stored = self.settings(full=True)
        if stored.get("driver") == "find_tickets":
            raise ConfigError(f"{self.path} was made by find_tickets around your own model and loop, so it has no "
                              "lottery config to rebuild the model from; load level_NN/final.pt into your model")
        return from_dict({**stored["config"], "progress": False, "device": "auto"},
                         source=str(self.path / "config.json"))

    def settings(self, full: bool = False) -> dict:
        """The settings stored in config.json as a dict (any driver's, ``find_tickets`` too); ``full``: the whole
        file (``hashed``, ``config``, ``version``, ...)."""
        path = self.path / "config.json"
        if not path.is_file():
            raise ConfigError(f"{self.path} is not a run directory (no config.json); pass a directory under runs/")
        stored = load_json(path)
        if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
            raise CorruptFileError(f"{path} is not a lottery run config; the directory is damaged")
        return stored if full else stored["config"]

    def __enter__(self) -> "RunDir":
        self._lock_fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RunLockedError(f"{self.path} is in use by pid {holder}; wait for it to finish or stop it") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)
        # Temp files of a killed writer: never renamed into place, so never read; only the lock holder may
        # remove them (config.json's are written before the lock is taken, so they are left alone).
        for tmp in [*self.path.glob(".*.tmp"), *self.path.glob("level_*/.*.tmp")]:
            if not tmp.name.startswith(".config.json."):
                tmp.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- results ------------------------------------------------------------------------------------------
    def load_results(self) -> dict | None:
        path = self.path / "results.json"
        if not path.exists():
            return None
        results = load_json(path)
        levels = results.get("levels") if isinstance(results, dict) else None
        if not isinstance(levels, list) or not all(_valid_entry(e) for e in levels):
            raise CorruptFileError(f"{path} is not a lottery results file; restore it, or delete it to retrain "
                                   "every level (the masks and init.pt on disk are reused)")
        return results

    def save_results(self, results: dict) -> None:
        save_json(self.path / "results.json", results)

    # -- tensors ------------------------------------------------------------------------------------------
    def level_dir(self, level: int) -> Path:
        return self.path / f"level_{level:02d}"

    def save_state(self, relpath: str, state: dict[str, torch.Tensor]) -> None:
        save_tensors(self.path / relpath, state)

    def load_state(self, relpath: str, like: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor] | None:
        """A saved state dict, or None if absent; with ``like``, names and shapes must match it."""
        path = self.path / relpath
        if not path.exists():
            return None
        state = load_tensors(path)
        if like is not None:
            if set(state) != set(like) or any(state[k].shape != like[k].shape or state[k].dtype != like[k].dtype
                                              for k in like):
                raise CorruptFileError(f"{path} does not fit this model (names, shapes or dtypes differ); delete it")
        return state

    def save_mask(self, level: int, mask: Mask) -> None:
        mask.save(self.level_dir(level) / "mask.npz")

    def load_mask(self, level: int) -> Mask | None:
        path = self.level_dir(level) / "mask.npz"
        return Mask.load(path) if path.exists() else None
