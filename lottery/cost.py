"""What a training run costs in arithmetic: the multiply-adds of every prunable layer, counted once per model.

A training step over a batch of B examples costs, by the usual estimate, 3 forward passes (the forward, and a
backward that computes the gradients of both the activations and the weights: two more of the same size), i.e.
6 FLOPs per multiply-add per example. Only Linear and Conv layers are counted (norms, activations, pooling and
attention's score products are a few per cent of a step in the zoo's models and no mask touches them). The
*mask-aware* count scales each layer by the fraction of its weights the mask keeps — the compute a sparse kernel
could skip; the *dense-equivalent* count is what dense hardware spends whatever the mask.

>>> from lottery.models import build_model
>>> macs = layer_macs(build_model("lenet_300_100", (1, 28, 28), 10), (1, 28, 28))
>>> sum(macs.values())  # 784·300 + 300·100 + 100·10
266200
>>> step_flops(macs, None, batch=60)  # one Adam step at batch 60: ~0.096 GFLOP
95832000.0
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

FLOPS_PER_MAC_TRAINING = 6  # forward (2 per multiply-add) + backward (2 × the forward)
_COUNTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layer_macs(model: nn.Module, example) -> dict[str, int]:
    """Multiply-adds of one example's forward pass, per ``<layer>.weight`` of every Linear / Conv layer (a layer
    applied at several positions — a conv's output pixels, a transformer's tokens — counts each). ``example``: an
    input shape (float zeros are fed) or one real input with its batch dimension of 1 (token ids, say)."""
    names = {module: name for name, module in model.named_modules()}
    macs: dict[str, int] = {}

    def hook(module, inputs, output):
        positions = output.numel() // output.shape[0] // module.weight.shape[0]
        key = f"{names[module]}.weight" if names[module] else "weight"
        macs[key] = macs.get(key, 0) + module.weight.numel() * positions

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COUNTED)]
    was_training = model.training
    try:
        device = next(model.parameters()).device
        x = example if isinstance(example, torch.Tensor) else torch.zeros(1, *example)
        with torch.no_grad():
            model.eval()(x[:1].to(device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs


def step_flops(macs: Mapping[str, int], mask: Mapping[str, torch.Tensor] | None, batch: int) -> float:
    """Training FLOPs of one step over ``batch`` examples; with ``mask``, each layer scaled by its kept fraction."""
    total = 0.0
    for name, count in macs.items():
        kept = 1.0 if mask is None or name not in mask else float(mask[name].float().mean())
        total += count * kept
    return FLOPS_PER_MAC_TRAINING * total * batch
