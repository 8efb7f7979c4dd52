"""The IMP driver: train dense, prune, rewind the survivors, retrain — level after level — with controls.

It knows nothing about specific models or data sets. Every finished training run is written to the run directory
before the next starts, so a killed experiment resumes exactly where it stopped and reproduces the numbers of an
uninterrupted one (every run's randomness comes from seeds derived from the config, never from global state).
"""
from __future__ import annotations

import time

from tqdm.auto import tqdm

from lottery import __version__
from lottery.config import Config, from_dict, validate
from lottery import distributed
from lottery.errors import CorruptFileError, MaskMismatchError, RewindCheckError
from lottery.faults import crash_point, crash_progress
from lottery.masks import Mask
from lottery.pruning import PRUNERS, collapsed_layers, random_mask_like
from lottery.rewind import rewind
from lottery.runs import RunDir
from lottery.session import Session, resolve_device  # noqa: F401  (resolve_device: a public name here before)
from lottery.train import derived_seed
from lottery.trackers import Tracker, open_tracker


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
    with run, open_tracker(cfg.log, run.path) as tracker:
        experiment = Experiment(cfg, run, dist)
        experiment.tracker = tracker
        return experiment.run()


class Experiment(Session):
    """IMP on a Session: the results written so far, the level loop, its controls and tracker."""

    def __init__(self, cfg: Config, run: RunDir, dist: distributed.Dist = distributed.SINGLE):
        super().__init__(cfg, run, dist)
        self.results = dist.share_object(lambda: run.load_results() or {
            "config": cfg.to_dict(), "hash": cfg.hash(), "version": __version__, "status": "running", "levels": []})
        self.tracker = Tracker()  # no tracker; run_imp sets the one cfg.log names

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
        cfg = self.cfg
        why = None
        with self.bar(cfg.levels + 1, f"IMP {cfg.run_name()}", leave=True) as levels_bar:
            for level in range(cfg.levels + 1):
                entry = self.dist.share_object(lambda: self._finished(level))
                # arms of the level in one fused pass (late rewinding's continued runs train unfused)
                if self.cfg.pack > 1 and level > 0 and not self.dist.active and self.start_step(level) == 0:
                    entry = self._run_arms_packed(level, entry)
                entry = entry or self._run_level(level)
                if entry["status"] == "ok":
                    self._run_controls(level, entry)
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
        return self.results

    def _exhausted(self, level: int, entry: dict) -> str | None:
        """Why pruning cannot go on after ``level`` (a layer with no weights left, or a next level that would
        remove nothing), or None. Runs on rank 0; a next level finished by an older version is kept."""
        if any(e["level"] == level + 1 for e in self.results["levels"]):
            return None
        if entry.get("collapsed_layers"):
            return (f"layer {entry['collapsed_layers'][0]} has no weights left (layer collapse); "
                    "--min-kept-per-layer keeps some in every layer")
        if self._mask(level + 1).num_kept == entry.get("num_kept", -1):
            return (f"level {level + 1} would prune nothing ({entry.get('num_kept')} weights left, too few for "
                    f"--prune-fraction {self.cfg.prune_fraction} to remove one)")
        return None

    def _run_level(self, level: int) -> dict:
        started = time.perf_counter()
        mask = self.shared_mask(lambda: self._mask(level))
        snap = self.rewind_step if (level == 0 and self.rewind_step is not None) else None
        start = self.from_main(lambda: self.rewind_state(level))
        result = self.train_from(start, mask, f"level {level} ticket", snapshot_step=snap,
                             start_step=self.start_step(level))
        if snap is not None and result.rewind_state is not None:
            self.rundir.save_state("rewind.pt", result.rewind_state)
        return self._record_ticket(level, mask, result, started)

    def _record_ticket(self, level: int, mask: Mask, result, started: float) -> dict:
        """Save the trained ticket in ``self.model`` (final.pt, then its results entry); returns the entry."""
        self.rundir.save_state(f"level_{level:02d}/final.pt", self.model.state_dict())
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

    def _run_controls(self, level: int, entry: dict) -> None:
        if level == 0:
            return
        mask = None
        for control in self.cfg.controls:
            if control in entry["controls"]:
                continue
            mask = mask or self.shared_mask(lambda: self._mask(level))
            seed = derived_seed(self.cfg.seed, control, level)
            if control == "reinit":  # same mask, a fresh draw of the same init scheme, trained from step 0
                start, control_mask = self.from_main(lambda: self.fresh_init(seed)), mask
                start_step = 0
            else:  # random_mask: same per-layer densities, same rewind state (and step)
                start = self.from_main(lambda: self.rewind_state(level))
                control_mask = self.shared_mask(lambda: random_mask_like(mask, seed))
                start_step = self.start_step(level)
            result = self.train_from(start, control_mask, f"level {level} {control}", start_step=start_step)
            entry["controls"][control] = result.summary()
            self._save()
            self.tracker.summary(level, control, control_mask, entry["controls"][control])

    # -- fused arms (cfg.pack > 1) ------------------------------------------------------------------------
    def _run_arms_packed(self, level: int, entry: dict | None) -> dict | None:
        """Train the level's unfinished arms (ticket, controls) in fused passes of up to ``cfg.pack`` networks.

        The ticket's mask and start depend only on earlier levels, so the three arms are independent. Results,
        files and the order they are written in are those of the unpacked path (controls are recorded only
        when the ticket is ok, as there); values agree up to float rounding (lottery/fused.py). Returns the
        level's entry, or the ``entry`` given when there is nothing to pack (the unpacked path then runs).
        """
        import copy

        from lottery.fused import train_fused

        done = entry["controls"] if entry is not None else {}
        if entry is not None and entry["status"] != "ok":
            return entry
        todo = ([] if entry is not None else ["ticket"]) + [c for c in self.cfg.controls if c not in done]
        if len(todo) < 2:
            return entry
        started = time.perf_counter()
        mask = self._mask(level)
        arms = []  # (arm, start state, mask)
        for arm in todo:
            seed = derived_seed(self.cfg.seed, arm, level)
            if arm == "ticket":
                arms.append((arm, self.rewind_state(level), mask))
            elif arm == "reinit":  # same mask, a fresh draw of the same init scheme
                arms.append((arm, self.fresh_init(seed), mask))
            else:  # random_mask: same per-layer densities, same rewind state
                arms.append((arm, self.rewind_state(level), random_mask_like(mask, seed)))
        results = {}
        for i in range(0, len(arms), self.cfg.pack):
            chunk = arms[i: i + self.cfg.pack]
            models = [copy.deepcopy(self.model) for _ in chunk]
            for model, (_, start, arm_mask) in zip(models, chunk):
                rewind(model, start, arm_mask)
            names = "+".join(a for a, _, _ in chunk)
            with self.bar(self.total_steps, f"level {level} {names}") as bar:
                out = train_fused(models, self.data, self.cfg, [m for _, _, m in chunk], seeds=[self.cfg.seed] *
                                  len(chunk), progress=crash_progress(bar, f"train:level{level}"))
            for model, (arm, _, arm_mask), result in zip(models, chunk, out):
                params = dict(model.named_parameters())
                if result.status == "ok" and any(bool(params[k][~m].any()) for k, m in arm_mask.items()):
                    raise RewindCheckError(f"level {level} {arm}: a pruned weight became non-zero during training")
                results[arm] = (model, result, arm_mask)
        if "ticket" in results:
            model, result, _ = results.pop("ticket")
            self.model.load_state_dict(model.state_dict())
            entry = self._record_ticket(level, mask, result, started)
        if entry["status"] == "ok":
            for control in self.cfg.controls:
                if control in results:
                    _, result, control_mask = results[control]
                    entry["controls"][control] = result.summary()
                    self._save()
                    self.tracker.summary(level, control, control_mask, entry["controls"][control])
        return entry
