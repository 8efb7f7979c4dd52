"""A small decoder-only GPT as a classifier: token + position embeddings, causal pre-LayerNorm blocks, and the
class read from the last position (modular arithmetic: ``a + b =`` predicts the answer).

Inputs are ``(batch, length)`` token ids stored as floats (data sets hand the trainer float32 tensors); the
model rounds them to integers. ``vocab`` defaults to ``num_classes + 2``: the answers plus two symbols (the
operation and ``=``), the layout of the ``modular_addition`` data set. ``context`` (default: the data's length) is
the longest sequence the position embedding covers. ``logits_per_position`` gives every position's logits: a
position never sees a later token. What IMP prunes by default and ``also_prune``: lottery/models/transformer.py.

>>> import torch
>>> from lottery.models import build_model
>>> model = build_model("gpt", (4,), 97, width=32, heads=2)
>>> model(torch.tensor([[3.0, 97, 5, 98]])).shape
torch.Size([1, 97])
"""
from __future__ import annotations

import torch
from torch import fx, nn

from lottery.errors import ConfigError
from lottery.models.common import MODELS
from lottery.models.transformer import Transformer, check_also_prune, check_sizes, positive_int


def token_ids(x: torch.Tensor, context: int) -> torch.Tensor:
    """``x`` as integer token ids, refusing sequences longer than ``context`` (a leaf for torch.fx tracing)."""
    if x.shape[-1] > context:
        raise ConfigError(f"gpt: sequences of length {x.shape[-1]} exceed the model's context {context}; "
                          f"build it with context >= {x.shape[-1]}")
    return x.long()


fx.wrap("token_ids")  # structured pruning traces the model; the length check stays one call in its graph


class GPT(Transformer):
    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int, hidden: int, num_classes: int,
                 activation: str, also_prune: tuple[str, ...]):
        super().__init__(width, depth, heads, hidden, num_classes, activation, True, also_prune)
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.context = context

    def logits_per_position(self, x):
        """``(batch, length, classes)``: position i's logits depend on tokens 0..i only."""
        tokens = token_ids(x, self.context)
        h = self.tok(tokens) + self.pos.weight[: tokens.shape[-1]]
        return self.head(self.norm(self.blocks(h)))

    def forward(self, x):
        return self.logits_per_position(x)[:, -1]

    def example_input(self, input_shape: tuple[int, ...], batch: int, generator=None) -> torch.Tensor:
        """Random token ids shaped ``(batch, *input_shape)`` (what export checks and timings run on)."""
        return torch.randint(0, self.tok.num_embeddings, (batch, *input_shape), generator=generator).float()


@MODELS.register("gpt")
def gpt(input_shape, num_classes, activation="relu", *, width=128, depth=1, heads=4, context=None, mlp_ratio=4,
        vocab=None, also_prune=()):
    """A GPT over sequences shaped ``(length,)``; ``context`` must cover the length."""
    if len(input_shape) != 1:
        raise ConfigError(f"gpt takes token sequences shaped (length,), e.g. (4,) for 'a + b ='; got input_shape "
                          f"{input_shape}")
    length = input_shape[0]
    context = length if context is None else positive_int("gpt", "context", context)
    if length > context:
        raise ConfigError(f"gpt: the data's sequences of length {length} exceed context={context}; "
                          f"set context >= {length}")
    vocab = num_classes + 2 if vocab is None else positive_int("gpt", "vocab", vocab)
    width, depth, heads, hidden = check_sizes("gpt", width, depth, heads, mlp_ratio)
    return GPT(vocab, context, width, depth, heads, hidden, num_classes, activation,
               check_also_prune("gpt", also_prune))
