"""The IMP driver behind ``lottery run``: the engine's level loop (lottery/imp_engine.py) on a Session.

It knows nothing about specific models or data sets: the Session builds them from the config and trains with the
built-in loop; the engine prunes, rewinds, runs the controls and writes the run directory after every finished
training run, so a killed experiment resumes exactly where it stopped and reproduces the numbers of an
uninterrupted one (every run's randomness comes from seeds derived from the config, never from global state).
``train_ahead`` trains a level's pending runs (of one or many experiments) in fused passes first.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from tqdm.auto import tqdm

from lottery import __version__
from lottery.config import Config, from_dict, validate
from lottery import distributed
from lottery.imp_engine import Arm, Engine, ImpSettings, Pending, Trained, Trainer
from lottery.cost import layer_macs, step_flops
from lottery.drivers.plan_seeds import siblings_reader
from lottery.barrier import error_barrier
from lottery.passes import Run, train_passes
from lottery.masks import Mask
from lottery.storage.rundir import RunDir, RunLockedError
from lottery.session import Session, data_shapes, load_data
from lottery.train import STOP
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
    data = load_data(cfg)  # data the config cannot use (--augment on non-images) is refused before the run directory
    run = dist.main_first(lambda: RunDir.for_config(cfg))
    if not dist.is_main:  # rank 0 alone holds the lock and writes the run directory
        return Experiment(cfg, distributed.Follower(run.path), dist, data=data).run()
    with open_experiment(cfg, run, dist, data=data) as experiment:
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


class Experiment(Session, Trainer):
    """IMP on a Session: the engine's level loop (lottery/imp_engine.py) trained by the built-in loop, with the
    results written so far (``results``) and the tracker. ``levels()`` is the engine's generator, so several
    experiments can advance together and train their runs fused (lottery/executors/lockstep.py); ``run`` drives
    it alone (with ``pack`` > 1, each level's runs in fused passes)."""

    collapse_hint = "; --min-kept-per-layer keeps some in every layer"
    auto_steps = True  # --steps auto: level 0's dense run sets the budget of every later run
    engine_owns_init = True  # the engine writes and checks init.pt, and checks every run it records

    def __init__(self, cfg: Config, run: RunDir, dist: distributed.Dist = distributed.SINGLE, data=None):
        super().__init__(cfg, run, dist, data)
        self.tracker = Tracker()  # no tracker; open_experiment sets the one cfg.log names
        self.engine = Engine(self, run, ImpSettings.from_config(cfg),
                             {"config": cfg.to_dict(), "hash": cfg.hash(), "version": __version__,
                              **data_shapes(self.data)})  # what export reads back, not the data set
        self.engine.siblings = siblings_reader(cfg)  # adaptive steps judged over seeds (lottery/drivers/plan_seeds.py)

    @property
    def results(self) -> dict:
        return self.engine.results

    def run(self) -> dict:
        return self.engine.run(self._train_ahead if self.pack > 1 else None)

    def levels(self) -> Iterator[Pending]:
        return self.engine.levels()

    def _train_ahead(self, pendings: list[Pending]) -> None:
        train_ahead(pendings, self.pack, progress=self.progress)

    # -- the engine's trainer -----------------------------------------------------------------------------
    def train(self, level: int, arm: Arm) -> Trained:
        hook = arm.early_bird.step_hook(self.model, self.cfg.eval_every, STOP) if arm.early_bird else None
        result = self.train_from(arm.start, arm.mask, f"level {level} {arm.name}", snapshot_step=arm.snapshot_step,
                                 step_hook=hook, check_zeros=False,
                                 start_step=arm.start_step, steps=self.level_budget(level),
                                 point=f"train:level{level}" + ("" if arm.name == "ticket" else f":{arm.name}"))
        return Trained(self.model, result.summary(), arm.mask, result.rewind_state)

    def redraw(self, seed: int) -> dict:
        return self.fresh_init(seed)

    def prunable(self) -> Mask:
        return Mask.ones_like(self.model)

    def barrier(self, start: dict, end: dict, points: int) -> dict:
        """The error barrier between two levels' trained weights on the validation split."""
        return error_barrier(self.model, start, end, *self.data.val, points, batchnorm_x=self.data.train[0])

    def level_budget(self, level: int) -> int | None:
        """Under ``--steps auto``, the steps dense trained until it settled (every run after it gets as many);
        None otherwise (the config's budget)."""
        if self.cfg.steps != "auto" or level == 0:
            return None
        dense = next(e for e in self.engine.results["levels"] if e["level"] == 0)
        return dense["steps"]

    def step_flops(self, mask: Mask) -> tuple[float, float]:
        if getattr(self, "_macs", None) is None:
            self._macs = layer_macs(self.model, self.data.train[0][:1])
        batch = min(self.cfg.batch_size, len(self.data.train[0]))
        return step_flops(self._macs, mask, batch), step_flops(self._macs, None, batch)

    def trains_alone(self, level: int, name: str) -> bool:
        """What of IMP keeps a run out of any fused pass (the scheduler's ``pass_key`` adds the rest): a late start
        (late rewinding's continued runs), level 0's rewind snapshot mid-run, an early-bird search's step hook."""
        if name == "ticket" and level > 0 and self.cfg.early_bird:  # a search stops on its own (step hook)
            return True
        return name != "reinit" and (self.engine.start_step(level) != 0 or (level == 0 and self.rewind_step is not None))

    def prune_data(self):
        return self.data.train

    def share(self, make):
        return self.dist.share_object(make)

    def share_state(self, make) -> dict:
        return self.from_main(make)

    def share_mask(self, make) -> Mask:
        return self.shared_mask(make)

    def say(self, line: str) -> None:
        tqdm.write(line)

    def level_bar(self, total: int):
        return self.bar(total, f"IMP {self.cfg.run_name()}", leave=True)


def train_ahead(pendings: Sequence[Pending], pack: int, progress: bool = False) -> None:
    """Train the runs of ``pendings`` (of one or many Experiments) that can share passes, in the fused passes the
    scheduler makes (lottery/passes.py: at most ``pack`` networks, as evenly split as possible, runs grouped by
    ``pass_key``); each result goes to its Pending's ``trained``. A run left alone in its pass is not trained here
    (the level loop trains it as usual: one fused network is slower than a plain run)."""
    runs = []
    for p in pendings:
        exp = p.engine.trainer
        for name in p.names:
            runs.append(Run(exp, lambda p=p, name=name: _arm(p, name), f"level {p.level} {name}",
                            alone=exp.trains_alone(p.level, name), tag=(p, name)))

    def label(chunk: list[Run]) -> tuple[str, str]:
        level = min(run.tag[0].level for run in chunk)
        trunks = len({id(run.session) for run in chunk})
        desc = (f"level {level} {'+'.join(run.tag[1] for run in chunk)}" if trunks == 1
                else f"fused: {len(chunk)} runs of {trunks} trunks, level {level}")
        return desc, f"train:level{level}"

    def done(run: Run, model, result) -> None:
        p, name = run.tag
        p.trained[name] = Trained(model, result.summary(), run.mask)

    train_passes(runs, pack, done, label=label, progress=progress, check_zeros=False, alone=False)


def _arm(p: Pending, name: str) -> tuple[dict, Mask]:
    arm = p.engine.arm(p.level, name)
    return arm.start, arm.mask
