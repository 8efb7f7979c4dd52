"""The error barrier on the straight line between two trained networks (linear mode connectivity).

Two networks are linearly connected when the error along ``(1 - α) a + α b`` never rises above their endpoints'.
The barrier is the highest error on the line minus the mean of the two endpoint errors. ``lottery stability``
measures it between two copies trained with different data orders; IMP (``--barrier-points``) between each level's
trained weights and those of the level it pruned: successive levels stay connected while they match dense, so the
barrier is a cheap signal of where the frontier lies.

Interpolation uses ``torch.lerp``, which returns the endpoints bit for bit at α = 0 and α = 1. BatchNorm running
statistics of two networks do not interpolate meaningfully: for networks with BatchNorm every point's statistics
(endpoints included) are recomputed from the training inputs (cumulative average over batches in training mode)
before evaluation; networks without BatchNorm are evaluated as they are.
"""
from __future__ import annotations

import torch
from torch import nn

from lottery.errors import ConfigError
from lottery.rewind import snapshot
from lottery.train import evaluate


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, x: torch.Tensor, batch: int = 500) -> None:
    """Reset BatchNorm running statistics and re-estimate them over ``x`` (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    was_training = model.training
    model.train()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    model.train(was_training)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum


@torch.no_grad()
def interpolation_errors(model: nn.Module, state_a: dict, state_b: dict, x: torch.Tensor, y: torch.Tensor,
                         points: int = 21, batchnorm_x: torch.Tensor | None = None) -> tuple[list, list]:
    """Error on ``(x, y)`` of ``(1 - α) a + α b`` at ``points`` evenly spaced α in [0, 1] (both ends included);
    ``batchnorm_x``: the inputs BatchNorm statistics are recomputed from (networks with BatchNorm). The model is
    left holding the last point's weights."""
    if points < 2:
        raise ConfigError(f"points must be >= 2 (α = 0 and α = 1 at least), got {points}")
    alphas = [i / (points - 1) for i in range(points)]
    bn = has_batchnorm(model)
    if bn and batchnorm_x is None:
        raise ValueError("the model has BatchNorm: pass batchnorm_x (training inputs) to recompute its statistics")
    errors = []
    for alpha in alphas:
        mixed = {k: torch.lerp(a, state_b[k], alpha) if a.is_floating_point() else a for k, a in state_a.items()}
        model.load_state_dict(mixed)
        if bn:
            recompute_batchnorm(model, batchnorm_x)
        errors.append(1.0 - evaluate(model, x, y)[1])
    return alphas, errors


def barrier_height(errors: list) -> float:
    """The highest error on the line minus the mean of the endpoints' (0 for a flat or convex path)."""
    return max(errors) - (errors[0] + errors[-1]) / 2


def error_barrier(model: nn.Module, state_a: dict, state_b: dict, x: torch.Tensor, y: torch.Tensor,
                  points: int = 5, batchnorm_x: torch.Tensor | None = None) -> dict:
    """``{"alphas", "errors", "barrier"}`` between two states on ``(x, y)``; the model's own weights are restored.

    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    >>> error_barrier(net, net.state_dict(), net.state_dict(), x, y)["barrier"]
    0.0
    """
    own = snapshot(model)
    try:
        alphas, errors = interpolation_errors(model, state_a, state_b, x, y, points, batchnorm_x)
    finally:
        model.load_state_dict(own)
    return {"alphas": alphas, "errors": errors, "barrier": barrier_height(errors)}
