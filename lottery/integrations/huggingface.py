"""Hugging Face ``Trainer``: ``LotteryCallback(mask)`` keeps pruned weights, and their optimizer state, at zero.

Inside a ``find_tickets`` ``train_fn``::

    def train_fn(model, mask, run):                     # model: e.g. a BertForSequenceClassification
        args = TrainingArguments("out", max_steps=1000, seed=run.seed, report_to=[], save_strategy="no")
        trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[LotteryCallback(mask)])
        trainer.train()
        return {"test_accuracy": accuracy(model, test)}

The default prunable weights of a transformer are its Linear layers (attention projections, feed-forward,
pooler, classifier); embeddings and LayerNorms are not pruned unless ``find_tickets(include=...)`` says so.
"""
from __future__ import annotations

from torch import nn

from lottery.errors import ConfigError
from lottery.masks import Mask, mask_gradients

try:
    from transformers import TrainerCallback
except ImportError:
    raise ConfigError("lottery.integrations.huggingface needs transformers: pip install transformers") from None


class LotteryCallback(TrainerCallback):
    """Mask the gradients of pruned weights before every optimizer step and zero the weights again after it.

    ``model``: the module the mask's names refer to (default: the model the Trainer trains).
    """

    def __init__(self, mask: Mask, model: nn.Module | None = None):
        self.mask, self.model = mask, model

    def _target(self, model: nn.Module | None) -> nn.Module:
        target = self.model if self.model is not None else model
        if target is None:
            raise ConfigError("LotteryCallback got no model from the Trainer; pass LotteryCallback(mask, model=...)")
        return target

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.mask.apply(self._target(model))  # also checks that the mask fits the model

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        mask_gradients(self._target(model), self.mask)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.mask.apply(self._target(model))
