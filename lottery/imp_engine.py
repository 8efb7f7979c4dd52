"""The IMP engine: ONE level loop under ``lottery run`` (the built-in trainer) and ``find_tickets`` (your loop).

Level 0 trains the dense network; level L prunes level L-1's trained weights (``level_mask``), rewinds the
survivors and trains them again, then trains the controls at the same densities. Every finished training run is
written to the run directory before the next starts, and every stage is skipped when its files are intact, so a
killed experiment resumes where it stopped and reproduces the numbers of an uninterrupted one. What trains a run is
a :class:`Trainer`: the session's built-in loop (lottery/drivers/imp.py) or the user's ``train_fn``
(lottery/drivers/find_tickets.py); the engine owns the rest — resume and damaged files, masks, rewind states,
controls, exhaustion and divergence, and ``results.json``.

The loop is a generator (``Engine.levels``) that yields what each level still has to train before it records it, so
a caller can train those runs ahead in fused passes, even across experiments (lottery/executors/lockstep.py); the
level loop then records them exactly as it would have trained them itself.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from lottery.contract import check_pruned_zero, load_init
from lottery.errors import CorruptFileError, MaskMismatchError, RewindCheckError
from lottery.masks import Mask
from lottery.errors import StructureExhausted
from lottery.pruning import collapsed_layers
from lottery.pruning.structure import limit_note
from lottery.pruning.calibrate import scale_to_fan_in
from lottery.pruning.early_bird import EarlyBird
from lottery.pruning.level_plan import LevelPlan, Waiting, end_record, plan_level
from lottery.rewind import rewind_state, snapshot
from lottery.storage.rundir import RunDir
from lottery.testing import crash_point
from lottery.train import derived_seed
from lottery.imp_levels import ImpSettings, level_mask, random_control, step_density  # noqa: F401  (public here too)

@dataclass
class Arm:
    """One training run of a level (``name``: ticket, reinit or random_mask): its start state and mask, the step it
    starts at (late rewinding) and, for level 0's ticket under ``step:K``, the step whose weights it keeps."""

    name: str
    start: dict
    mask: Mask
    start_step: int = 0
    snapshot_step: int | None = None
    early_bird: EarlyBird | None = None  # an early-bird search: stop once the next mask settles (step_hook)


@dataclass
class Trained:
    """A finished training run: the trained ``model``, its results entry part (``status``, ``test_accuracy``,
    ``early_stop_step``, ...), the mask it trained under, and the step-K weights when the arm asked for them."""

    model: nn.Module
    summary: dict
    mask: Mask
    rewind_state: dict | None = None


class Trainer(ABC):
    """What the engine needs from whoever trains: ``train`` one arm of one level, ``redraw`` an init, and
    ``initial_state``; the rest has defaults for one process. ``model`` is the network; ``init_state`` (the
    weights level 0 starts from) is set by the engine, which writes and checks ``init.pt`` and checks after every
    training run that pruned weights stayed zero (lottery/contract.py) — a trainer does neither."""

    model: nn.Module
    init_state: dict | None = None
    tracker: Any = None
    collapse_hint: str = ""  # how to keep weights in every layer, said when a layer collapses
    mask_mismatch: str | None = None  # a stored mask that does not fit the model: None recomputes it, else refused
    given_init = False  # initial_state() is the init itself (a stored init.pt must equal it), not a fresh draw
    culprit: str | None = None  # the loop blamed for pruned weights left non-zero (None: the built-in one)
    culprit_fix: str = ""  # appended to that message
    contract_error: type[Exception] = RewindCheckError  # raised when a run breaks the contract

    @abstractmethod
    def train(self, level: int, arm: Arm) -> Trained:
        """Rewind to ``arm.start`` under ``arm.mask`` (verified) and train; the engine checks the result."""

    @abstractmethod
    def redraw(self, seed: int) -> dict:
        """The reinit control's start: ``init.pt``, then what the init scheme draws drawn afresh with ``seed``."""

    @abstractmethod
    def initial_state(self) -> dict:
        """What ``init.pt`` holds when the run has none (the init drawn with the run's seed, or the given one)."""

    def prunable(self) -> Mask:
        """The all-kept mask over the model's prunable weights."""
        return Mask.ones_like(self.model)

    def prune_data(self):
        return None

    def barrier(self, start: dict, end: dict, points: int) -> dict | None:
        """The error barrier on the line from ``start`` to ``end`` (lottery/barrier.py), or None when this trainer
        cannot evaluate (a user's own loop)."""
        return None

    def step_flops(self, mask: Mask) -> tuple[float, float] | None:
        """(mask-aware, dense-equivalent) training FLOPs of one step under ``mask`` (lottery/cost.py), or None
        when unknown (a user's own loop): the cost of a run is then counted in its steps alone."""
        return None

    def share(self, make: Callable[[], Any]) -> Any:  # several processes: rank 0 decides, the others receive
        return make()

    def share_state(self, make: Callable[[], dict]) -> dict:
        return make()

    def share_mask(self, make: Callable[[], Mask]) -> Mask:
        return make()

    def say(self, line: str) -> None:
        pass

    def level_bar(self, total: int):
        return nullcontext()


@dataclass
class Pending:
    """A level's unfinished runs, yielded by :meth:`Engine.levels`. ``names`` are in recording order; whoever trains
    one ahead (``engine.arm``; lottery/passes.py schedules which) puts ``trained[name] = Trained(...)``."""

    engine: "Engine"
    level: int
    names: list[str]
    trained: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


class Engine:
    """One IMP experiment in ``rundir``: the results so far (``results``, ``header`` when there are none), the
    level loop, its masks, rewind states and controls, trained by ``trainer``. ``siblings(level)``: the entries of
    the seeds judged together with this run (lottery/drivers/plan_seeds.py), or a Waiting."""

    siblings: Callable[[int], dict | str] | None = None

    def __init__(self, trainer: Trainer, rundir: RunDir, settings: ImpSettings, header: dict):
        self.trainer, self.rundir, self.settings = trainer, rundir, settings
        self.model = trainer.model
        self.init_state = trainer.share_state(
            lambda: load_init(rundir, trainer.initial_state, trainer.model.state_dict(), given=trainer.given_init))
        trainer.init_state = self.init_state
        self.rewind_step = settings.rewind_step
        self.results = trainer.share(lambda: rundir.load_results_strict() or {**header, "status": "running", "levels": []})

    # -- masks and rewind states --------------------------------------------------------------------------
    def stored_mask(self, level: int) -> Mask | None:
        """Level ``level``'s mask from disk, or None; a damaged one is a CorruptFileError (recomputed), one that does
        not fit the model is refused when the trainer says so (``mask_mismatch``), else treated as damaged."""
        path = self.rundir.level_dir(level) / "mask.npz"
        if not path.exists():
            return None
        prunable = self.trainer.prunable()
        strict = self.trainer.mask_mismatch is not None
        mask = Mask.load(path, like=None if strict else prunable)
        try:
            if sorted(mask) != sorted(prunable):
                raise MaskMismatchError(f"it covers {len(mask)} weights named like '{next(iter(mask), '')}', the "
                                        f"model's prunable weights are {len(prunable)} named like "
                                        f"'{next(iter(prunable))}'")
            mask.check_fits(self.model)
        except MaskMismatchError as e:
            if strict:
                raise MaskMismatchError(f"{path} does not fit this model ({e}); {self.trainer.mask_mismatch}") from None
            raise CorruptFileError(str(e)) from None
        return mask.to(next(iter(prunable.values())).device)

    def plan(self, level: int) -> LevelPlan | str:
        """Level ``level``'s plan (its parent level and fraction; lottery/pruning/level_plan.py), or why IMP ends
        before it, from the finished entries before it (and the sibling seeds', or a Waiting until they have them)."""
        others = self.siblings(level) if self.siblings is not None and level > 0 else None
        if isinstance(others, Waiting):
            return others
        return plan_level(self.settings, [e for e in self.results["levels"] if e["level"] < level], level, others,
                          step_density(self.settings, self.mask))

    def mask(self, level: int) -> Mask:
        """Level 0 is dense; level L prunes its parent's final weights (level L-1 unless planned otherwise; saved,
        so recomputing is deterministic)."""
        if level == 0:
            return self.trainer.prunable()
        try:
            stored = self.stored_mask(level)
            if stored is not None:
                return stored
        except CorruptFileError as e:
            self.trainer.say(f"level {level}: {e}; recomputing the mask")
        plan = self.plan(level)
        previous = self.mask(plan.parent)
        self.model.load_state_dict(self._final(plan.parent))
        mask = level_mask(self.settings, self.model, previous, level, self.trainer.prune_data(), plan.fraction)
        crash_point(f"prune:level{level}")
        self.rundir.save_mask(level, mask)
        return mask

    def _final(self, level: int) -> dict:
        state = self.rundir.load_state(f"level_{level:02d}/final.pt", like=self.init_state)
        if state is None:
            raise CorruptFileError(f"{self.rundir.level_dir(level) / 'final.pt'} is missing; delete level_{level:02d}")
        return state

    def rewind_state(self, level: int) -> dict:
        return rewind_state(self.rundir, self.init_state, self.settings.rewind, level)

    def start_step(self, level: int) -> int:
        """Late rewinding (step:K): runs that start from the step-K weights train steps K..T of level 0's
        schedule and data order, as Frankle et al. 2020 do, not T more steps from a restarted schedule."""
        return self.rewind_step if (level > 0 and self.rewind_step is not None) else 0

    def arm(self, level: int, name: str) -> Arm:
        """Where one of the level's runs starts and its mask (on every rank under torchrun). Every control starts
        from ``init.pt`` (reinit: then redraws what the init scheme draws; random_mask: the ticket's rewind state)."""
        t = self.trainer
        mask = t.share_mask(lambda: self.mask(level))
        if name == "ticket":
            snap = self.rewind_step if level == 0 else None
            return Arm(name, t.share_state(lambda: self.rewind_state(level)), mask, self.start_step(level), snap,
                       self._early_bird(level, mask))
        seed = derived_seed(self.settings.seed, name, level)
        if name == "reinit":  # same mask, a fresh draw of the same init scheme, trained from step 0
            return Arm(name, self._control_start(lambda: t.redraw(seed), mask), mask)
        # random_mask: same per-layer counts (and structure), same rewind state (and step)
        def random_mask() -> Mask:
            s = self.settings
            return random_control(self.model, mask, s.seed, level, s.structure, s.structure_options)

        drawn = t.share_mask(random_mask)
        return Arm(name, self._control_start(lambda: self.rewind_state(level), drawn), drawn, self.start_step(level))

    def _control_start(self, make: Callable[[], dict], mask: Mask) -> dict:
        """A control's start state; under ``control_init = "sparse"`` scaled to the mask's surviving fan-in."""
        if self.settings.control_init == "sparse":
            return self.trainer.share_state(lambda: scale_to_fan_in(make(), mask))
        return self.trainer.share_state(make)

    def _early_bird(self, level: int, mask: Mask) -> EarlyBird | None:
        """A search level's stopping rule: the candidate is the mask the next level would prune to from the current
        weights (the same pruner; the level's own fraction, the adaptive schedule's next one being unknown)."""
        plan = self.plan(level) if level > 0 and self.settings.early_bird else None
        if not isinstance(plan, LevelPlan) or not plan.search:
            return None
        data = self.trainer.prune_data()
        return EarlyBird(lambda model: level_mask(self.settings, model, mask, level + 1, data, plan.fraction),
                         self.settings.early_bird_epsilon, self.settings.early_bird_window, within=mask)

    # -- what is finished ---------------------------------------------------------------------------------
    def finished(self, level: int) -> dict | None:
        """The level's results entry if it and its files are intact; a damaged level is trained again."""
        entry = next((e for e in self.results["levels"] if e["level"] == level), None)
        if entry is None:
            return None
        try:
            mask = self.stored_mask(level)
            if mask is None and level > 0:
                raise CorruptFileError("mask missing")
            if mask is not None and mask.num_kept != entry.get("num_kept", mask.num_kept):  # valid, but not this one
                path = self.rundir.level_dir(level) / "mask.npz"
                path.replace(path.with_name("mask.npz.wrong"))  # kept for a look; mask() computes the right one
                raise CorruptFileError(f"mask keeps {mask.num_kept} weights, results.json says "
                                       f"{entry.get('num_kept')}; moved it to mask.npz.wrong")
            self._final(level)
            if level == 0 and self.rewind_step is not None and self.rundir.load_state(
                    "rewind.pt", like=self.init_state) is None:
                raise CorruptFileError("rewind.pt missing")
        except CorruptFileError as e:
            self.trainer.say(f"level {level}: stored files are damaged ({e}); recomputing this level")
            # Later levels keep their results: their masks are on disk and retraining this level reproduces its
            # files bit for bit. Only lr rewinding starts the next level from this level's final weights.
            keep_later = self.settings.rewind != "lr"
            self.results["levels"] = [e for e in self.results["levels"]
                                      if e["level"] < level or (keep_later and e["level"] > level)]
            return None
        return entry

    def unfinished(self, level: int, entry: dict | None) -> list[str]:
        """The level's runs still to train, in recording order: the ticket, then the controls (level 0 has none;
        a diverged ticket gets none)."""
        search = level > 0 and self.settings.early_bird and getattr(self.plan(level), "search", False)
        controls = list(self.settings.controls) if level > 0 and not search else []  # a mask search has no ticket
        if entry is None:
            return ["ticket", *controls]
        return [c for c in controls if c not in entry["controls"]] if entry["status"] == "ok" else []

    def exhausted(self, level: int, entry: dict) -> str | None:
        """Why pruning cannot go on after ``level`` (a layer with no weights left, or a next level that would
        remove nothing), or None. A next level finished by an older version is kept."""
        if any(e["level"] == level + 1 for e in self.results["levels"]):
            return None
        if entry.get("collapsed_layers"):
            layer = entry["collapsed_layers"][0]
            return f"layer {layer} has no weights left (layer collapse){self.trainer.collapse_hint}"
        plan = self.plan(level + 1)
        if plan.fraction == 0:  # a searched mask trained again: prunes nothing by design
            return None
        try:
            following = self.mask(level + 1)
        except StructureExhausted as e:  # an n:m mask cannot go below n of every m
            return str(e)
        parent = next(e for e in self.results["levels"] if e["level"] == plan.parent)
        if following.num_kept == parent.get("num_kept", -1):
            return (f"level {level + 1} would prune nothing ({parent.get('num_kept')} weights left, too few for "
                    f"prune fraction {plan.fraction:.3g} to remove one)")
        return None

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self, train_ahead: Callable[[list[Pending]], None] | None = None) -> dict:
        """Every level in turn; ``train_ahead([pending])`` may train some of a level's runs first (fused)."""
        for pending in self.levels():
            if train_ahead is not None:
                train_ahead([pending])
        return self.results

    def levels(self) -> Iterator[Pending]:
        """The level loop. At each level with unfinished training runs it yields a :class:`Pending` and pauses: the
        caller may train some of them meanwhile. Resumed, it trains the rest one at a time and records them all,
        then prunes — the same files, in the same order, as when nothing was trained ahead. ``self.results`` holds
        the outcome when the loop ends: status ``complete``, ``diverged`` (a ticket's weights or loss went
        non-finite: their magnitudes mean nothing, pruning stops) or ``exhausted`` (nothing left to prune)."""
        t, why, level = self.trainer, None, 0
        with t.level_bar(self.settings.levels + 1) as levels_bar:
            while True:
                entry = t.share(lambda: self.finished(level))
                names = self.unfinished(level, entry)
                if names:
                    pending = Pending(self, level, names)
                    yield pending
                    entry = self._finish_level(pending, entry)
                if levels_bar is not None and hasattr(levels_bar, "update"):
                    levels_bar.update(1)
                    levels_bar.set_postfix(density=f"{entry['density']:.3f}", acc=f"{entry['test_accuracy'] or 0:.3f}")
                if entry["status"] != "ok":
                    break
                ends = t.share(lambda: self.plan(level + 1))
                if isinstance(ends, Waiting):  # seeds judged together: resumed once they have finished this level
                    self.results["waiting"] = str(ends)
                    return self._save()
                if isinstance(ends, str):  # the plan ends here (the fixed one: after `levels` levels)
                    if self.settings.planned:
                        self.results.update(end_record(ends))
                    break
                why = t.share(lambda: self.exhausted(level, entry))
                if why:
                    t.say(f"IMP stops after level {level}: {why}")
                    break
                level += 1
        diverged = any(e["status"] != "ok" for e in self.results["levels"])
        self.results.pop("waiting", None)
        self.results["status"] = "diverged" if diverged else "exhausted" if why else "complete"
        if why:
            self.results["exhausted"] = why
        self._save()

    def _finish_level(self, pending: Pending, entry: dict | None) -> dict:
        """Train the runs not trained ahead, one at a time, and record each (controls only while the ticket is
        ok: a diverged ticket's controls are dropped even when trained ahead); returns the level's entry."""
        level = pending.level
        for name in pending.names:
            if entry is not None and entry["status"] != "ok":
                break
            trained = pending.trained.pop(name, None)
            if trained is None:
                arm = self.arm(level, name)
                trained = self.trainer.train(level, arm)
                if arm.early_bird is not None:
                    trained.summary["early_bird"] = arm.early_bird.record()
            self.check(level, name, trained)
            self._count_flops(trained)
            if name == "ticket":
                if trained.rewind_state is not None:  # level 0's step-K weights: what later levels rewind to
                    self.rundir.save_state("rewind.pt", trained.rewind_state)
                entry = self._record_ticket(level, trained, pending.started)
            else:
                entry["controls"][name] = trained.summary
                self._save()
                self._track(level, name, trained.mask, entry["controls"][name])
        pending.trained.clear()
        return entry

    def check(self, level: int, name: str, trained: Trained) -> None:
        """Every run the engine records, trained here or ahead: pruned weights stayed zero (a diverged run's weights
        are not finite, so it is recorded as diverged instead)."""
        if trained.summary.get("status", "ok") == "ok":
            t = self.trainer
            check_pruned_zero(trained.model, trained.mask, f"level {level} {name}", culprit=t.culprit,
                              fix=t.culprit_fix, error=t.contract_error)

    def _count_flops(self, trained: Trained) -> None:
        """Add the run's training FLOPs (mask-aware and dense-equivalent) to its summary, when the trainer knows
        them: the cost every report shows (lottery/stats.py ``run_costs``)."""
        per_step = self.trainer.step_flops(trained.mask)
        if per_step is not None and trained.summary.get("steps") is not None:
            trained.summary["flops"] = per_step[0] * trained.summary["steps"]
            trained.summary["dense_flops"] = per_step[1] * trained.summary["steps"]

    def _record_ticket(self, level: int, trained: Trained, started: float) -> dict:
        """Save the trained ticket (final.pt, then its results entry); returns the entry."""
        mask = trained.mask
        self.rundir.save_state(f"level_{level:02d}/final.pt", trained.model.state_dict())
        if level == 0:
            self.rundir.save_mask(0, mask)
        entry = {"level": level, "density": mask.density, "num_kept": mask.num_kept,
                 "layer_density": mask.layer_density(), "collapsed_layers": collapsed_layers(mask),
                 **trained.summary, "controls": {}, "level_wall_time": time.perf_counter() - started,
                 "threads": torch.get_num_threads()}  # sums over other thread counts round differently
        limited = level > 0 and limit_note(self.mask(level - 1), self.settings.prune_fraction, self.settings.structure,
                                           self.settings.structure_options, self.settings.layer_fractions)
        if limited:  # an n:m level stopped at the structure's limit: said, and kept with the level
            entry["limited"] = limited
            self.trainer.say(f"level {level}: {limited}")
        if self.settings.planned and level > 0:
            self._record_plan(level, entry, trained)
        self.results["levels"] = [e for e in self.results["levels"] if e["level"] != level] + [entry]
        self._save()
        self._track(level, "ticket", mask, entry)
        return entry

    def _record_plan(self, level: int, entry: dict, trained: Trained) -> None:
        """A planned level's entry: its parent and fraction; a search's stopped weights are no trained ticket, so
        their test figures move under ``early_bird`` and the entry reports none; the barrier to its parent."""
        plan = self.plan(level)
        entry.update(plan.record())
        if plan.search:
            search = {k: entry.pop(k, None) for k in ("test_accuracy", "test_loss", "early_stop_test_accuracy")}
            entry["early_bird"] = {**entry.get("early_bird", {}), "search_test": search}
            entry.update({k: None for k in search})
        if self.settings.barrier_points:
            entry["barrier"] = self.trainer.barrier(self._final(plan.parent), snapshot(trained.model),
                                                    self.settings.barrier_points)

    def _track(self, level: int, name: str, mask: Mask, summary: dict) -> None:
        if self.trainer.tracker is not None:
            self.trainer.tracker.summary(level, name, mask, summary)

    def _save(self) -> None:
        self.results["levels"].sort(key=lambda e: e["level"])
        self.rundir.save_results(self.results)
