"""The IMP driver: train dense, prune, rewind the survivors, retrain — level after level — with controls.

It knows nothing about specific models or data sets. Every finished training run is written to the run directory
before the next starts, so a killed experiment resumes exactly where it stopped and reproduces the numbers of an
uninterrupted one (every run's randomness comes from seeds derived from the config, never from global state).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from tqdm.auto import tqdm

from lottery import __version__
from lottery.config import Config, from_dict, validate
from lottery import distributed
from lottery.errors import CorruptFileError, MaskMismatchError, StructureExhausted
from lottery.testing import crash_point
from lottery.masks import Mask
from lottery.pruning import PRUNERS, collapsed_layers, prune_structured, random_structured_like
from lottery.storage.rundir import RunDir, RunLockedError
from lottery.session import Session, resolve_device  # noqa: F401  (resolve_device: a public name here before)
from lottery.train import derived_seed
from lottery.reporting.trackers import Tracker, open_tracker


def run_imp(config: Config | dict) -> dict:
    """Run (or resume) the IMP experiment of ``config``; returns ``results.json``'s content.

    >>> import tempfile, lottery as lt
    >>> results = lt.run_imp({"dataset": "synthetic", "levels": 1, "steps": 50, "controls": "none",
    ...                       "progress": False, "out": tempfile.mkdtemp()})
    >>> [round(e["density"], 2) for e in results["levels"]], results["status"]
    ([1.0, 0.8], 'complete')
    """
    cfg = config if isinstance(config, Config) else from_dict(config)
    validate(cfg)
    dist = distributed.from_env(cfg.device)  # under torchrun: this process's rank; otherwise a world of one
    run = dist.main_first(lambda: RunDir.for_config(cfg))
    if not dist.is_main:  # rank 0 alone holds the lock and writes the run directory
        return Experiment(cfg, distributed.Follower(run.path), dist).run()
    with open_experiment(cfg, run, dist) as experiment:
        return experiment.run()


def run_imp_when_free(cfg: Config, log=None) -> dict:
    """``run_imp`` of a run another process held when its turn came (a second grid on the same runs directory),
    said in one ``log`` line: waits while it is still held, then reuses what the holder finished (or resumes what
    it left, had it died)."""
    run = RunDir.for_config(cfg)
    said = []

    def say(what: str) -> None:
        if log and not said:
            log(f"{run.path} {what}")
        said.append(what)

    while True:
        run.wait_unlocked(lambda pid: say(f"is in use by pid {pid} (another grid on this runs directory?); waiting "
                                          "for it to finish, then reusing it"))
        say("was in use by another process (another grid on this runs directory?); reusing it now")
        try:
            return run_imp(cfg)
        except RunLockedError:  # a third process took it first: wait again
            continue


@contextmanager
def open_experiment(cfg: Config, run: RunDir | None = None, dist: distributed.Dist = distributed.SINGLE,
                    data=None) -> Iterator["Experiment"]:
    """An Experiment on ``cfg``'s run directory, its lock and tracker held while open (RunLockedError at once
    when another process holds it); ``data`` as for :class:`Session`."""
    run = run or RunDir.for_config(cfg)
    with run, open_tracker(cfg.log, run.path) as tracker:
        experiment = Experiment(cfg, run, dist, data=data)
        experiment.tracker = tracker
        yield experiment


class Experiment(Session):
    """IMP on a Session: the results written so far, the level loop, its controls and tracker. The loop is a
    generator (``levels``) that says what each level needs trained before it records it, so several experiments
    can advance together and train their runs fused (lottery/executors/lockstep.py); ``run`` drives it alone."""

    def __init__(self, cfg: Config, run: RunDir, dist: distributed.Dist = distributed.SINGLE, data=None):
        super().__init__(cfg, run, dist, data)
        self.results = dist.share_object(lambda: run.load_results() or {
            "config": cfg.to_dict(), "hash": cfg.hash(), "version": __version__, "status": "running", "levels": []})
        self.tracker = Tracker()  # no tracker; open_experiment sets the one cfg.log names

    def _mask(self, level: int) -> Mask:
        """Level 0 is dense; level L prunes level L-1's final weights (saved, so recomputing is deterministic)."""
        if level == 0:
            return Mask.ones_like(self.model)
        try:
            stored = self.rundir.load_mask(level, like=self.model)
            if stored is not None:
                stored.check_fits(self.model)
                return stored.to(self.device)
        except (CorruptFileError, MaskMismatchError) as e:  # pruning is deterministic: recompute it
            tqdm.write(f"level {level}: {e}; recomputing the mask")
        cfg = self.cfg
        prev_mask = self._mask(level - 1)
        prev_final = self.rundir.load_state(f"level_{level - 1:02d}/final.pt", like=self.init_state)
        self.model.load_state_dict(prev_final)
        if cfg.structure != "unstructured":  # whole units or n:m groups, checked exact (lottery/pruning/structure.py)
            mask = prune_structured(self.model, prev_mask, cfg.prune_fraction, cfg.structure, cfg.scope,
                                    cfg.layer_fractions, cfg.structure_options)
        else:
            mask = PRUNERS.get(cfg.strategy)(
                self.model, prev_mask, cfg.prune_fraction, scope=cfg.scope, layer_fractions=cfg.layer_fractions,
                seed=derived_seed(cfg.seed, "prune", level), data=self.data.train,
                **({"min_kept": cfg.min_kept_per_layer} if cfg.min_kept_per_layer else {}),
            )
        crash_point(f"prune:level{level}")
        self.rundir.save_mask(level, mask)
        return mask

    # -- the experiment -----------------------------------------------------------------------------------
    def _finished(self, level: int) -> dict | None:
        """The level's results entry if it and its files are intact; a damaged level is recomputed."""
        entries = [e for e in self.results["levels"] if e["level"] == level]
        if not entries:
            return None
        try:
            mask = self.rundir.load_mask(level, like=self.model)
            if mask is None and level > 0:
                raise CorruptFileError("mask missing")
            if mask is not None:
                mask.check_fits(self.model)
                if mask.num_kept != entries[0].get("num_kept", mask.num_kept):  # a valid mask, but not this one
                    path = self.rundir.level_dir(level) / "mask.npz"
                    path.replace(path.with_name("mask.npz.wrong"))  # kept for a look; _mask computes the right one
                    raise CorruptFileError(f"mask keeps {mask.num_kept} weights, results.json says "
                                           f"{entries[0].get('num_kept')}; moved it to {path.name}.wrong")
            if self.rundir.load_state(f"level_{level:02d}/final.pt", like=self.init_state) is None:
                raise CorruptFileError("final weights missing")
            if level == 0 and self.rewind_step is not None and self.rundir.load_state(
                    "rewind.pt", like=self.init_state) is None:
                raise CorruptFileError("rewind.pt missing")
        except (CorruptFileError, MaskMismatchError) as e:
            tqdm.write(f"level {level}: stored files are damaged ({e}); recomputing this level")
            # Later levels keep their results: their masks are on disk and retraining this level reproduces
            # its files bit for bit. Only lr rewinding starts the next level from this level's final weights.
            later = (lambda e: e["level"] > level) if self.cfg.rewind != "lr" else (lambda e: False)
            self.results["levels"] = [e for e in self.results["levels"] if e["level"] < level or later(e)]
            return None
        return entries[0]

    def _save(self) -> None:
        self.results["levels"].sort(key=lambda e: e["level"])
        self.rundir.save_results(self.results)

    def run(self) -> dict:
        """Every level in turn; with ``pack`` > 1 each level's runs train in fused passes (lottery/executors/lockstep.py)."""
        for pending in self.levels():
            if self.pack > 1:
                from lottery.executors.lockstep import train_ahead

                train_ahead([pending], self.pack, progress=self.progress)
        return self.results

    def levels(self) -> Iterator["Pending"]:
        """The level loop. At each level with unfinished training runs it yields a :class:`Pending` and pauses: the
        caller may train some of them meanwhile (fused, with other experiments' runs: lottery/executors/lockstep.py). Resumed,
        it trains the rest one at a time and records them all, then prunes — the same files, in the same order, as
        when nothing was trained ahead. ``self.results`` holds the outcome when the loop ends."""
        cfg = self.cfg
        why = None
        with self.bar(cfg.levels + 1, f"IMP {cfg.run_name()}", leave=True) as levels_bar:
            for level in range(cfg.levels + 1):
                entry = self.dist.share_object(lambda: self._finished(level))
                names = self._unfinished(level, entry)
                if names:
                    pending = Pending(self, level, names)
                    yield pending
                    entry = self._finish_level(pending, entry)
                if levels_bar is not None and hasattr(levels_bar, "update"):
                    levels_bar.update(1)
                    levels_bar.set_postfix(density=f"{entry['density']:.3f}", acc=f"{entry['test_accuracy'] or 0:.3f}")
                if entry["status"] != "ok":  # magnitudes of diverged weights mean nothing: stop pruning
                    break
                why = self.dist.share_object(lambda: self._exhausted(level, entry)) if level < cfg.levels else None
                if why:
                    tqdm.write(f"IMP stops after level {level}: {why}")
                    break
        diverged = any(e["status"] != "ok" for e in self.results["levels"])
        self.results["status"] = "diverged" if diverged else "exhausted" if why else "complete"
        if why:
            self.results["exhausted"] = why
        self._save()

    def _exhausted(self, level: int, entry: dict) -> str | None:
        """Why pruning cannot go on after ``level`` (a layer with no weights left, or a next level that would
        remove nothing), or None. Runs on rank 0; a next level finished by an older version is kept."""
        if any(e["level"] == level + 1 for e in self.results["levels"]):
            return None
        if entry.get("collapsed_layers"):
            return (f"layer {entry['collapsed_layers'][0]} has no weights left (layer collapse); "
                    "--min-kept-per-layer keeps some in every layer")
        try:
            following = self._mask(level + 1)
        except StructureExhausted as e:  # an n:m mask cannot go below n of every m
            return str(e)
        if following.num_kept == entry.get("num_kept", -1):
            return (f"level {level + 1} would prune nothing ({entry.get('num_kept')} weights left, too few for "
                    f"--prune-fraction {self.cfg.prune_fraction} to remove one)")
        return None

    # -- one level's training runs ------------------------------------------------------------------------
    def _unfinished(self, level: int, entry: dict | None) -> list[str]:
        """The level's runs still to train, in recording order: the ticket, then the controls (level 0 has none;
        a diverged ticket gets none)."""
        controls = list(self.cfg.controls) if level > 0 else []
        if entry is None:
            return ["ticket", *controls]
        return [c for c in controls if c not in entry["controls"]] if entry["status"] == "ok" else []

    def fusable(self, level: int, name: str) -> bool:
        """Whether the run can train in a fused pass: one process, from step 0, no snapshot mid-run (late
        rewinding's continued runs and level 0's rewind snapshot train alone)."""
        if self.dist.active:
            return False
        return name == "reinit" or (self.start_step(level) == 0 and (level > 0 or self.rewind_step is None))

    def arm(self, level: int, name: str) -> "Arm":
        """Where one of the level's runs starts and its mask (on every rank under torchrun)."""
        mask = self.shared_mask(lambda: self._mask(level))
        if name == "ticket":
            snap = self.rewind_step if level == 0 else None
            return Arm(name, self.from_main(lambda: self.rewind_state(level)), mask, self.start_step(level), snap)
        seed = derived_seed(self.cfg.seed, name, level)
        if name == "reinit":  # same mask, a fresh draw of the same init scheme, trained from step 0
            return Arm(name, self.from_main(lambda: self.fresh_init(seed)), mask)
        # random_mask: same per-layer densities and structure, same rewind state (and step)
        def random_mask() -> Mask:
            return random_structured_like(self.model, mask, seed, self.cfg.structure, self.cfg.structure_options)

        return Arm(name, self.from_main(lambda: self.rewind_state(level)), self.shared_mask(random_mask),
                   self.start_step(level))

    def _finish_level(self, pending: "Pending", entry: dict | None) -> dict:
        """Train the runs not trained ahead, one at a time, and record each (controls only while the ticket is
        ok: a diverged ticket's controls are dropped even when trained ahead); returns the level's entry."""
        level = pending.level
        for name in pending.names:
            if entry is not None and entry["status"] != "ok":
                break
            model, result, mask = pending.trained.pop(name, None) or self._train_arm(level, name)
            if name == "ticket":
                entry = self._record_ticket(level, mask, model, result, pending.started)
            else:
                entry["controls"][name] = result.summary()
                self._save()
                self.tracker.summary(level, name, mask, entry["controls"][name])
        pending.trained.clear()
        return entry

    def _train_arm(self, level: int, name: str) -> tuple:
        arm = self.arm(level, name)
        result = self.train_from(arm.start, arm.mask, f"level {level} {name}", snapshot_step=arm.snapshot_step,
                                 start_step=arm.start_step)
        if arm.snapshot_step is not None and result.rewind_state is not None:
            self.rundir.save_state("rewind.pt", result.rewind_state)
        return self.model, result, arm.mask

    def _record_ticket(self, level: int, mask: Mask, model, result, started: float) -> dict:
        """Save the trained ticket ``model`` (final.pt, then its results entry); returns the entry."""
        self.rundir.save_state(f"level_{level:02d}/final.pt", model.state_dict())
        if level == 0:
            self.rundir.save_mask(0, mask)
        entry = {"level": level, "density": mask.density, "num_kept": mask.num_kept,
                 "layer_density": mask.layer_density(), "collapsed_layers": collapsed_layers(mask),
                 **result.summary(), "controls": {},
                 "level_wall_time": time.perf_counter() - started}
        self.results["levels"] = [e for e in self.results["levels"] if e["level"] != level] + [entry]
        self._save()
        self.tracker.summary(level, "ticket", mask, entry)
        return entry


@dataclass
class Arm:
    """One training run of a level (``name``: ticket, reinit or random_mask): its start state and mask, and for
    late rewinding the step it starts at and the step whose weights level 0 keeps."""

    name: str
    start: dict
    mask: Mask
    start_step: int = 0
    snapshot_step: int | None = None


@dataclass
class Pending:
    """A level's unfinished runs, yielded by :meth:`Experiment.levels`. ``names`` are in recording order; whoever
    trains one ahead (``experiment.arm`` / ``fusable``) puts ``trained[name] = (model, result, mask)``."""

    experiment: Experiment
    level: int
    names: list[str]
    trained: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
