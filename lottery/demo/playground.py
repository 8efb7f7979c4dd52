"""The demo's logic, without widgets: train a small MLP on a 2-D data set step by step, then compare tickets.

A ``Playground`` holds one network built with the project's zoo and init schemes. ``train()`` trains it with the
project's own trainer (``lottery.train.train``: momentum SGD, seeded batches) and yields progress every few steps
(so a front end can redraw the cost curve live); a loss or weight that stops being finite ends training with
``status == "diverged"`` instead of an exception. ``boundary()`` evaluates the net on a grid,
``layer_signal()`` measures per Linear layer the std of its output and the norm of its weight gradient (forward
hooks, one full-batch pass), and ``ticket(density)`` prunes the trained net by global magnitude, rewinds the kept
weights to their initial values and retrains them, next to a random mask with the same number of weights per
layer (the control).

>>> pg = Playground(Settings(dataset="moons", depth=1, width=8, steps=20))
>>> [p.step for p in pg.train(every=10)], pg.status
([10, 20], 'trained')
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Iterator

import torch
from torch import nn

import lottery as lt
from lottery.config import from_dict
from lottery.data.base import Dataset
from lottery.demo.data2d import DATASETS_2D, make_2d
from lottery.errors import ConfigError
from lottery.imp_levels import random_control
from lottery.inits import INIT_SCHEMES
from lottery.models.common import check_activation
from lottery.train import evaluate, make_optimizer, train


@dataclass(frozen=True)
class Settings:
    """Everything that decides a demo run; checked on creation, each bad value a one-line ``ConfigError``."""

    dataset: str = "moons"
    init: str = "kaiming_normal"
    scale: float = 1.0  # multiplies the scheme's weights: << 1 barely learns, >> 1 diverges
    init_options: dict = field(default_factory=dict)  # e.g. {"std": 100.0} for init="normal"
    activation: str = "relu"
    depth: int = 3  # hidden layers
    width: int = 32  # units per hidden layer
    lr: float = 0.1
    momentum: float = 0.9
    steps: int = 300
    batch_size: int | None = None  # None: full batch
    n_samples: int = 400  # training points (as many again for testing)
    noise: float = 0.15
    seed: int = 0

    def __post_init__(self):
        DATASETS_2D.get(self.dataset)
        INIT_SCHEMES.get(self.init)
        check_activation(self.activation)
        for name in ("depth", "width", "steps", "n_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, Integral)
                                            or self.batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer or None (full batch), got {self.batch_size!r}")
        for name in ("scale", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, Real) or not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.lr > 1e30:  # the optimizer holds it as a float32
            raise ConfigError(f"lr must be at most 1e30, got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")


@dataclass
class Progress:
    """One report from ``Playground.train``: the step reached, the latest training loss, the run's status."""

    step: int
    loss: float
    status: str  # "training", "trained" or "diverged"


@dataclass
class LayerSignal:
    name: str  # the Linear layer, e.g. "fc1"
    activation_std: float  # std of the layer's output (pre-activation) over the training set
    grad_norm: float  # L2 norm of d(loss)/d(weight) on the full training set


@dataclass
class Arm:
    """A retrained sparse network: the ticket or its random-mask control."""

    model: nn.Module
    mask: lt.Mask
    accuracy: float
    status: str  # "trained" or "diverged"


class Playground:
    """One network on one 2-D data set; see the module docstring."""

    def __init__(self, settings: Settings | None = None):
        self.settings = s = settings or Settings()
        self.x, self.y = make_2d(s.dataset, s.n_samples, s.noise, seed=s.seed)
        self.x_test, self.y_test = make_2d(s.dataset, s.n_samples, s.noise, seed=s.seed + 10_000)
        # the trainer's view of the demo: the training set doubles as the validation split (nothing stops early)
        self._data = Dataset(s.dataset, (self.x, self.y), (self.x, self.y), (self.x_test, self.y_test), 2, (2,))
        self._config = from_dict(dict(optimizer="sgd", lr=s.lr, momentum=s.momentum, batch_size=s.batch_size or
                                      s.n_samples, steps=s.steps, seed=s.seed, fused=False, record_signal=False,
                                      progress=False, device="cpu"))
        self.model = self._fresh_model()
        self.init_state = lt.snapshot(self.model)
        self.losses: list[float] = []
        self.status = "ready"  # -> "trained" or "diverged"
        self._arms: dict[float, dict[str, Arm]] = {}

    def _fresh_model(self) -> nn.Module:
        s = self.settings
        model = lt.build_model("mlp", (2,), 2, activation=s.activation, hidden=[s.width] * s.depth)
        return lt.init_weights(model, s.init, seed=s.seed, scale=s.scale, data=self.x, **s.init_options)

    # -- training -----------------------------------------------------------------------------------------------
    def train(self, every: int = 10) -> Iterator[Progress]:
        """Train ``settings.steps`` SGD steps, yielding a ``Progress`` every ``every`` steps and at the end."""
        losses: list[float] = []
        self.losses = losses
        self.status = "training"
        for progress in self._train(self.model, None, losses, every):
            self.status = progress.status
            yield progress

    def _train(self, model: nn.Module, mask: lt.Mask | None, losses: list[float], every: int) -> Iterator[Progress]:
        """The project's one trainer (``lottery.train.train``), ``every`` steps at a time: each call continues the
        last (``start_step``: the same data order, the same optimizer and its momentum), so the whole run is the
        one a single call would make, with a yield to the front end between calls. The step hook records the
        loss on the training set before each update (the curve the front end draws: one point per step)."""
        s = self.settings
        cfg = self._config
        optimizer = make_optimizer(model, cfg)

        def record(step: int, _optimizer) -> None:
            if step == len(losses) < s.steps:  # a call's last step is the next call's first
                losses.append(evaluate(model, self.x, self.y)[0])

        for start in range(0, s.steps, every):
            end = min(start + every, s.steps)
            result = train(model, self._data, dataclasses.replace(cfg, steps=end), mask, seed=s.seed,
                           optimizer=optimizer, start_step=start, step_hook=record)
            if result.status == "diverged":  # found at the evaluation where the loss stopped being finite
                yield Progress(result.curve[-1][0] if result.curve else end, losses[-1], "diverged")
                return
            yield Progress(end, losses[-1], "trained" if end == s.steps else "training")

    # -- what the plots show ------------------------------------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, model: nn.Module | None = None, split: str = "test") -> float:
        """Fraction classified correctly (``split`` "test" or "train"); 0.5 is chance."""
        x, y = (self.x_test, self.y_test) if split == "test" else (self.x, self.y)
        return float((self._logits(model or self.model, x).argmax(1) == y).float().mean())

    @staticmethod
    def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(model(x), nan=0.0)  # a diverged net predicts class 0 everywhere, no NaN downstream

    @torch.no_grad()
    def boundary(self, model: nn.Module | None = None, resolution: int = 80):
        """``(xs, ys, p)``: grid coordinates and P(class 1) on a ``resolution``² grid around the data."""
        lo = torch.minimum(self.x.min(0).values, self.x_test.min(0).values) - 0.3
        hi = torch.maximum(self.x.max(0).values, self.x_test.max(0).values) + 0.3
        xs = torch.linspace(float(lo[0]), float(hi[0]), resolution)
        ys = torch.linspace(float(lo[1]), float(hi[1]), resolution)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
        p = self._logits(model or self.model, grid).softmax(1)[:, 1]
        return xs, ys, p.reshape(resolution, resolution)

    def layer_signal(self, model: nn.Module | None = None) -> list[LayerSignal]:
        """Per Linear layer: the std of its output and its weight-gradient norm, on the whole training set."""
        model = model or self.model
        layers = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        stds: dict[str, float] = {}

        def record(name):
            return lambda module, inputs, output: stds.__setitem__(name, float(output.detach().double().std()))

        handles = [m.register_forward_hook(record(name)) for name, m in layers]
        try:
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(self.x), self.y).backward()
        finally:
            for h in handles:
                h.remove()
        signal = [LayerSignal(name, stds[name], float(m.weight.grad.double().norm()) if m.weight.grad is not None
                              else 0.0) for name, m in layers]
        model.zero_grad(set_to_none=True)
        return signal

    def hidden_units(self) -> dict[str, dict[str, int]]:
        """Distinct units per layer (``lottery.symmetry_report``): zeros init leaves one per hidden layer."""
        return lt.symmetry_report(self.model)

    # -- tickets ------------------------------------------------------------------------------------------------
    def ticket(self, density: float) -> dict[str, Arm]:
        """``{"ticket": Arm, "random": Arm}`` at ``density`` (fraction of weights kept), retrained from init.

        One-shot pruning (a single IMP level straight to ``density``, not many 20 % levels), so each arm costs one
        retraining and the slider answers in seconds. The ticket keeps the trained net's largest weights (global magnitude), rewound to their initial values;
        the random mask keeps as many weights in every layer, chosen at random (IMP's control draw, from a seed
        derived from the run's: a draw from the init's own seed would favour the init's larger weights). Both train as the dense net did.
        Results are cached per density.
        """
        if self.status != "trained":
            raise ConfigError("train the network first (a ticket is found by pruning the trained net)")
        if isinstance(density, bool) or not isinstance(density, Real) or not 0 < density <= 1:
            raise ConfigError(f"density must be in (0, 1], the fraction of weights kept; got {density!r}")
        key = round(float(density), 4)
        if key not in self._arms:
            full = lt.Mask.ones_like(self.model)
            mask = full if key == 1 else lt.prune_magnitude(self.model, full, 1 - key, scope="global")
            self._arms[key] = {"ticket": self._retrain(mask),
                               "random": self._retrain(random_control(self.model, mask, self.settings.seed, 1))}
        return self._arms[key]

    def _retrain(self, mask: lt.Mask) -> Arm:
        model = lt.rewind(copy.deepcopy(self.model), self.init_state, mask)
        status = "trained"
        for progress in self._train(model, mask, [], every=self.settings.steps):
            status = progress.status
        return Arm(model, mask, self.accuracy(model), status)
