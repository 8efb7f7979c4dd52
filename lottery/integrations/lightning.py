"""PyTorch Lightning: ``LotteryCallback(mask)`` keeps pruned weights, and their optimizer state, at zero.

Inside a ``find_tickets`` ``train_fn``::

    def train_fn(model, mask, run):                     # model: your LightningModule
        trainer = lightning.Trainer(max_steps=1000, callbacks=[LotteryCallback(mask)], logger=False)
        trainer.fit(model, train_loader)
        return {"test_accuracy": trainer.test(model, test_loader)[0]["test_acc"]}

Unlike Lightning's own ``ModelPruning``, nothing here prunes or rewinds: find_tickets does both, after it has
recorded the metrics of the trained ticket, so what ``fit`` hands back is always the trained network.
"""
from __future__ import annotations

from torch import nn

from lottery.errors import ConfigError
from lottery.masks import Mask, mask_gradients

try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ConfigError("lottery.integrations.lightning needs PyTorch Lightning: pip install lightning") from None


class LotteryCallback(Callback):
    """Mask the gradients of pruned weights before every optimizer step and zero the weights again after it.

    A zero gradient keeps a pruned weight's momentum and Adam moments at zero too; re-applying the mask after the
    step also undoes anything else that moved them (a decoupled weight decay of 0 is 0; a custom optimizer's
    may not be). ``model``: the module the mask's names refer to, when it is a submodule of the LightningModule
    (default: the LightningModule itself).
    """

    def __init__(self, mask: Mask, model: nn.Module | None = None):
        self.mask, self.model = mask, model

    def _target(self, pl_module: nn.Module) -> nn.Module:
        return self.model if self.model is not None else pl_module

    def on_fit_start(self, trainer, pl_module) -> None:
        self.mask.apply(self._target(pl_module))  # also checks that the mask fits the model

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        mask_gradients(self._target(pl_module), self.mask)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.mask.apply(self._target(pl_module))
