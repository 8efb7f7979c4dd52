"""Run directories: ``runs/<name>-<hash>/`` with ``config.json``, ``results.json``, ``init.pt`` and ``level_NN/``.

Every file is written atomically and read safely; a finished stage is never recomputed, so starting the same
config again resumes where the last process stopped. A lock keeps two processes from writing one run at once.
"""
from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import torch

from lottery import __version__
from lottery.config import Config, from_dict
from lottery.errors import ConfigError, CorruptFileError, LotteryError
from lottery.storage.atomic import load_json, load_tensors, save_json, save_tensors
# valid_level / valid_run / valid_values: also imported from here by the drivers that check their own files
from lottery.storage.validate import entry_name, entry_problems, valid_level, valid_run, valid_values  # noqa: F401
from lottery.masks import Mask


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


class RunLockedError(LotteryError):
    """Another process holds this run directory."""


def refuse_symlink(path: Path, root: Path) -> Path:
    """``path`` if no part of it below ``root`` is a symbolic link: writing, truncating or deleting through
    one would reach outside the run directory."""
    part = path
    while part != root and part != part.parent:
        if part.is_symlink():
            raise CorruptFileError(f"{part} is a symbolic link; a run directory holds only its own files and "
                                   "folders — remove the link")
        part = part.parent
    return path


# What a run (or compare-inits) directory keeps: its settings, measurements, weights, masks, trackers, locks.
_OWNED_SUFFIXES = (".json", ".pt", ".npz", ".pkl", ".yaml", ".lock", ".tmp")
_OWNED_FOLDERS = ("tensorboard", "mlruns", "submitit")


def refuse_run_file(path: str | os.PathLike, flag: str) -> None:
    """Refuse an output path (``flag`` names the option) that is one of a run's own files: writing there would
    replace the run's measurements, weights or settings. Links and ``..`` are followed first; new files of other
    kinds inside a run (a CSV, an exported ticket) are fine."""
    real = Path(os.path.realpath(path))
    run = next((d for d in real.parents if (d / "config.json").is_file() or (d / "summary.json").is_file()), None)
    if run is None:
        return
    rel = real.relative_to(run)
    if (any(part.startswith(".") or ".damaged" in part for part in rel.parts) or rel.parts[0] in _OWNED_FOLDERS
            or real.suffix in _OWNED_SUFFIXES):
        raise ConfigError(f"{flag} {path} belongs to the run {run} (it would replace {rel}); write it outside the "
                          "run directory or under another name")


def set_aside(path: Path) -> Path:
    """Rename a damaged file to ``NAME.damaged`` (``NAME.damaged.1``, ... when one exists): kept, never
    overwritten, out of the way of its recomputation. Returns the new path."""
    aside, n = path.with_name(path.name + ".damaged"), 0
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged.{n}")
    os.replace(path, aside)
    return aside


def check_writable(path: Path) -> None:
    """Fail now, in one line, rather than after the long work that ends in a write."""
    if not os.access(path, os.W_OK | os.X_OK):
        raise LotteryError(f"{path} is not writable; copy the run directory somewhere writable (or fix its "
                           "permissions) and run this there")


def _holder(lock_fd: int) -> str:
    """The pid the lock's holder wrote into the lock file."""
    return os.pread(lock_fd, 32, 0).decode(errors="replace").strip() or "another process"


class RunDir:
    """One experiment's directory. Use as a context manager to hold its lock while writing."""

    def __init__(self, path: str | os.PathLike, lock: str = ".lock"):
        self.path = Path(path)
        self.lock_name = lock  # ".lock": the run's trunk; ".NAME.lock": one driver's own results file
        self._lock_fd: int | None = None

    def for_driver(self, results_file: str) -> "RunDir":
        """This run seen by a driver that only reads the run's files and writes ``results_file`` (stability,
        supermask): its own lock, so two such processes never interleave their writes, while the IMP run (the
        trunk's ``.lock``) may go on."""
        return RunDir(self.path, lock=f".{results_file}.lock")

    # -- opening ------------------------------------------------------------------------------------------
    @staticmethod
    def path_for(cfg: Config) -> Path:
        """Where ``cfg``'s run directory is (``<out>/<name>-<hash>``), without creating or checking it."""
        return Path(cfg.out) / cfg.run_name()

    @classmethod
    def for_config(cls, cfg: Config) -> "RunDir":
        """The directory of ``cfg``: created with its config.json, or checked against the stored one."""
        return cls.for_settings(cls.path_for(cfg), cfg.hashed_settings(), cfg.to_dict(), drift=cfg.drift_from)

    @classmethod
    def for_settings(cls, path: str | os.PathLike, hashed: dict, config: dict, *, drift=None,
                     **extra) -> "RunDir":
        """The directory at ``path`` for settings whose results-changing part is ``hashed`` (what its name's hash
        covers): created with config.json (``config``, ``extra``), or checked against the stored settings;
        ``drift(stored_config)`` lists settings whose defaults changed since (refused)."""
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
            drift = drift(stored["config"] if isinstance(stored.get("config"), dict) else {}) if drift else None
            if drift:  # same non-default settings, but a default changed since this run was made
                name, old, new = drift[0]
                raise ConfigError(
                    f"{run.path} was made with {name} = {old!r}, which is now {new!r} (a default changed); it "
                    "cannot resume under other settings: `lottery report` still reads it, use another --out or --name"
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
        # O_NOFOLLOW: a planted .lock symlink must not let us truncate the file it points to
        lock = self.path / self.lock_name
        try:
            self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if not lock.is_symlink():
                raise
            raise CorruptFileError(f"{lock} is a symbolic link, refused ({e.strerror}); remove it") from None
        if not stat.S_ISREG(os.fstat(self._lock_fd).st_mode):
            os.close(self._lock_fd)
            self._lock_fd = None
            raise CorruptFileError(f"{lock} is not a regular file; remove it")
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(self._lock_fd)
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RunLockedError(f"{self.path} is in use by pid {holder}; wait for it to finish or stop it") from None
        linked = [p for p in self.path.iterdir() if p.is_symlink() and p.is_dir()]  # level_NN, prune_at_init, ...
        if linked:
            self.__exit__()
            refuse_symlink(linked[0], self.path)
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)
        # Temp files of a killed writer: never renamed into place, so never read; only the lock holder may
        # remove them (config.json's are written before the lock is taken, so they are left alone). A driver's
        # lock covers its own results file's temp files only.
        own = self.lock_name[1:-len(".lock")] if self.lock_name != ".lock" else None
        stale = [*self.path.glob(f".{own}.*.tmp")] if own else [*self.path.glob(".*.tmp"),
                                                                *self.path.glob("level_*/.*.tmp")]
        for tmp in stale:
            target = tmp.name[1:].rsplit(".", 2)[0]  # .NAME.<random>.tmp
            if own is None and (tmp.parent / f".{target}.lock").exists():
                continue  # a file written under its own driver lock (stability.json): not the trunk's to remove
            if not tmp.name.startswith(".config.json.") and not tmp.parent.is_symlink():
                tmp.unlink(missing_ok=True)
        return self

    def wait_unlocked(self, on_wait=None) -> None:
        """Return once no process holds this directory's lock; when one does, ``on_wait(its pid)`` first. (Two grids
        on one runs directory: the second waits for the first to finish a trunk, then reuses or resumes it.)"""
        try:
            fd = os.open(self.path / ".lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # no lock file: nobody holds it (a planted link is refused when the lock is taken)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(_holder(fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            os.close(fd)  # releases the lock taken here

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- results ------------------------------------------------------------------------------------------
    def _read_results(self) -> tuple[Path, dict] | None:
        """results.json as a dict with a ``levels`` list (entries unchecked), or None when there is none."""
        path = self.path / "results.json"
        if not path.exists():
            return None
        keep = "restore it from a copy: it holds the run's only record of its measurements"
        results = load_json(path, fix=keep)
        if not isinstance(results, dict) or not isinstance(results.get("levels"), list):
            raise CorruptFileError(f"{path} is not a lottery results file (no list of levels); {keep}")
        return path, results

    def load_results_strict(self) -> dict | None:
        """results.json for resuming or building on it (the engine, the drivers that read a run's levels): every
        entry must be valid, else a one-line CorruptFileError naming the first bad one; None when there is none.

        Strict vs lenient is the only difference from ``read_results_lenient``; whoever only looks at a run
        (reports, tables, DataFrames, plots) reads it leniently, and users want ``lt.load_results`` (a DataFrame
        of one or many runs, read leniently)."""
        read = self._read_results()
        if read is None:
            return None
        path, results = read
        for e in results["levels"]:
            for what, why in entry_problems(e):
                raise CorruptFileError(f"{path}: {entry_name(e, what)} is not valid ({why}); correct or remove "
                                       "that entry by hand (the other levels' measurements are in this file)")
        return results

    def read_results_lenient(self, note=None) -> dict | None:
        """results.json for looking at (reports, tables, DataFrames, plots): a bad entry is left out — a level, or
        only its curve or one control — with one line to ``note`` (stderr by default) naming them; the rest is read.
        Never use it to resume or build on a run: ``load_results_strict`` refuses what this skips."""
        read = self._read_results()
        if read is None:
            return None
        path, results = read
        levels, skipped = [], []
        for e in results["levels"]:
            problems = entry_problems(e)
            skipped += [f"{entry_name(e, what)} ({why})" for what, why in problems]
            if problems and problems[0][0] == "level":
                continue
            bad = {what for what, _ in problems}
            if bad:
                e = {k: v for k, v in e.items() if not (k == "curve" and "curve" in bad)}
                e["controls"] = {k: v for k, v in e.get("controls", {}).items() if str(k) not in bad}
            levels.append(e)
        if skipped:
            (note or _stderr)(f"lottery: warning: {path}: skipped {'; '.join(skipped)}; the rest is read")
        return {**results, "levels": levels}

    # the earlier names, kept for scripts and notebooks: they say less than the ones above
    load_results = load_results_strict
    read_results = read_results_lenient

    def save_results(self, results: dict) -> None:
        save_json(refuse_symlink(self.path / "results.json", self.path), results)

    def driver_results(self, name: str, check, fresh, *, note=None) -> dict:
        """A driver's own results file (``gradual.json``, ``stability.json``, ...), read for resuming.

        Missing: ``fresh()``. Damaged (not JSON, or ``check`` refuses it): set aside as ``NAME.damaged`` — never
        deleted, whatever it held stays on disk — with one line to ``note`` (stderr by default), and the driver
        recomputes from ``fresh()``: its entries are derived from the run's files, so nothing finished is lost.
        Written back with ``save_json`` (atomic)."""
        path = refuse_symlink(self.path / name, self.path)
        if not path.exists():
            return fresh()
        try:
            stored = load_json(path)
            ok = check(stored)
        except CorruptFileError:
            ok = False
        if ok:
            return stored
        aside = set_aside(path)
        (note or _stderr)(f"lottery: note: {path} was damaged (set aside as {aside.name}); its entries are recomputed")
        return fresh()

    # -- tensors ------------------------------------------------------------------------------------------
    def level_dir(self, level: int) -> Path:
        return refuse_symlink(self.path / f"level_{level:02d}", self.path)

    def save_state(self, relpath: str, state: dict[str, torch.Tensor]) -> None:
        save_tensors(refuse_symlink(self.path / relpath, self.path).parent / Path(relpath).name, state)

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

    def load_mask(self, level: int, like=None) -> Mask | None:
        """The level's stored mask, or None; with ``like`` (a model), names and shapes are checked before any
        bits are read."""
        path = self.level_dir(level) / "mask.npz"
        return Mask.load(path, like=like) if path.exists() else None
