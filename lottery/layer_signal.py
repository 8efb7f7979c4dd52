"""Per-layer signal during training: what an init scheme decides, visible in the user's own run.

At step 0 and at every evaluation the trainer calls a ``SignalProbe`` on a fixed batch of the validation split.
It records, for every prunable layer (Linear/Conv, in forward order), the standard deviation of the layer's output
(its pre-activation) and the L2 norm of the loss gradient with respect to the layer's weight. Vanishing signals
show as stds and gradient norms falling by orders of magnitude with depth (N(0, 0.01) on a deep ReLU net),
exploding ones as growth (N(0, 1)); a well-scaled init keeps them flat.

The probe runs in eval mode (no dropout, no batch-norm statistics updated, no random numbers drawn) and computes
gradients with ``torch.autograd.grad``, so it never touches ``.grad``, the optimizer or the RNG: training is
bit-identical with and without it. Its cost is one forward and backward pass of ``PROBE_SIZE`` examples per
evaluation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lottery.layers import WEIGHT_LAYERS

PROBE_SIZE = 256


class SignalProbe:
    """Records ``activation_std`` and ``grad_norm`` per layer at the steps it is called with."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, size: int = PROBE_SIZE):
        self.model = model
        self.layers = [(n, m) for n, m in model.named_modules()
                       if isinstance(m, WEIGHT_LAYERS) and isinstance(getattr(m, "weight", None), nn.Parameter)]
        xb = next(iter(x.batches(size))) if hasattr(x, "batches") else x[:size]  # streamed data: its first batch
        self.x, self.y = xb, y[: len(xb)]
        self.steps: list[int] = []
        self.activation_std: list[list[float | None]] = []
        self.grad_norm: list[list[float | None]] = []

    def __call__(self, step: int) -> None:
        outputs: dict[str, torch.Tensor] = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out, name=n: outputs.setdefault(name, out))
                 for n, m in self.layers]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                loss = F.cross_entropy(self.model(self.x).float(), self.y)
                weights = [m.weight for _, m in self.layers]
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
        self.steps.append(int(step))
        self.activation_std.append([_finite(outputs[n].detach().float().std()) if n in outputs else None
                                    for n, _ in self.layers])
        self.grad_norm.append([_finite(g.float().norm()) if g is not None else None for g in grads])

    def to_dict(self) -> dict:
        """JSON-ready: non-finite values (a diverging run) are stored as None."""
        return {"layers": [n for n, _ in self.layers], "steps": self.steps,
                "activation_std": self.activation_std, "grad_norm": self.grad_norm}


def _finite(t: torch.Tensor) -> float | None:
    v = float(t)
    return v if math.isfinite(v) else None
