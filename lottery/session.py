"""The experiment session under every driver: data, model, init state, run directory and processes of one config.

IMP, gradual pruning, pruning at init and the stability study all train through one ``Session``: the same
verified rewinding, the same training loop, the same ``init.pt`` (drawn once, then only read), the same
distributed context. A new driver is one module in ``lottery/drivers/`` that builds a Session inside
``with RunDir.for_config(cfg):`` (or ``with run.for_driver("NAME.json"):`` when it only reads a finished run),
reads its results file with ``run.driver_results`` (a damaged one is set aside and recomputed) and writes it with
``lottery.storage.atomic.save_json`` — it inherits the lock, resume, the damaged-file rules and, through
``train_from``, the verified rewinding. Only IMP splits its batches over torchrun's processes.
"""
from __future__ import annotations

import copy
import json
from contextlib import nullcontext

import torch

from lottery import distributed
from lottery.config import Config
from lottery.contract import check_fraction_names, check_pruned_zero, load_init
from lottery.data import load_dataset
from lottery.data.augment import check_inputs
from lottery.errors import ConfigError
from lottery.testing import crash_progress
from lottery import fused
from lottery.inits import init_weights
from lottery.masks import Mask
from lottery.models import build_model
from lottery.passes import Run, train_passes
from lottery.pruning.structure import check_layer_fractions
from lottery.reporting.progress import progress_bar
from lottery.rewind import rewind, rewind_state, snapshot
from lottery.storage.rundir import RunDir
from lottery.train import budget_steps, train


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def data_key(cfg: Config) -> tuple:
    """What decides the data a config trains on: configs with the same key can share one loaded data set."""
    return json.dumps(cfg.section("data"), sort_keys=True), str(resolve_device(cfg.device))


def read_dataset(cfg: Config):
    """``cfg``'s data set as loaded, on the CPU: the one place a config's data set is read (``load_data`` moves it
    to the device; a finished run's shapes are in its results.json, so reading them needs no data set)."""
    return load_dataset(cfg.dataset, root=cfg.data_root, val_size=cfg.val_size, **cfg.dataset_options)


def load_data(cfg: Config):
    """``cfg``'s data set, loaded and moved to its device (hand it to several Sessions with the same data_key)."""
    data = read_dataset(cfg)
    check_inputs(cfg.augment, data.input_shape, cfg.dataset)
    return data.to(resolve_device(cfg.device))


def data_shapes(data) -> dict:
    """What the model is built from besides the config, as a run's results.json records it: ``input_shape`` and
    ``num_classes`` (read back by ``network_shapes``)."""
    return {"input_shape": list(data.input_shape), "num_classes": int(data.num_classes)}


def network_shapes(cfg: Config, header: dict | None) -> tuple[tuple, int]:
    """``(input_shape, num_classes)`` of a run: from its results.json ``header`` when it records them, else (a run
    made before they were recorded) from the config's data set."""
    header = header or {}
    if isinstance(header.get("input_shape"), list) and isinstance(header.get("num_classes"), int):
        return tuple(int(d) for d in header["input_shape"]), header["num_classes"]
    data = read_dataset(cfg)
    return tuple(data.input_shape), int(data.num_classes)


def build_network(cfg: Config, input_shape, num_classes: int, device: torch.device | str | None = None):
    """``cfg``'s model for inputs of ``input_shape`` and ``num_classes`` classes, on ``device`` (default: the
    config's): the one place a config's model is built (sessions, compare-inits, seeds, gradual's checks, export)."""
    model = build_model(cfg.model, tuple(input_shape), int(num_classes), activation=cfg.activation,
                        **cfg.model_options)
    return model.to(resolve_device(cfg.device) if device is None else device)


class Session:
    """What every experiment driver needs for one config: data, model, init state, run directory, processes.

    Data and model are built from the config, ``init.pt`` is loaded or drawn (never redrawn once levels exist),
    and under torchrun rank 0 decides and the other ranks receive. A driver trains with ``train_from`` (rewind
    verified bit for bit, then the one training loop, then pruned weights checked to be zero), draws controls
    with ``fresh_init(seed)``, and starts later levels from ``rewind_state(level)``. The run directory's lock is
    the driver's to hold (``with run:``); IMP (``lottery.drivers.imp.Experiment``) is a Session with a level loop.
    """

    auto_steps = False  # whether this driver can take --steps auto (IMP: dense sets the budget)
    engine_owns_init = False  # IMP: the engine writes and checks init.pt (``init_state`` is None until it has)

    def __init__(self, cfg: Config, run: RunDir, dist: distributed.Dist = distributed.SINGLE, data=None):
        """``data``: the data set already loaded by ``load_data`` for a config of the same ``data_key`` (several
        sessions of one grid share it); None loads it."""
        self.cfg, self.rundir = cfg, run
        self.dist = dist  # several processes: rank 0 decides (init, masks, what is finished), the others receive
        self.device = resolve_device(cfg.device)
        self.data = data if data is not None else load_data(cfg)
        self.model = build_network(cfg, self.data.input_shape, self.data.num_classes, self.device)
        if cfg.steps == "auto":
            if not self.auto_steps:
                raise ConfigError(f"--steps auto sets the budget from IMP's dense level; {type(self).__name__} has "
                                  "none: give --steps N")
            if len(self.data.val[0]) == 0:
                raise ConfigError("--steps auto stops dense when its validation loss stops improving, but this data "
                                  "set has no validation split: set --val-size N (> 0) or give --steps N")
        self.total_steps = budget_steps(cfg, len(self.data.train[0]))
        self.rewind_step = cfg.rewind_step()
        if self.rewind_step is not None and self.rewind_step >= self.total_steps:  # K = T: later levels train 0 steps
            where = "beyond" if self.rewind_step > self.total_steps else "at the end of"
            raise ConfigError(f"rewind step {self.rewind_step} is {where} the {self.total_steps} training steps: later "
                              f"levels would train no steps; pick step:K with K below {self.total_steps}")
        check_fraction_names(list(Mask.ones_like(self.model)), cfg.layer_fractions)  # now, not after level 0
        check_layer_fractions(self.model, cfg.structure, cfg.structure_options, cfg.layer_fractions)
        self.init_state = None if self.engine_owns_init else self.from_main(
            lambda: load_init(self.rundir, self.initial_state, self.model.state_dict()))
        self.progress = cfg.progress and dist.is_main
        self.pack = fused.resolve_pack(cfg.pack, self.model)  # networks per fused pass (lottery/fused.py)

    # -- setup --------------------------------------------------------------------------------------------
    def fresh_init(self, seed: int, cfg: Config | None = None) -> dict[str, torch.Tensor]:
        """Draw the configured init scheme (``cfg``'s, for another scheme) with ``seed`` into the model and return
        a snapshot of it.

        What the scheme does not set (PReLU slopes, custom parameters and buffers) comes from ``init.pt``, never
        from the weights the model was last trained to: a control starts untrained.
        """
        cfg = cfg or self.cfg
        if getattr(self, "init_state", None) is not None:
            self.model.load_state_dict(self.init_state)
        init_weights(self.model, cfg.init, seed=seed, scale=cfg.init_scale,
                     data=self.data.train[0][: cfg.batch_size * 5], **cfg.init_options)
        return snapshot(self.model)

    def initial_state(self) -> dict[str, torch.Tensor]:
        """What ``init.pt`` holds when the run has none: the init scheme drawn with the config's seed (written
        once, then only read: ``lottery.contract.load_init``)."""
        return self.fresh_init(self.cfg.seed)

    def from_main(self, make) -> dict[str, torch.Tensor]:
        """A state that rank 0 loads or computes (``make``), on this device on every rank."""
        return {k: v.to(self.device) for k, v in self.dist.share_tensors(make).items()}

    def shared_mask(self, make) -> Mask:
        return self.dist.share_mask(make).to(self.device)

    def bar(self, total: int, desc: str, leave: bool = False):
        return progress_bar(total, desc, leave) if self.progress else nullcontext()

    # -- one training run ---------------------------------------------------------------------------------
    def train_from(self, start_state: dict, mask: Mask, desc: str, *, point: str | None = None,
                   seed: int | None = None, steps: int | None = None, check_zeros: bool = True, **options):
        """Rewind the model to ``start_state`` under ``mask`` (verified bit for bit), train, verify zeros.

        ``desc`` labels the progress bar; ``point`` names the crash point of its steps (lottery/testing.py; none
        without it); ``seed`` is the data order (default the config's); ``steps`` a shorter budget (the stability
        study's first k steps); ``check_zeros=False`` leaves the check to the caller (the IMP engine checks every
        run it records). ``options`` go to ``lottery.train.train`` (snapshot_step, start_step, step_hook,
        early_stop_from); a step hook may replace the mask as training goes: the check reads the final one."""
        rewind(self.model, start_state, mask)
        cfg = self.cfg if steps is None else self.cfg.replace(steps=steps, epochs=None)
        total = self.total_steps if steps is None else steps
        with self.bar(total - options.get("start_step", 0), desc) as bar:
            result = train(self.model, self.data, cfg, mask, seed=self.cfg.seed if seed is None else seed,
                           progress=crash_progress(bar, point), dist=self.dist if self.dist.active else None,
                           **options)
        if result.status == "ok" and check_zeros:
            check_pruned_zero(self.model, result.mask if result.mask is not None else mask, desc)
        return result

    def train_many(self, runs: list, on_done) -> None:
        """Train independent runs ``(start, mask, desc, point)`` from step 0, all on this config's data order
        (``point``: the run's crash point, see ``train_from``); ``start()`` gives the run's start state when it is
        about to train (a fresh init is drawn then, not held for the rest);
        ``on_done(i, result)`` records run ``i`` (in order, as soon as its pass ends, so a kill loses one pass).

        With ``pack`` > 1 they train in the fused passes the scheduler makes (lottery/passes.py: at most ``pack``
        networks, split evenly, one shared batch per step; the same results up to float rounding); otherwise one
        after another through ``train_from``."""
        scheduled = [Run(self, lambda start=start, mask=mask: (start(), mask), desc, point, tag=i)
                     for i, (start, mask, desc, point) in enumerate(runs)]
        train_passes(scheduled, self.pack, lambda run, model, result: on_done(run.tag, result),
                     label=lambda chunk: (f"fused: {len(chunk)} runs", "train:fused"))

    def train_pass(self, runs: list, seeds: list[int], desc: str, point: str, progress: bool | None = None,
                   steps: int | None = None, check_zeros: bool = True) -> list:
        """One fused pass: copies of the model, each rewound to its ``(start, mask, name)`` (verified) and trained
        on its seed's data order, all together on this config's data (lottery/fused.py) for ``steps`` (None: the
        config's budget); pruned weights checked after (unless ``check_zeros=False``: the caller checks). Returns
        ``(model, TrainResult)`` per run. ``point``: the crash point of its steps. Which runs share a pass is the
        scheduler's to decide (lottery/passes.py)."""
        models = []
        for start, mask, _ in runs:
            model = copy.deepcopy(self.model)
            rewind(model, start, mask)
            models.append(model)
        show = self.progress if progress is None else progress
        cfg = self.cfg if steps is None else self.cfg.replace(steps=steps, epochs=None)
        with progress_bar(self.total_steps if steps is None else steps, desc) if show else nullcontext() as bar:
            results = fused.train_fused(models, self.data, cfg, [mask for _, mask, _ in runs], seeds=seeds,
                                        progress=crash_progress(bar, point))
        for model, (_, mask, name), result in zip(models, runs, results):
            if result.status == "ok" and check_zeros:
                check_pruned_zero(model, mask, name)
        return list(zip(models, results))

    def rewind_state(self, level: int) -> dict[str, torch.Tensor]:
        """Where level ``level``'s ticket starts under ``cfg.rewind`` (init, lr or step:K)."""
        return rewind_state(self.rundir, self.init_state, self.cfg.rewind, level)
