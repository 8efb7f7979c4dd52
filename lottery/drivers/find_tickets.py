"""IMP around the user's own model and training loop: ``find_tickets(model, train_fn, ...)``.

``run_imp`` owns the whole experiment (our models, data sets and trainer). Here the user owns the model and the
loop, and IMP owns the rest: the levels, pruning, rewinding (verified bit for bit before every ``train_fn`` call),
the controls, the checks that the loop kept pruned weights at zero, and the run directory — the same layout and
``results.json`` as ``run_imp``, locked, written atomically, and resumed without calling ``train_fn`` again for
finished work. Its name's hash covers the settings that change results plus fingerprints of the model's
architecture and of its initial weights, so re-running the same script (same seeds) resumes the same run.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lottery import __version__
from lottery.config import CONTROLS, Config, from_dict, run_hash
from lottery.contract import check_fraction_names
from lottery.errors import ConfigError
from lottery.imp_engine import Arm, Engine, ImpSettings, Trained, Trainer
from lottery.masks import Mask
from lottery.reporting.trackers import TRACKERS, open_tracker
from lottery.rewind import Held, rewind, snapshot
from lottery.drivers.ticket_metrics import TrainFnError, check_metrics
from lottery.storage.rundir import RunDir

ARMS = ("ticket", *CONTROLS)
# run names made before find_tickets hashed the config's pruning section compared against these defaults; such a
# directory is still found (``_run_path``), never made anew
LEGACY_DEFAULTS = {"levels": 5, "prune_fraction": 0.2, "scope": "global", "rewind": "init", "controls": list(CONTROLS),
                   "layer_fractions": {}, "seed": 0, "structure": "unstructured", "structure_options": {},
                   "early_bird": None}


@dataclass
class TicketRun:
    """Which training ``train_fn`` is asked for: ``level`` (0 = dense), ``arm`` (``ticket``, ``reinit`` or
    ``random_mask``), ``seed`` (seed your data order and other randomness from it), ``rewind_step`` (K of
    ``rewind="step:K"``, else None) and ``run_dir``."""

    level: int
    arm: str
    seed: int
    rewind_step: int | None
    run_dir: Path
    tracker: Any = None
    rewind_state: dict | None = field(default=None, repr=False)
    saved_at: int | None = field(default=None, repr=False)  # the step save_rewind_state was told it was called at
    _saves: int = field(default=0, repr=False)
    early_bird: Any = field(default=None, repr=False)  # the level's stopping rule (lottery/pruning/early_bird.py)

    def save_rewind_state(self, model: nn.Module, step: int | None = None) -> None:
        """Call once, at step K of your loop, with ``rewind="step:K"`` (pass ``step`` and it is checked and recorded
        as the level's ``rewind_state_step``): level 0's ticket keeps these weights as the state later levels rewind
        to. Elsewhere (other levels, controls, other rewind modes) it keeps nothing. A second call in one training
        run is refused: the rewind state would silently become the weights of a later step."""
        where = f"level {self.level} {self.arm}"
        self._saves += 1
        if self._saves > 1:
            raise TrainFnError(f"{where}: run.save_rewind_state was called a second time in one training run; call "
                               f"it once, at step {self.rewind_step if self.rewind_step is not None else 'K'}")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise TrainFnError(f"{where}: run.save_rewind_state(model, step={step!r}); step must be an integer >= 0")
        if step is not None and self.rewind_step is not None and step != self.rewind_step:
            raise TrainFnError(f"{where}: run.save_rewind_state was called at step {step}, but rewind='step:"
                               f"{self.rewind_step}' keeps the weights of step {self.rewind_step}; call it there")
        self.saved_at = step
        if self.level == 0 and self.arm == "ticket" and self.rewind_step is not None:
            self.rewind_state = snapshot(model)

    def stop_early(self, model: nn.Module, step: int) -> bool:
        """Early-bird levels (``find_tickets(early_bird=True)``): call at each validation check of your loop; True
        once the mask this level would prune to has stabilised — stop training and return (the run is a mask
        search; return ``steps``, the updates made, so its cost is counted). Always False otherwise."""
        return self.early_bird is not None and self.early_bird.stop_step is None \
            and self.early_bird.observe(step, self.early_bird.candidate(model))

    def log(self, step: int, **scalars: float) -> None:
        """Send per-step scalars (e.g. ``val_loss=..., val_accuracy=...``) to the tracker chosen with ``log=``."""
        if self.tracker is not None:
            self.tracker.scalars(f"level_{self.level:02d}/{self.arm}", step, scalars)


# -- fingerprints -------------------------------------------------------------------------------------------------
def state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of names, shapes, dtypes and the bytes of every tensor: equal iff the states are equal bit for bit."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def architecture_fingerprint(model: nn.Module, prunable: list[str]) -> str:
    """sha256 of the parameter names and shapes and of which of them are pruned."""
    arch = [[n, list(p.shape)] for n, p in model.named_parameters()]
    return hashlib.sha256(json.dumps([arch, prunable]).encode()).hexdigest()[:16]


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def reinit_model(model: nn.Module, seed: int, reinit: Callable[[nn.Module, int], Any] | None = None) -> None:
    """Redraw the model's weights under ``seed``: ``reinit(model, seed)``, or every submodule's own
    ``reset_parameters()``; the global RNG is forked, so the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=_cuda_devices(model)):
        torch.manual_seed(seed)
        if reinit is not None:
            reinit(model, seed)
        else:
            for module in model.modules():
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()


# -- the driver --------------------------------------------------------------------------------------------------
def find_tickets(
    model: nn.Module,
    train_fn: Callable[[nn.Module, Mask, TicketRun], Mapping[str, Any]],
    out: str = "runs",
    levels: int = 5,
    prune_fraction: float = 0.2,
    scope: str = "global",
    rewind: str = "init",
    controls=CONTROLS,
    init: Mapping[str, torch.Tensor] | None = None,
    reinit: Callable[[nn.Module, int], Any] | None = None,
    seed: int = 0,
    name: str | None = None,
    *,
    layer_fractions: Mapping[str, float] | None = None,
    include: Callable[[str, nn.Parameter], bool] | None = None,
    dataset: str | None = None,
    log: str | None = None,
    progress: bool = True,
    structure: str = "unstructured",
    structure_options: Mapping[str, Any] | None = None,
    early_bird: bool = False,
    early_bird_epsilon: float = 0.1,
    early_bird_window: int = 5,
) -> dict:
    """IMP around your own loop; returns ``results.json``'s content (plus ``run_dir``, the directory's path).

    ``train_fn(model, mask, run)`` trains ``model`` in place (its pruned weights are already zero; keep them so
    with ``lt.mask_gradients(model, mask)`` before each optimizer step) and returns metrics, at least
    ``{"test_accuracy": a fraction in [0, 1]}``; ``early_stop_step`` and ``curve`` ([step, val_loss, val_acc]
    rows; a non-finite loss records the run as diverged) feed the table and plots, and every other metric is stored
    too, except under a reserved name (``RESERVED``: ``arm``, ``seed``, ``model``, ``signal``, ...: refused in one
    line). ``mask`` is a copy: after every call the model's weights, looked up by name, are checked against
    find_tickets' own mask, and its parameters and buffers must keep their names, shapes and dtypes. ``run`` is a
    :class:`TicketRun`.

    The weights ``model`` holds when called (or ``init``, a state dict) are level 0's init. ``rewind``: ``init``,
    ``step:K`` (the weights your loop hands to ``run.save_rewind_state`` at step K of level 0) or ``lr`` (each
    level starts from the previous one's trained weights). Controls start from the init: ``reinit`` (the same
    mask, then weights redrawn by each submodule's ``reset_parameters()`` under a seed derived from ``seed``, or
    by ``reinit(model, seed)``; what neither redraws keeps its init value) and ``random_mask`` (a random mask with
    the same per-layer counts, same rewind state). IMP stops early, with status ``exhausted``, when a level would
    prune nothing or a layer has no weights left; a diverged ticket ends it with status ``diverged``. ``include``
    chooses the prunable weights (default: Linear and Conv weights); ``layer_fractions`` overrides the fraction
    per layer; ``dataset`` is a label for reports; ``log`` = ``tensorboard`` or ``mlflow`` writes tracker files.
    ``structure`` = ``neuron`` or ``N:M`` (with ``structure_options``) prunes whole units or n:m groups, and the
    random-mask control follows it (lottery/pruning/structure.py). ``early_bird=True`` makes every level after
    the dense one a mask search that your loop ends when ``run.stop_early(model, step)`` says so, then trains the
    deepest searched mask once more in full (lottery/pruning/level_plan.py; ``early_bird_epsilon`` and
    ``early_bird_window`` as ``lottery run``'s flags).

    The run lives in ``out/<name>-<hash>`` (``name`` defaults to the model's class name). Each level's trained
    weights are in ``level_NN/final.pt``; when this returns (or raises, your own exception unchanged) the model
    holds the weights, dtypes and submodules it had when called, so calling again with the same arguments resumes
    (finished work is not trained again).

    >>> import tempfile, torch, lottery as lt
    >>> _ = torch.manual_seed(0)
    >>> def train_fn(model, mask, run):  # a real one trains here
    ...     return {"test_accuracy": 0.5, "which": run.arm}
    >>> results = lt.find_tickets(torch.nn.Linear(10, 10), train_fn, out=tempfile.mkdtemp(), levels=2, progress=False)
    >>> [round(e["density"], 2) for e in results["levels"]], sorted(results["levels"][2]["controls"])
    ([1.0, 0.8, 0.64], ['random_mask', 'reinit'])
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(train_fn):
        raise ConfigError(f"train_fn must be a function train_fn(model, mask, run), got {type(train_fn).__name__}")
    if reinit is not None and not callable(reinit):
        raise ConfigError(f"reinit must be a function reinit(model, seed), got {type(reinit).__name__}")
    cfg = imp_config(levels=levels, prune_fraction=prune_fraction, scope=scope, rewind=rewind, controls=controls,
                     layer_fractions=layer_fractions, seed=seed, structure=structure,
                     structure_options=structure_options, early_bird=early_bird,
                     early_bird_epsilon=early_bird_epsilon, early_bird_window=early_bird_window)
    settings = _stored_settings(cfg)
    if log is not None:
        TRACKERS.get(log)  # an unknown name fails before the run directory is made
    held = Held(model)  # put back whatever happens: the user's model is theirs
    try:
        if init is not None:
            try:
                model.load_state_dict(dict(init), strict=True)
            except (RuntimeError, TypeError, AttributeError) as e:
                raise ConfigError(f"init= does not fit the model ({str(e).splitlines()[0]}); pass model.state_dict() "
                                  "of this model") from None
        prunable = list(Mask.ones_like(model, include=include))
        check_fraction_names(prunable, cfg.layer_fractions)
        if "reinit" in cfg.controls and reinit is None:
            _check_resettable(model, prunable)
        init_state = snapshot(model)
        name = name or type(model).__name__
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise ConfigError(f"name '{name}' may hold only letters, digits and _.+-")
        fingerprints = {"architecture": architecture_fingerprint(model, prunable), "init": state_fingerprint(init_state)}
        path, hashed = _run_path(Path(out), name, cfg, settings, fingerprints)
        digest = path.name.rpartition("-")[2]
        config = {"name": name, "model": type(model).__name__, "dataset": dataset,
                  "init": f"given:{fingerprints['init']}", **settings, "out": str(out), "prunable": prunable}
        run = RunDir.for_settings(path, hashed, config, driver="find_tickets")
        with run, open_tracker(log, run.path) as tracker:
            trainer = _UserTrainer(model, train_fn, run, ImpSettings.from_config(cfg), init_state, include, reinit,
                                   progress, tracker)
            engine = Engine(trainer, run, trainer.imp, {"config": config, "hash": digest, "version": __version__})
            trainer.engine = engine
            results = engine.run()
    finally:
        held.restore()
    return {**results, "run_dir": str(run.path)}


def imp_config(controls=CONTROLS, layer_fractions=None, structure_options=None, **settings) -> Config:
    """find_tickets' IMP settings as the config's pruning section and seed: the defaults, the validation (one-line
    ConfigError) and the rewind grammar of ``lottery run``; the other sections keep their defaults."""
    return from_dict({**settings, "controls": () if controls is None else controls,
                      "layer_fractions": dict(layer_fractions or {}),
                      "structure_options": dict(structure_options or {})}, source="find_tickets")


def _stored_settings(cfg: Config) -> dict:
    """The settings written to config.json (and read by the legacy names): the shape find_tickets always stored."""
    settings = {"levels": cfg.levels, "prune_fraction": cfg.prune_fraction, "scope": cfg.scope, "rewind": cfg.rewind,
                "controls": list(cfg.controls), "layer_fractions": dict(sorted(cfg.layer_fractions.items())),
                "seed": cfg.seed, "structure": cfg.structure, "structure_options": dict(cfg.structure_options)}
    if cfg.early_bird:
        settings["early_bird"] = {"epsilon": cfg.early_bird_epsilon, "window": cfg.early_bird_window}
    return settings


def _run_path(out: Path, name: str, cfg: Config, settings: dict, fingerprints: dict) -> tuple[Path, dict]:
    """The run directory and what its name's hash covers: IMP's settings as ``lottery run`` hashes them
    (``Config.imp_settings``) and the model's fingerprints; or, when only that exists, the directory an earlier
    version named from its own defaults (``LEGACY_DEFAULTS``), which resumes as it was."""
    hashed = {**cfg.imp_settings(), **fingerprints}
    path = out / f"{name}-{run_hash(hashed)}"
    legacy = {**{k: v for k, v in settings.items() if v != LEGACY_DEFAULTS[k]}, **fingerprints}
    old = out / f"{name}-{run_hash(legacy)}"
    if not path.exists() and (old / "config.json").is_file():
        return old, legacy
    return path, hashed


def _check_resettable(model: nn.Module, prunable: list[str]) -> None:
    """Every pruned layer must be redrawn by the reinit control, or the control would be the ticket itself."""
    for name in prunable:
        owner = model.get_submodule(name.rpartition(".")[0])
        if not callable(getattr(owner, "reset_parameters", None)):
            raise ConfigError(f"the reinit control cannot redraw '{name}': {type(owner).__name__} has no "
                              "reset_parameters(); pass reinit=lambda model, seed: ... or drop 'reinit' from controls")


class _UserTrainer(Trainer):
    """The engine's trainer around the user's ``train_fn``: every call starts from a verified rewind, gets a copy
    of the mask, and is checked afterwards — its metrics and the model's structure here; init.pt and that pruned
    weights stayed zero (by name, against the engine's own mask) in the engine, blaming ``train_fn``."""

    mask_mismatch = "pass the model this run was started with, or another name= or out="
    given_init = True
    culprit = "train_fn"
    culprit_fix = "; call lt.mask_gradients(model, mask) before each optimizer step, or mask.apply(model) after it"
    contract_error = TrainFnError

    def __init__(self, model, train_fn, run: RunDir, settings: ImpSettings, init_state: dict, include, reinit,
                 progress: bool, tracker):
        self.model, self.train_fn, self.rundir, self.imp = model, train_fn, run, settings
        self.include, self.reinit, self.progress, self.tracker = include, reinit, progress, tracker
        self._prunable = Mask.ones_like(model, include=include)
        self._given_init = init_state  # init.pt: written and checked by the engine
        self.engine: Engine | None = None

    def say(self, line: str) -> None:
        if self.progress:
            print(f"find_tickets: {line}", file=sys.stderr, flush=True)

    def prunable(self) -> Mask:
        return self._prunable

    def initial_state(self) -> dict:
        """The weights the model held when find_tickets was called (or ``init=``): a stored init.pt must be them."""
        return self._given_init

    def redraw(self, seed: int) -> dict:
        """The reinit control: init.pt, then what ``reset_parameters()`` (or ``reinit``) draws, drawn afresh; a
        parameter neither redraws keeps its init value, never the value the ticket trained it to."""
        self.model.load_state_dict(self.init_state)
        reinit_model(self.model, seed, self.reinit)
        return snapshot(self.model)

    def train(self, level: int, arm: Arm) -> Trained:
        """Rewind (verified bit for bit), call train_fn, check what it returned and what it left in the model."""
        where = f"level {level} {arm.name}"
        rewind(self.model, arm.start, arm.mask)
        params = dict(self.model.named_parameters())
        handed = Mask({k: t.to(params[k].device, copy=True) for k, t in arm.mask.items()})  # writes stay in the copy
        run = TicketRun(level, arm.name, self.imp.seed, self.imp.rewind_step, self.rundir.path, self.tracker,
                        early_bird=arm.early_bird)
        started = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=_cuda_devices(self.model)):
                torch.manual_seed(self.imp.seed)  # a loop drawing from the global RNG repeats itself on resume
                out = self.train_fn(self.model, handed, run)
        except TrainFnError:  # the loop broke the contract (run.save_rewind_state): its own one line
            raise
        except BaseException as e:
            done = len(self.engine.results["levels"]) if self.engine is not None else 0
            e.add_note(f"find_tickets: train_fn raised during {where}; the {done} finished level(s) are saved in "
                       f"{self.rundir.path}: call find_tickets again with the same arguments to resume")
            raise
        self._check_structure(where)
        diverged = not all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        metrics = check_metrics(out, where, diverged)
        if arm.snapshot_step is not None:
            if run.rewind_state is None:
                k = self.imp.rewind_step
                raise TrainFnError(f"rewind='step:{k}' needs train_fn to call run.save_rewind_state(model) at step "
                                   f"{k} of level 0; it did not")
            if run.saved_at is not None:
                metrics["rewind_state_step"] = run.saved_at
        metrics["wall_time"] = time.perf_counter() - started
        if arm.early_bird is not None and arm.early_bird.stop_step is not None:
            metrics.setdefault("steps", arm.early_bird.stop_step)
        acc = metrics["test_accuracy"]
        self.say(f"{where}: density {arm.mask.density:.4f}, test accuracy {'-' if acc is None else f'{acc:.4f}'}"
                 f"{'' if metrics['status'] == 'ok' else ' (diverged)'}")
        return Trained(self.model, metrics, arm.mask, run.rewind_state)

    def _check_structure(self, where: str) -> None:
        """The model still has init.pt's parameters and buffers: same names, shapes and dtypes."""
        now = self.model.state_dict()
        for k in [*self.init_state, *now]:
            if k not in now or k not in self.init_state:
                what = "removed" if k not in now else "added"
            elif now[k].shape != self.init_state[k].shape or now[k].dtype != self.init_state[k].dtype:
                what = f"now {now[k].dtype} {tuple(now[k].shape)}, was {self.init_state[k].dtype} " \
                       f"{tuple(self.init_state[k].shape)}"
            else:
                continue
            raise TrainFnError(f"{where}: train_fn changed the model ('{k}' {what}); find_tickets needs the same "
                               "parameters and buffers, of the same shapes and dtypes, after every call")
