"""Experiment settings: one frozen dataclass whose fields carry their own help text.

The CLI flags, the TOML keys and the run-directory hash are all generated from these fields, so a setting is
declared once. Only settings that differ from the defaults enter the hash: adding a new option (with a default
that changes nothing) keeps every existing run directory valid.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lottery.data import DATASETS
from lottery.data.augment import check as check_augment
from lottery.errors import ConfigError
from lottery.init_variant import parse_init_variant
from lottery.inits import INIT_SCHEMES
from lottery.models import MODELS
from lottery.options import load_toml, option, parse_list, parse_options, read_int  # noqa: F401  (load_toml: Config files)
from lottery.pruning import PRUNERS, SCOPES, check_fraction, check_structured_config
from lottery.pruning.level_plan import check_level_plan
from lottery.pruning.structure import structure_options
from lottery.reporting.trackers import TRACKERS

CONTROLS = ("reinit", "random_mask")
CONTROL_INITS = ("dense", "sparse")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine")
_REWIND = re.compile(r"init|lr|step:(\d+)")


def parse_rewind(rewind: Any) -> int | None:
    """The one reading of the rewind grammar: ``init`` and ``lr`` -> None, ``step:K`` -> K; anything else is a
    one-line ConfigError."""
    m = _REWIND.fullmatch(rewind) if isinstance(rewind, str) else None
    if m is None:
        raise ConfigError(f"rewind must be init, lr or step:K (K >= 0), got '{rewind}'")
    return int(m.group(1)) if m.group(1) else None


def run_hash(hashed: dict) -> str:
    """The one hash of a run's name: of the results-changing settings that differ from the defaults (``lottery
    run``: ``Config.hashed_settings``; ``find_tickets``: ``Config.imp_settings`` plus the model's fingerprints)."""
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:10]


def read_steps(v: Any) -> int | str:
    """--steps: an integer, or auto."""
    if v == "auto":
        return v
    try:
        return read_int(v)
    except ConfigError:
        raise ConfigError(f"expected an integer or auto, got {v!r}") from None


# A setting belongs to one section, as open_lth groups its hyperparameters; what may differ between runs that
# share a data set, a fused pass or a comparison follows from the sections (``Config.fuse_key``,
# ``Config.comparison_settings``), never from a list of field names kept by hand.
SECTIONS = ("data", "model", "init", "training", "pruning", "run")


# one declaration helper per section: a new setting is one line in its section's block of Config
_data, _model, _init, _training, _pruning, _run = (functools.partial(option, section=name) for name in SECTIONS)


@dataclass(frozen=True)
class Config:
    """One IMP experiment. Defaults: the embedded MNIST-1D MLP run (experiments/mnist1d_mlp.toml) that finishes in
    minutes on a CPU."""

    # -- data: what it trains on -----------------------------------------------------------------------------
    dataset: str = _data("mnist1d", "data set name (see `lottery list`)")
    dataset_options: dict = _data({}, "extra data-set options as JSON or key=value,...")
    data_root: str | None = _data(None, "directory holding torchvision-format data sets (hashed as its absolute path: "
                                  "another folder is another run)")
    val_size: int | None = _data(None, "validation examples carved from the training set (default per data set)")
    augment: str | None = _data(None, "training-batch augmentation on the device: crop_flip (random crop from zero "
                                "padding + horizontal flip, seeded by seed and step); unset = none")
    augment_options: dict = _data({}, "augmentation options, e.g. pad=4,flip=true (crop_flip's defaults)")

    # -- model: the network ----------------------------------------------------------------------------------
    model: str = _model("mlp", "model name (see `lottery list`)")
    model_options: dict = _model({}, "extra model options as JSON or key=value,... (e.g. hidden=[300,100])")
    activation: str = _model("relu", "nonlinearity: relu, leaky_relu, tanh, sigmoid")

    # -- init: how its weights are drawn (compare-inits varies this section) ---------------------------------
    init: str = _init("xavier_normal", "weight-initialization scheme (see `lottery list`); also "
                      "SCHEME:KEY=VALUE...*SCALE, e.g. normal:std=0.01 (the compare-inits grammar)")
    init_scale: float = _init(1.0, "multiply the initial weights by this (too-small / too-large experiments)")
    init_options: dict = _init({}, "extra init options as JSON or key=value,... (e.g. std=0.01,bias=1.0)")

    # -- training: how each run trains -----------------------------------------------------------------------
    optimizer: str = _training("adam", "adam, adamw or sgd (with momentum)")
    lr: float = _training(2e-3, "learning rate")
    momentum: float = _training(0.9, "SGD momentum")
    weight_decay: float = _training(0.0, "weight decay")
    batch_size: int = _training(100, "training batch size")
    steps: int | str | None = _training(2000, "training steps per run (overridden by --epochs); auto: train dense "
                                        "until validation stops improving (lottery/train.py, AUTO_PATIENCE) and "
                                        "give every later run that many steps", parse=read_steps)
    epochs: float | None = _training(None, "training epochs per run; sets --steps from the training-set size")
    schedule: str = _training("constant", "learning-rate schedule: constant, step (x gamma at milestones) or cosine")
    milestones: tuple = _training((), "steps at which the step schedule multiplies the rate by --gamma",
                                  parse=lambda text: parse_list(text, int))
    gamma: float = _training(0.1, "step-schedule decay factor")
    warmup_steps: int = _training(0, "linear learning-rate warmup steps")
    eval_every: int = _training(100, "evaluate on the validation split every N steps (early-stop step)")
    fused: bool = _training(True, "fast kernels: torch's fused optimizer kernel (several times less memory traffic "
                            "per step) and channels_last convnets; the same update as torch's default kernel up to "
                            "float rounding; false for bit-identical results. Not --pack's fused passes (K networks "
                            "trained together, lottery/fused.py)")
    record_signal: bool = _training(True, "record each layer's activation std and weight-gradient norm at step 0 and "
                                    "every evaluation (layer_signal.png); costs one small forward/backward per "
                                    "evaluation", hashed=False)
    amp: bool = _training(False, "bf16 autocast for the training forward pass on CUDA (no effect on the CPU)")

    # -- pruning: how IMP prunes and what it compares against ------------------------------------------------
    levels: int = _pruning(15, "pruning levels after the dense level 0 (density 0.8^levels at 20 %)")
    prune_fraction: float = _pruning(0.2, "fraction of the remaining weights pruned per level, in (0, 1)")
    scope: str = _pruning("global", "rank weights across all layers (global) or within each layer (layer)")
    layer_fractions: dict = _pruning({}, "per-layer prune fractions overriding --prune-fraction, e.g. fc3.weight=0.1")
    min_kept_per_layer: int = _pruning(0, "every layer keeps at least this many of its highest-scored weights (guards "
                                       "against layer collapse); 0 = off")
    strategy: str = _pruning("magnitude", "pruning strategy (see `lottery list`)")
    structure: str = _pruning("unstructured", "mask structure: unstructured, neuron (whole units) or N:M (e.g. 2:4: "
                              "the same k of every M consecutive weights); controls follow it "
                              "(lottery/pruning/structure.py)")
    structure_options: dict = _pruning({}, "structure options: neuron takes norm=l2|l1 and refill=true|false")
    rewind: str = _pruning("init", "rewind survivors to: init, step:K (weights at step K of level 0; levels >= 1 then "
                           "train its steps K..T), or lr")
    controls: tuple = _pruning(CONTROLS, "controls per level: reinit,random_mask or none")
    early_bird: bool = _pruning(False, "early-bird levels: stop each level's training once the mask it would prune to "
                                "has stabilised (a mask search, no accuracy reported), then train the deepest mask "
                                "fully (lottery/pruning/level_plan.py)", switch=True)
    early_bird_epsilon: float = _pruning(0.1, "early-bird: normalised Hamming distance between consecutive candidate "
                                         "masks below which they count as the same, in (0, 1)")
    early_bird_window: int = _pruning(5, "early-bird: checks in a row (one per --eval-every) the distance must stay "
                                      "below epsilon")
    prune_schedule: str = _pruning("fixed", "fixed (--prune-fraction every level) or adaptive (prune more per level "
                                   "while levels match dense, half as much from the last matching level when one "
                                   "falls short)")
    target_density: float | None = _pruning(None, "stop pruning at this density, in (0, 1); unset = no target")
    budget: float | None = _pruning(None, "stop pruning before the cost exceeds this many dense trainings (> 1: "
                                    "the dense run costs 1); unset = no budget")
    plan_seeds: tuple = _pruning((), "adaptive steps judged over these seeds together (set by lottery run --seeds "
                                 "and lottery budget: every seed trains the same levels, each judged by the verdict "
                                 "over all of them); unset = this run's seed alone (the one-seed rule)",
                                 parse=lambda text: parse_list(text, int))
    barrier_points: int = _pruning(0, "measure the error barrier between each level's and its parent's trained "
                                   "weights at this many points on the line (validation split); 0 = off")
    barrier_stop: float | None = _pruning(None, "stop pruning once the barrier exceeds this error (e.g. 0.02); needs "
                                          "--barrier-points")
    control_init: str = _pruning("dense", "init of the controls: dense (as drawn for the dense network) or sparse "
                                 "(each unit's weights scaled by sqrt(fan-in / surviving fan-in): the calibrated "
                                 "control, whose signal does not shrink with density)")

    # -- run: seed, naming and where it runs (only the seed changes results) ---------------------------------
    seed: int = _run(0, "random seed (init, data order, controls)")
    name: str | None = _run(None, "run name; the directory is runs/<name>-<hash> (default: <model>-<dataset>)",
                            hashed=False)
    pack: int | str = _run("auto", "train up to this many independent runs (a level's ticket and controls; with "
                           "compare-inits, those of every trunk) in one fused pass; 1 = one at a time; same results up "
                           "to float rounding (lottery/fused.py); auto = 1 on a CPU, up to 32 small networks on CUDA",
                           hashed=False)
    device: str = _run("auto", "auto, cpu or cuda", hashed=False)
    out: str = _run("runs", "directory that holds run directories", hashed=False)
    progress: bool = _run(True, "no progress bars (progress = false in a config file)", hashed=False, switch=True)
    log: str | None = _run(None, "also write tracker files into the run directory: tensorboard or mlflow", hashed=False)

    # -- derived ------------------------------------------------------------------------------------------
    @property
    def fast_kernels(self) -> bool:
        """The ``fused`` setting by what it means (the key keeps its name: renaming it would change run hashes):
        torch's fused optimizer kernel and channels_last convnets, not lottery/fused.py's K networks in one pass."""
        return self.fused

    def hashed_settings(self) -> dict:
        """The non-default settings that can change results: what the run-directory hash covers."""
        out = {}
        for f in fields(self):
            if not f.metadata["hashed"]:
                continue
            value = _jsonable(getattr(self, f.name))
            if f.name == "data_root" and value is not None:  # where the data comes from changes the results
                value = str(Path(value).expanduser().resolve())
            default = _jsonable(f.default_factory() if f.default is dataclasses.MISSING else f.default)
            if value != default:
                out[f.name] = value
        if self.init.startswith("xavier_") and "gain" not in self.init_options:
            # xavier_* draws with Glorot's gain 1; this key keeps its runs apart from directories whose xavier_* drew
            # with the activation's gain (their config holds no such key)
            out["xavier_gain"] = 1
        return out

    def section(self, name: str) -> dict:
        """The settings of one section (SECTIONS), JSON-ready."""
        if name not in SECTIONS:
            raise ValueError(f"unknown config section '{name}'; known: {', '.join(SECTIONS)}")
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.metadata["section"] == name}

    def fuse_key(self) -> str:
        """Equal for configs whose runs may train in one fused pass (lottery/fused.py): they share the data, the
        network and the training; the init, pruning and seed sections are already in each run's start state, mask
        and data order (and the unhashed run settings do not reach training). The device places the data."""
        return json.dumps({**{s: self.section(s) for s in ("data", "model", "training")}, "device": self.device},
                          sort_keys=True)

    def comparison_settings(self) -> dict:
        """The hashed settings a compare-inits grid holds fixed: all but the init section and the seed."""
        fixed = {f.name for f in fields(self) if f.metadata["section"] not in ("init", "run")}
        return {k: v for k, v in self.hashed_settings().items() if k in fixed}

    def imp_settings(self) -> dict:
        """IMP's own hashed settings: the non-default ones of the pruning section and the seed. ``find_tickets``
        hashes exactly these (with its model's fingerprints in place of the data, model, init and training
        sections), so the same IMP settings hash the same under both entry points."""
        own = {f.name for f in fields(self) if f.metadata["section"] == "pruning"} | {"seed"}
        return {k: v for k, v in self.hashed_settings().items() if k in own}

    def hash(self) -> str:
        return run_hash(self.hashed_settings())

    def experiment_name(self) -> str:
        """``name``, or ``<model>-<dataset>`` when none is given, so a directory says what ran."""
        return self.name or f"{self.model}-{self.dataset}"

    def run_name(self) -> str:
        return f"{self.experiment_name()}-{self.hash()}"

    def drift_from(self, stored: dict) -> list[tuple[str, Any, Any]]:
        """``(setting, stored value, value now)`` for each hashed setting whose value differs from a run
        directory's stored full config. The hash covers only non-default settings, so when a default changes
        an old run keeps its hash: this is how a resume notices (settings the stored config lacks predate it and
        default to no change)."""
        mine = self.to_dict()
        return [(f.name, stored[f.name], mine[f.name]) for f in fields(self)
                if f.metadata["hashed"] and f.name in stored and _jsonable(stored[f.name]) != mine[f.name]]

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> "Config":
        return from_dict({**self.to_dict(), **changes})

    def rewind_step(self) -> int | None:
        return parse_rewind(self.rewind)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in sorted(v.items())}
    return v


FIELDS = {f.name: f for f in fields(Config)}


def from_dict(d: dict, source: str = "config") -> Config:
    """Build and validate a Config; unknown keys are an error naming the key."""
    unknown = [k for k in d if k not in FIELDS]
    if unknown:
        raise ConfigError(f"unknown {source} key '{unknown[0]}'; known keys: {', '.join(FIELDS)}")
    d = dict(d)
    if isinstance(d.get("init"), str) and any(c in d["init"] for c in ":*"):
        d = _expand_init(d)
    for k in ("controls", "milestones", "plan_seeds"):
        if k in d and isinstance(d[k], (list, str)):
            d[k] = parse_list(d[k], str if k == "controls" else int)
    _check_types(d, source)
    if isinstance(d.get("steps"), str) and d["steps"] != "auto":
        raise ConfigError(f"{source} key 'steps' must be an integer or auto, got {d['steps']!r}")
    if d.get("augment") is not None:  # defaults filled in: {} and {pad = 4, flip = true} are one run
        d["augment_options"] = check_augment(d["augment"], d.get("augment_options") or {})
    if d.get("structure_options"):  # defaults dropped: neuron and neuron with norm = "l2" are one run
        d["structure_options"] = structure_options(d.get("structure", "unstructured"), d["structure_options"])
    cfg = Config(**d)
    validate(cfg)
    return cfg


def _expand_init(d: dict) -> dict:
    """``init = "normal:std=0.01*2"`` (the compare-inits grammar) -> ``init``, ``init_options``, ``init_scale``, so
    both spellings give the same config and hash. A value given both ways must agree."""
    v = parse_init_variant(d["init"])
    options = d.get("init_options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"init_options must be a table / key=value list, got {options!r}")
    clash = sorted(k for k in v.options if k in options and options[k] != v.options[k])
    if clash:
        raise ConfigError(f"init option '{clash[0]}' is given twice (in init and init_options); give it once")
    out = {**d, "init": v.scheme, "init_options": {**options, **v.options}}
    if v.scale is not None:
        given = d.get("init_scale", 1.0)
        if given not in (1.0, v.scale):
            raise ConfigError(f"init '{d['init']}' sets the scale to {v.scale:g} but init_scale is {given!r}; "
                              "give it once")
        out["init_scale"] = v.scale
    return out


_KINDS = {str: ((str,), "a string"), int: ((int,), "an integer"), float: ((int, float), "a number"),
          bool: ((bool,), "true or false"), dict: ((dict,), "a table"), tuple: ((tuple, list), "a list")}


def _check_types(d: dict, source: str) -> None:
    """A value of the wrong type (``name = 5`` in a TOML file) is a one-line error naming the key, not a crash."""
    hints = typing.get_type_hints(Config)
    for key, value in d.items():
        options = typing.get_args(hints[key]) if isinstance(hints[key], types.UnionType) else (hints[key],)
        if value is None and type(None) in options:
            continue
        kinds = [_KINDS.get(t) for t in options if t is not type(None)]
        if None in kinds:  # an annotation not listed here: validate() has the last word
            continue
        if not any(isinstance(value, ok) and (bool in ok or not isinstance(value, bool)) for ok, _ in kinds):
            raise ConfigError(f"{source} key '{key}' must be {' or '.join(w for _, w in kinds)}, got {value!r}")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: Config) -> None:
    """Reject every bad setting up front, before anything is trained or written."""
    MODELS.get(cfg.model)
    DATASETS.get(cfg.dataset)
    INIT_SCHEMES.get(cfg.init)
    PRUNERS.get(cfg.strategy)
    if cfg.log is not None:
        TRACKERS.get(cfg.log)
    check_augment(cfg.augment, cfg.augment_options)
    check_fraction(cfg.prune_fraction, "prune_fraction")
    check_structured_config(cfg.structure, cfg.structure_options, cfg.strategy, cfg.min_kept_per_layer)
    check_level_plan(cfg)
    for k, f in cfg.layer_fractions.items():
        check_fraction(f, f"layer_fractions['{k}']", allow_zero=True)
    _check(cfg.scope in SCOPES, f"scope must be one of {', '.join(SCOPES)}, got '{cfg.scope}'")
    parse_rewind(cfg.rewind)
    bad = [c for c in cfg.controls if c not in CONTROLS]
    _check(not bad, f"unknown control '{bad[0] if bad else ''}'; known: {', '.join(CONTROLS)} (or none)")
    _check(cfg.init != "checkpoint" or "reinit" not in cfg.controls,
           "init 'checkpoint' loads the same weights whatever the seed, so the reinit control would be the ticket "
           "itself; use --controls random_mask (or none)")
    _check(cfg.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{cfg.optimizer}'")
    _check(cfg.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got '{cfg.schedule}'")
    _check(cfg.min_kept_per_layer == 0 or "min_kept" in inspect.signature(PRUNERS.get(cfg.strategy)).parameters,
           f"strategy '{cfg.strategy}' does not support min_kept_per_layer; use magnitude or random, or set it to 0")
    _check(isinstance(cfg.momentum, (int, float)) and cfg.momentum >= 0, f"momentum must be >= 0, got {cfg.momentum!r}")
    _check(isinstance(cfg.gamma, (int, float)) and cfg.gamma > 0, f"gamma must be > 0, got {cfg.gamma!r}")
    _check(isinstance(cfg.seed, int) and cfg.seed >= 0, f"seed must be an integer >= 0, got {cfg.seed!r}")
    for name in ("levels", "warmup_steps", "min_kept_per_layer"):
        v = getattr(cfg, name)
        _check(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{name} must be an integer >= 0, got {v!r}")
    _check(cfg.pack == "auto" or isinstance(cfg.pack, int) and not isinstance(cfg.pack, bool) and cfg.pack >= 1,
           f"pack must be an integer >= 1 (1 = one training run at a time) or auto, got {cfg.pack!r}")
    for name in ("batch_size", "eval_every"):
        v = getattr(cfg, name)
        _check(isinstance(v, int) and not isinstance(v, bool) and v > 0, f"{name} must be an integer > 0, got {v!r}")
    _check(cfg.steps is None or cfg.steps == "auto" or (isinstance(cfg.steps, int) and cfg.steps > 0),
           f"steps must be > 0 or auto, got {cfg.steps!r}")
    _check(cfg.steps != "auto" or cfg.epochs is None, "steps auto and epochs both set the budget; give one")
    _check(cfg.steps != "auto" or cfg.schedule != "cosine",
           "steps auto cannot run a cosine schedule (it needs the budget in advance); use constant or step")
    _check(cfg.control_init in CONTROL_INITS,
           f"control_init must be one of {', '.join(CONTROL_INITS)}, got '{cfg.control_init}'")
    _check(cfg.epochs is None or (isinstance(cfg.epochs, (int, float)) and 0 < cfg.epochs < 1e9),
           f"epochs must be > 0 and finite, got {cfg.epochs!r}")
    for name in ("momentum", "gamma", "weight_decay"):
        v = getattr(cfg, name)
        _check(not isinstance(v, float) or v == v and abs(v) != float("inf"), f"{name} must be finite, got {v!r}")
    _check(cfg.steps is not None or cfg.epochs is not None, "set a budget: steps or epochs")
    for name in ("lr", "init_scale"):
        v = getattr(cfg, name)
        _check(isinstance(v, (int, float)) and v > 0 and v == v and v != float("inf"), f"{name} must be > 0, got {v!r}")
    _check(isinstance(cfg.weight_decay, (int, float)) and cfg.weight_decay >= 0, "weight_decay must be >= 0")
    _check(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
           f"device must be auto, cpu or cuda, got '{cfg.device}'")
    if cfg.device.startswith("cuda"):
        _check(torch.cuda.is_available(), "--device cuda was given but CUDA is not available; use --device cpu or auto")
    _check(cfg.name is None or re.fullmatch(r"[A-Za-z0-9_.+-]+", cfg.name) is not None,
           f"name '{cfg.name}' may hold only letters, digits and _.+-")
    for k in ("model_options", "dataset_options", "init_options", "layer_fractions"):
        _check(isinstance(getattr(cfg, k), dict), f"{k} must be a table / key=value list")
        _check(_depth(getattr(cfg, k)) <= 16, f"{k} is nested too deeply; options are flat values or short lists")


def _depth(v: Any, limit: int = 17) -> int:
    """Nesting depth of lists and dicts, counted no further than ``limit`` (no recursion on hostile input)."""
    depth, level = 0, [v]
    while level and depth < limit:
        depth += 1
        level = [x for y in level for x in (y.values() if isinstance(y, dict) else y) if isinstance(x, (dict, list))]
    return depth
