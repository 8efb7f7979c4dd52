"""ViT (Dosovitskiy et al. 2021) for small images: patches -> pre-LayerNorm transformer blocks -> class.

A ``patch`` x ``patch`` Conv2d with stride ``patch`` embeds the patches (7x7 on Fashion-MNIST: 16 tokens), a
learned position embedding ``pos`` is added, and the class comes from a class token (``pool="cls"``) or the mean
of the tokens (``pool="mean"``). The class token is a zero token in front whose position embedding ``pos[0]`` is
the learned vector (the same function as a separate token plus its position, one parameter fewer). What IMP prunes
by default and ``also_prune``: lottery/models/transformer.py.

>>> from lottery.models import build_model
>>> model = build_model("vit", (1, 28, 28), 10, patch=7, width=32, depth=1, heads=2)
>>> model.pos.weight.shape[0], model.prunable_parameters()[:2]
(17, ['blocks.0.attn.qkv.weight', 'blocks.0.attn.proj.weight'])
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from lottery.errors import ConfigError
from lottery.models.common import MODELS, image_shape
from lottery.models.transformer import Transformer, check_also_prune, check_sizes, positive_int

POOLS = ("cls", "mean")


class ViT(Transformer):
    def __init__(self, channels: int, tokens: int, patch: int, width: int, depth: int, heads: int, hidden: int,
                 num_classes: int, activation: str, pool: str, also_prune: tuple[str, ...]):
        super().__init__(width, depth, heads, hidden, num_classes, activation, False, also_prune)
        self.patch = nn.Conv2d(channels, width, patch, stride=patch)
        self.pos = nn.Embedding(tokens + (pool == "cls"), width)
        self.pool = pool

    def forward(self, x):
        h = self.patch(x).flatten(2).transpose(1, 2)  # (batch, patches, width)
        if self.pool == "cls":
            h = F.pad(h, (0, 0, 1, 0))  # the class token: zeros, made a learned vector by pos[0]
        h = self.norm(self.blocks(h + self.pos.weight))
        return self.head(h[:, 0] if self.pool == "cls" else h.mean(1))


@MODELS.register("vit")
def vit(input_shape, num_classes, activation="relu", *, patch=4, width=64, depth=2, heads=4, mlp_ratio=2,
        pool="cls", also_prune=()):
    """A ViT on (C, H, W) images; ``patch`` must divide H and W."""
    channels, height, side = image_shape("vit", input_shape, min_side=1)
    patch = positive_int("vit", "patch", patch)
    if height % patch or side % patch:
        fits = [d for d in range(1, min(height, side) + 1) if height % d == 0 and side % d == 0]
        raise ConfigError(f"vit: patch {patch} does not divide the {height}x{side} image; pick a divisor of both "
                          f"sides: {', '.join(map(str, fits))}")
    if pool not in POOLS:
        raise ConfigError(f"vit: pool must be 'cls' (class token) or 'mean' (mean of the tokens), got {pool!r}")
    width, depth, heads, hidden = check_sizes("vit", width, depth, heads, mlp_ratio)
    return ViT(channels, (height // patch) * (side // patch), patch, width, depth, heads, hidden, num_classes,
               activation, pool, check_also_prune("vit", also_prune))
