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
import math
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
from lottery.config import CONTROLS, parse_list
from lottery.errors import ConfigError, CorruptFileError, LotteryError, MaskMismatchError, StructureExhausted
from lottery.testing import crash_point
from lottery.masks import Mask
from lottery.pruning import (SCOPES, check_fraction, check_structured_config, collapsed_layers, prune_structured,
                             random_structured_like)
from lottery.rewind import rewind, snapshot
from lottery.storage.rundir import RunDir

ARMS = ("ticket", *CONTROLS)
DEFAULTS = {"levels": 5, "prune_fraction": 0.2, "scope": "global", "rewind": "init", "controls": list(CONTROLS),
            "layer_fractions": {}, "seed": 0, "structure": "unstructured", "structure_options": {}}
# Keys of a results entry that find_tickets fills itself; train_fn's metrics may not overwrite them.
RESERVED = ("level", "density", "num_kept", "layer_density", "collapsed_layers", "controls", "level_wall_time")


class TrainFnError(LotteryError):
    """``train_fn`` broke its contract: bad metrics, or pruned weights left non-zero."""


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

    def save_rewind_state(self, model: nn.Module) -> None:
        """Call at step K of your loop with ``rewind="step:K"``: level 0's ticket keeps these weights as the state
        later levels rewind to. Elsewhere (other levels, controls, other rewind modes) it does nothing."""
        if self.level == 0 and self.arm == "ticket" and self.rewind_step is not None:
            self.rewind_state = snapshot(model)

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


# -- checks of what train_fn returns -----------------------------------------------------------------------------
def _plain(value: Any, where: str, key: str) -> Any:
    """A JSON-ready copy of a metric: numbers (tensors and numpy scalars too), strings, lists, dicts."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_plain(v, where, key) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, where, key) for k, v in value.items()}
    raise TrainFnError(f"{where}: train_fn returned metric '{key}' as {type(value).__name__}; "
                       "return numbers, strings, lists or dicts")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_metrics(out: Any, where: str, diverged: bool) -> dict:
    """train_fn's return value as a results entry part: ``status``, ``test_accuracy``, ``early_stop_step``, the
    rest of its metrics; a one-line TrainFnError if it breaks the contract."""
    if not isinstance(out, Mapping):
        raise TrainFnError(f"{where}: train_fn returned {type(out).__name__}; return a dict such as "
                           "{'test_accuracy': 0.93}")
    taken = [k for k in out if k in RESERVED]
    if taken:
        raise TrainFnError(f"{where}: train_fn returned '{taken[0]}', which find_tickets sets itself; rename it")
    raw_acc = out.get("test_accuracy")
    metrics = {str(k): _plain(v, where, str(k)) for k, v in out.items()}
    status = metrics.get("status", "ok")
    if status not in ("ok", "diverged"):
        raise TrainFnError(f"{where}: train_fn returned status {status!r}; use 'ok' or 'diverged'")
    status = "diverged" if diverged else status
    acc = raw_acc.item() if isinstance(raw_acc, torch.Tensor) and raw_acc.numel() == 1 else raw_acc
    acc = acc.item() if hasattr(acc, "item") and getattr(acc, "ndim", None) == 0 else acc
    if status == "ok":
        if "test_accuracy" not in out:
            keys = ", ".join(map(str, out)) or "none"
            raise TrainFnError(f"{where}: train_fn returned no 'test_accuracy' (keys: {keys}); "
                               "return {'test_accuracy': a fraction in [0, 1], ...}")
        if not _is_number(acc) or not math.isfinite(acc) or not 0 <= acc <= 1:
            hint = f" ({acc} looks like a percentage: divide by 100)" if _is_number(acc) and 1 < acc <= 100 else ""
            raise TrainFnError(f"{where}: train_fn returned test_accuracy {acc!r}; it must be a fraction in [0, 1]"
                               f"{hint}, or return status 'diverged'")
    step = metrics.get("early_stop_step")
    if step is not None and not _is_number(step):
        raise TrainFnError(f"{where}: train_fn returned early_stop_step {step!r}; return a step number or None")
    curve = metrics.get("curve", [])
    if not (isinstance(curve, list) and all(isinstance(p, list) and len(p) == 3 and all(
            v is None or _is_number(v) for v in p) for p in curve)):
        raise TrainFnError(f"{where}: train_fn returned a 'curve' that is not a list of [step, val_loss, "
                           "val_accuracy]; rename it or fix its shape")
    metrics.update(status=status, test_accuracy=metrics.get("test_accuracy"), early_stop_step=step)
    return metrics


def _rewind_mode(text: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"(init|lr|step:(\d+))", str(text))
    if not m:
        raise ConfigError(f"rewind must be init, lr or step:K (K >= 0), got {text!r}")
    return ("step", int(m.group(2))) if m.group(2) else (m.group(1), None)


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
) -> dict:
    """IMP around your own loop; returns ``results.json``'s content (plus ``run_dir``, the directory's path).

    ``train_fn(model, mask, run)`` trains ``model`` in place (its pruned weights are already zero; keep them so
    with ``lt.mask_gradients(model, mask)`` before each optimizer step) and returns metrics, at least
    ``{"test_accuracy": a fraction in [0, 1]}``; ``early_stop_step`` and ``curve`` ([step, val_loss, val_acc]
    rows) feed the table and plots, and every other metric is stored too. ``run`` is a :class:`TicketRun`.

    The weights ``model`` holds when called (or ``init``, a state dict) are level 0's init. ``rewind``: ``init``,
    ``step:K`` (the weights your loop hands to ``run.save_rewind_state`` at step K of level 0) or ``lr`` (each
    level starts from the previous one's trained weights). Controls: ``reinit`` (the same mask, weights redrawn
    by each submodule's ``reset_parameters()`` under a seed derived from ``seed``, or by ``reinit(model, seed)``)
    and ``random_mask`` (a random mask with the same per-layer counts, same rewind state). ``include`` chooses the
    prunable weights (default: Linear and Conv weights); ``layer_fractions`` overrides the fraction per layer;
    ``dataset`` is a label for reports; ``log`` = ``tensorboard`` or ``mlflow`` writes tracker files.
    ``structure`` = ``neuron`` or ``N:M`` (with ``structure_options``) prunes whole units or n:m groups, and the
    random-mask control follows it (lottery/pruning/structure.py).

    The run lives in ``out/<name>-<hash>`` (``name`` defaults to the model's class name). Each level's trained
    weights are in ``level_NN/final.pt``; when this returns (or raises) the model holds the weights it had when
    called, so calling again with the same arguments resumes (finished work is not trained again).

    >>> import tempfile, torch, lottery as lt
    >>> _ = torch.manual_seed(0)
    >>> def train_fn(model, mask, run):  # a real one trains here
    ...     return {"test_accuracy": 0.5, "arm": run.arm}
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
    settings = _settings(levels, prune_fraction, scope, rewind, controls, layer_fractions, seed)
    check_structured_config(structure, structure_options)
    settings.update(structure=structure, structure_options=dict(structure_options or {}))
    if log is not None:
        from lottery.reporting.trackers import TRACKERS

        TRACKERS.get(log)  # an unknown name fails before the run directory is made
    entry_state = snapshot(model)
    try:
        if init is not None:
            try:
                model.load_state_dict(dict(init), strict=True)
            except (RuntimeError, TypeError, AttributeError) as e:
                raise ConfigError(f"init= does not fit the model ({str(e).splitlines()[0]}); pass model.state_dict() "
                                  "of this model") from None
        prunable = list(Mask.ones_like(model, include=include))
        unknown = [k for k in settings["layer_fractions"] if k not in prunable]
        if unknown:
            raise ConfigError(f"layer_fractions names {unknown} are not prunable weights; known: {', '.join(prunable)}")
        if "reinit" in settings["controls"] and reinit is None:
            _check_resettable(model, prunable)
        init_state = entry_state if init is None else snapshot(model)
        name = name or type(model).__name__
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise ConfigError(f"name '{name}' may hold only letters, digits and _.+-")
        hashed = {k: v for k, v in settings.items() if v != DEFAULTS[k]}
        hashed.update(architecture=architecture_fingerprint(model, prunable), init=state_fingerprint(init_state))
        digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:10]
        config = {"name": name, "model": type(model).__name__, "dataset": dataset, "init": f"given:{hashed['init']}",
                  **settings, "out": str(out), "prunable": prunable}
        run = RunDir.for_settings(Path(out) / f"{name}-{digest}", hashed, config, driver="find_tickets")
        from lottery.reporting.trackers import open_tracker

        with run, open_tracker(log, run.path) as tracker:
            results = _Tickets(model, train_fn, run, settings, init_state, include, reinit, progress, tracker,
                               {"config": config, "hash": digest, "version": __version__}).run()
    finally:
        model.load_state_dict(entry_state)
    return {**results, "run_dir": str(run.path)}


def _settings(levels, prune_fraction, scope, rewind, controls, layer_fractions, seed) -> dict:
    """The validated settings that change results (one-line ConfigError for a bad one)."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
        raise ConfigError(f"levels must be an integer >= 0, got {levels!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    _rewind_mode(rewind)
    controls = list(parse_list(controls if controls is not None else ()))
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise ConfigError(f"unknown control '{bad[0]}'; known: {', '.join(CONTROLS)} (or none)")
    layer_fractions = dict(layer_fractions or {})
    for k, f in layer_fractions.items():
        check_fraction(f, f"layer_fractions['{k}']", allow_zero=True)
    return {"levels": levels, "prune_fraction": check_fraction(prune_fraction, "prune_fraction"), "scope": scope,
            "rewind": rewind, "controls": controls, "layer_fractions": dict(sorted(layer_fractions.items())),
            "seed": seed}


def _check_resettable(model: nn.Module, prunable: list[str]) -> None:
    """Every pruned layer must be redrawn by the reinit control, or the control would be the ticket itself."""
    for name in prunable:
        owner = model.get_submodule(name.rpartition(".")[0])
        if not callable(getattr(owner, "reset_parameters", None)):
            raise ConfigError(f"the reinit control cannot redraw '{name}': {type(owner).__name__} has no "
                              "reset_parameters(); pass reinit=lambda model, seed: ... or drop 'reinit' from controls")


class _Tickets:
    """One find_tickets experiment: the levels, their controls, and what is already on disk."""

    def __init__(self, model, train_fn, run: RunDir, settings: dict, init_state: dict, include, reinit,
                 progress: bool, tracker, header: dict):
        self.model, self.train_fn, self.rundir, self.s = model, train_fn, run, settings
        self.include, self.reinit, self.progress, self.tracker = include, reinit, progress, tracker
        self.mode, self.rewind_step = _rewind_mode(settings["rewind"])
        self.init_state = self._init_state(init_state)
        self.results = run.load_results() or {**header, "status": "running", "levels": []}

    def _say(self, line: str) -> None:
        if self.progress:
            print(f"find_tickets: {line}", file=sys.stderr, flush=True)

    def _init_state(self, state: dict) -> dict:
        """init.pt is written once; a stored one must be this init (the directory's hash says it is)."""
        path = self.rundir.path / "init.pt"
        try:
            stored = self.rundir.load_state("init.pt", like=state)
        except CorruptFileError as e:
            raise CorruptFileError(f"{path} (the init every level rewinds to) is damaged or not this model's: "
                                   f"{str(e).split(';')[0]}; restore it, or delete the run directory") from None
        if stored is None:
            if (self.rundir.path / "results.json").exists():
                raise CorruptFileError(f"{path} (the init every level rewinds to) is missing but levels are "
                                       "finished; restore init.pt from a copy, or delete the run directory")
            self.rundir.save_state("init.pt", state)
        elif state_fingerprint(stored) != state_fingerprint(state):
            raise CorruptFileError(f"{path} holds other weights than this model's init; restore it, or delete the run "
                                   "directory")
        return state

    # -- masks and rewind states -------------------------------------------------------------------------------
    def _stored_mask(self, level: int) -> Mask | None:
        """Level ``level``'s mask from disk; one that does not fit this model is an error, not a redo."""
        mask = self.rundir.load_mask(level)
        if mask is None:
            return None
        expected = list(Mask.ones_like(self.model, include=self.include))
        try:
            if sorted(mask) != sorted(expected):
                raise MaskMismatchError(f"it covers {len(mask)} weights named like '{next(iter(mask), '')}', "
                                        f"the model's prunable weights are {len(expected)} named like '{expected[0]}'")
            mask.check_fits(self.model)
        except MaskMismatchError as e:
            raise MaskMismatchError(f"{self.rundir.level_dir(level) / 'mask.npz'} does not fit this model ({e}); "
                                    "pass the model this run was started with, or another name= or out=") from None
        return mask

    def _mask(self, level: int) -> Mask:
        """Level 0 is dense; level L prunes level L-1's trained weights (saved, so recomputing is deterministic)."""
        if level == 0:
            return Mask.ones_like(self.model, include=self.include)
        try:
            stored = self._stored_mask(level)
            if stored is not None:
                return stored
        except CorruptFileError as e:
            self._say(f"level {level}: {e}; recomputing the mask")
        prev_mask = self._mask(level - 1)
        self.model.load_state_dict(self._final(level - 1))
        mask = prune_structured(self.model, prev_mask, self.s["prune_fraction"], self.s["structure"], self.s["scope"],
                                self.s["layer_fractions"], self.s["structure_options"])
        crash_point(f"prune:level{level}")
        self.rundir.save_mask(level, mask)
        return mask

    def _final(self, level: int) -> dict:
        state = self.rundir.load_state(f"level_{level:02d}/final.pt", like=self.init_state)
        if state is None:
            raise CorruptFileError(f"{self.rundir.level_dir(level) / 'final.pt'} is missing; delete level_{level:02d}")
        return state

    def _rewind_state(self, level: int) -> dict:
        if level == 0 or self.mode == "init":
            return self.init_state
        if self.mode == "lr":  # learning-rate rewinding: each level starts from the last level's weights
            return self._final(level - 1)
        state = self.rundir.load_state("rewind.pt", like=self.init_state)
        if state is None:
            raise CorruptFileError(f"{self.rundir.path / 'rewind.pt'} is missing; delete level_00 to retrain it")
        return state

    # -- one train_fn call -------------------------------------------------------------------------------------
    def _train(self, level: int, arm: str, start: dict, mask: Mask) -> tuple[dict, TicketRun]:
        """Rewind (verified bit for bit), call train_fn, check what it returned and that pruned weights stayed 0."""
        where = f"level {level} {arm}"
        rewind(self.model, start, mask)
        params = dict(self.model.named_parameters())
        mask = Mask({k: t.to(params[k].device) for k, t in mask.items()})
        run = TicketRun(level, arm, self.s["seed"], self.rewind_step, self.rundir.path, self.tracker)
        started = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=_cuda_devices(self.model)):
                torch.manual_seed(self.s["seed"])  # a loop drawing from the global RNG repeats itself on resume
                out = self.train_fn(self.model, mask, run)
        except BaseException as e:
            done = len(self.results["levels"])
            e.add_note(f"find_tickets: train_fn raised during {where}; the {done} finished level(s) are saved in "
                       f"{self.rundir.path}: call find_tickets again with the same arguments to resume")
            raise
        diverged = not all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        metrics = check_metrics(out, where, diverged)
        if metrics["status"] == "ok":
            for k, m in mask.items():
                n = int(torch.count_nonzero(params[k].detach()[~m]))
                if n:
                    raise TrainFnError(f"{where}: train_fn left {n} pruned weights of '{k}' non-zero; call "
                                       "lt.mask_gradients(model, mask) before each optimizer step, or "
                                       "mask.apply(model) after it")
        metrics["wall_time"] = time.perf_counter() - started
        acc = metrics["test_accuracy"]
        self._say(f"{where}: density {mask.density:.4f}, test accuracy {'-' if acc is None else f'{acc:.4f}'}"
                  f"{'' if metrics['status'] == 'ok' else ' (diverged)'}")
        self.tracker.summary(level, arm, mask, metrics)
        return metrics, run

    # -- the experiment ----------------------------------------------------------------------------------------
    def _finished(self, level: int) -> dict | None:
        """The level's results entry if it and its files are intact; a damaged level is trained again."""
        entry = next((e for e in self.results["levels"] if e["level"] == level), None)
        if entry is None:
            return None
        try:
            mask = self._stored_mask(level)
            if mask is None:
                raise CorruptFileError("mask missing")
            if mask.num_kept != entry.get("num_kept", mask.num_kept):
                raise CorruptFileError(f"mask keeps {mask.num_kept} weights, results.json says {entry.get('num_kept')}")
            self._final(level)
            if level == 0 and self.mode == "step" and self.rundir.load_state("rewind.pt", like=self.init_state) is None:
                raise CorruptFileError("rewind.pt missing")
        except CorruptFileError as e:
            self._say(f"level {level}: stored files are damaged ({e}); training this level again")
            keep_later = self.mode != "lr"  # only lr rewinding starts the next level from this level's weights
            self.results["levels"] = [e for e in self.results["levels"]
                                      if e["level"] < level or (keep_later and e["level"] > level)]
            return None
        return entry

    def _save(self) -> None:
        self.results["levels"].sort(key=lambda e: e["level"])
        self.rundir.save_results(self.results)

    def run(self) -> dict:
        why = None
        for level in range(self.s["levels"] + 1):
            try:
                entry = self._finished(level) or self._run_level(level)
            except StructureExhausted as e:  # an n:m mask cannot go below n of every m
                why = str(e)
                self._say(f"IMP stops before level {level}: {why}")
                break
            if entry["status"] == "ok":
                self._run_controls(level, entry)
            if entry["status"] != "ok":  # magnitudes of diverged weights mean nothing: stop pruning
                break
        diverged = any(e["status"] != "ok" for e in self.results["levels"])
        self.results["status"] = "diverged" if diverged else "exhausted" if why else "complete"
        if why:
            self.results["exhausted"] = why
        self._save()
        return self.results

    def _run_level(self, level: int) -> dict:
        started = time.perf_counter()
        mask = self._mask(level)
        metrics, run = self._train(level, "ticket", self._rewind_state(level), mask)
        if level == 0 and self.mode == "step":
            if run.rewind_state is None:
                raise TrainFnError(f"rewind='step:{self.rewind_step}' needs train_fn to call "
                                   f"run.save_rewind_state(model) at step {self.rewind_step} of level 0; it did not")
            self.rundir.save_state("rewind.pt", run.rewind_state)
        self.rundir.save_state(f"level_{level:02d}/final.pt", self.model.state_dict())
        if level == 0:
            self.rundir.save_mask(0, mask)
        entry = {"level": level, "density": mask.density, "num_kept": mask.num_kept,
                 "layer_density": mask.layer_density(), "collapsed_layers": collapsed_layers(mask),
                 **metrics, "controls": {}, "level_wall_time": time.perf_counter() - started}
        self.results["levels"] = [e for e in self.results["levels"] if e["level"] != level] + [entry]
        self._save()
        return entry

    def _run_controls(self, level: int, entry: dict) -> None:
        from lottery.drivers.imp import derived_seed  # the same per-control seeds as run_imp

        if level == 0:
            return
        for control in self.s["controls"]:
            if control in entry["controls"]:
                continue
            mask = self._mask(level)
            seed = derived_seed(self.s["seed"], control, level)
            if control == "reinit":  # the same mask, the model's own init drawn afresh
                reinit_model(self.model, seed, self.reinit)
                start, control_mask = snapshot(self.model), mask
            else:  # random_mask: the same per-layer counts, the same rewind state
                start, control_mask = self._rewind_state(level), random_structured_like(
                    self.model, mask, seed, self.s["structure"], self.s["structure_options"])
            metrics, _ = self._train(level, control, start, control_mask)
            entry["controls"][control] = metrics
            self._save()
