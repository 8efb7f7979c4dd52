"""Saliency strategies for pruning at initialization: SNIP, GraSP and SynFlow score the weights before training.

Each is a registered ``PRUNERS`` strategy with the common signature, so ``--strategy snip`` also works as IMP's
pruning step, and each ends in ``prune_by_scores`` (exact counts per scope, ties broken by position, ``min_kept``
honoured). Scores are computed on a deep copy of the model with the current mask applied: the model passed in is
never touched (its BatchNorm statistics included). Magnitude at init is ``magnitude_init`` in ``magnitude.py``.

- ``snip`` (Lee et al. 2019): ``|g ⊙ w|`` for the cross-entropy of one batch; keeps the highest.
- ``grasp`` (Wang et al. 2020): ``S = -w ⊙ (H g)`` with H, g the Hessian and gradient of the loss on one batch,
  logits divided by a temperature (200, as in the authors' code). GraSP removes the weights with the *highest* S
  (removing them reduces the gradient norm least, or raises it) — so we hand ``prune_by_scores``, which removes
  the lowest, the scores ``-S = w ⊙ (H g)``.
- ``synflow`` (Tanaka et al. 2020): data-free. Every parameter and buffer is replaced by its absolute value, the
  network runs in eval mode (BatchNorm uses its running statistics) in float64 on an all-ones input, and the score
  is ``|w ⊙ ∂R/∂w|`` with ``R`` the sum of the outputs. 100 rounds, density falling exponentially to the target.
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lottery.errors import ConfigError
from lottery.masks import Mask
from lottery.pruning.budgets import prune_by_scores
from lottery.pruning.registry import PRUNERS
from lottery.pruning.schedules import EXPONENTIAL_ROUNDS, Scores, prune_iteratively

SCORE_BATCH = 256  # examples in the one batch SNIP and GraSP score on
GRASP_TEMPERATURE = 200.0
SYNFLOW_ROUNDS = EXPONENTIAL_ROUNDS


def _scoring_copy(model: nn.Module, mask: Mask) -> tuple[nn.Module, list[str], list[nn.Parameter]]:
    work = copy.deepcopy(model)
    mask.apply(work)
    params = mask.check_fits(work)
    return work, list(mask), [params[k] for k in mask]


def _batch(data, seed: int, size: int, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded batch of ``size`` training examples (all of them if there are fewer)."""
    if data is None:
        raise ConfigError(f"{who} scores weights on training data: pass data=(x, y)")
    x, y = data
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed)))[:size].to(x.device)
    return x[idx], y[idx]


def snip_scores(model: nn.Module, mask: Mask, data, seed: int = 0, batch_size: int = SCORE_BATCH) -> Scores:
    """Connection sensitivity ``|∂L/∂w ⊙ w|`` of the masked network on one batch (training mode)."""
    work, names, weights = _scoring_copy(model, mask)
    work.train()
    x, y = _batch(data, seed, batch_size, "snip")
    grads = torch.autograd.grad(F.cross_entropy(work(x), y), weights)
    return {k: (g * w).detach().abs() for k, g, w in zip(names, grads, weights)}


def grasp_scores(model: nn.Module, mask: Mask, data, seed: int = 0, batch_size: int = SCORE_BATCH,
                 temperature: float = GRASP_TEMPERATURE) -> Scores:
    """GraSP's ``S = -w ⊙ (H g)`` (the paper's sign: GraSP removes the *highest* S) on one batch.

    ``H g`` is a Hessian-gradient product by double backward: with ``g`` held fixed, ``∂(g·∇L)/∂w = H g``.
    """
    work, names, weights = _scoring_copy(model, mask)
    work.train()
    x, y = _batch(data, seed, batch_size, "grasp")
    with sdpa_kernel([SDPBackend.MATH]):  # attention's fused CPU kernel has no double backward; its math one has
        logits = work(x)
    grads = torch.autograd.grad(F.cross_entropy(logits / temperature, y), weights, create_graph=True)
    z = sum((g * g.detach()).sum() for g in grads)
    hg = torch.autograd.grad(z, weights)
    return {k: -(w.detach() * h) for k, w, h in zip(names, weights, hg)}


def _input_shape(model: nn.Module, data) -> tuple[int, ...]:
    """SynFlow needs only the input's shape: from ``data`` if given, else from a leading Linear layer."""
    if data is not None:
        return tuple(data[0].shape[1:])
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ConfigError("synflow without data cannot tell this model's input shape; pass data=(x, y) (only the "
                      "shape is used) or call synflow_scores(model, mask, input_shape=...)")


def synflow_scores(model: nn.Module, mask: Mask, input_shape: tuple[int, ...] | None = None) -> Scores:
    """``|w ⊙ ∂R/∂w|``, ``R = Σ f(1; |θ|)``: the synaptic flow through each weight, computed in float64."""
    work, names, weights = _scoring_copy(model, mask)
    return _synflow_linearized(_linearize(work), names, weights, input_shape or _input_shape(model, None))


def _linearize(work: nn.Module) -> nn.Module:
    """|θ| for every float parameter and buffer, float64, eval mode: with non-negative weights and input,
    ReLU passes everything and the network computes a positive multilinear function of |θ|."""
    work.double().eval()
    with torch.no_grad():
        for t in work.state_dict().values():  # state_dict tensors share storage with the module's
            if t.is_floating_point():
                t.abs_()
    return work


def _synflow_linearized(work: nn.Module, names: list[str], weights: list[torch.Tensor],
                        input_shape: tuple[int, ...]) -> Scores:
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=weights[0].device)
    grads = torch.autograd.grad(work(x).sum(), weights)
    return {k: (g * w).detach().abs() for k, g, w in zip(names, grads, weights)}


def prune_synflow(model: nn.Module, mask: Mask, fraction: float, scope: str = "global",
                  layer_fractions: Mapping[str, float] | None = None, rounds: int = SYNFLOW_ROUNDS,
                  input_shape: tuple[int, ...] | None = None, min_kept: int = 0) -> Mask:
    """Iterative SynFlow: the linearized copy is made once; each round zeroes the weights pruned so far."""
    work, names, weights = _scoring_copy(model, mask)
    work = _linearize(work)
    shape = input_shape or _input_shape(model, None)

    def score(current: Mask) -> Scores:
        current.apply(work)
        return _synflow_linearized(work, names, weights, shape)

    return prune_iteratively(score, mask, fraction, scope, layer_fractions, rounds, min_kept)


@PRUNERS.register("snip")
def _snip(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None, min_kept=0):
    return prune_by_scores(snip_scores(model, mask, data, seed), mask, fraction, scope, layer_fractions, min_kept)


@PRUNERS.register("grasp")
def _grasp(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None, min_kept=0):
    keep_low = {k: -s for k, s in grasp_scores(model, mask, data, seed).items()}  # remove the highest S
    return prune_by_scores(keep_low, mask, fraction, scope, layer_fractions, min_kept)


@PRUNERS.register("synflow")
def _synflow(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None, min_kept=0):
    shape = _input_shape(model, data)  # only the shape of the data is used
    return prune_synflow(model, mask, fraction, scope, layer_fractions, input_shape=shape, min_kept=min_kept)

