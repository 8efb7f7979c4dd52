"""What the ViT and the GPT share: pre-LayerNorm blocks on torch's attention, their checks, what they prune.

A block is ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))`` (pre-LayerNorm, as GPT-2 and ViT): attention is one
``qkv`` Linear, ``F.scaled_dot_product_attention`` and an output ``proj``; the MLP is ``fc1``, the model's
``activation`` (relu unless told: its gain is what the init schemes read), ``fc2``. Both models write
``model.residual_outputs``, the layers whose outputs are added into the residual stream (every ``proj`` and
``fc2``): the ``gpt2`` init scheme scales those by 1/sqrt(their number), GPT-2's 1/sqrt(2 * layers).

What IMP prunes (``model.prunable_parameters()``, which ``lottery.masks.default_prunable`` honours): the weight of
every ``nn.Linear`` — attention projections, MLP weights and the classifier head. Embeddings (token, position,
ViT's patch projection), LayerNorm weights and biases only when the model option ``also_prune`` names them
(``also_prune=["embeddings", "norms", "biases"]``, any subset), or through ``Mask.ones_like(model, include=...)``.
"""
from __future__ import annotations

from numbers import Integral, Real

import torch.nn.functional as F
from torch import nn

from lottery.errors import ConfigError
from lottery.models.common import make_activation

EXTRAS = ("embeddings", "norms", "biases")


def positive_int(model: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(f"{model}: {name} must be a positive integer, got {value!r}")
    return int(value)


def check_sizes(model: str, width: object, depth: object, heads: object, mlp_ratio: object
                ) -> tuple[int, int, int, int]:
    """``(width, depth, heads, mlp hidden units)``, or one line naming the bad size."""
    width, depth, heads = (positive_int(model, n, v) for n, v in (("width", width), ("depth", depth),
                                                                    ("heads", heads)))
    if width % heads:
        divisors = [h for h in range(1, width + 1) if width % h == 0][:8]
        raise ConfigError(f"{model}: heads={heads} does not divide width={width} (each head gets width/heads "
                          f"dimensions); pick heads among {', '.join(map(str, divisors))}, ...")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, Real) or not mlp_ratio > 0:
        raise ConfigError(f"{model}: mlp_ratio must be a number > 0 (hidden units per width), got {mlp_ratio!r}")
    return width, depth, heads, max(1, round(width * mlp_ratio))


def check_also_prune(model: str, also_prune: object) -> tuple[str, ...]:
    items = (also_prune,) if isinstance(also_prune, str) else also_prune
    if not isinstance(items, (list, tuple)) or any(e not in EXTRAS for e in items):
        raise ConfigError(f"{model}: also_prune takes any of {', '.join(EXTRAS)} (e.g. also_prune=[\"biases\"]), "
                          f"got {also_prune!r}")
    return tuple(items)


class SelfAttention(nn.Module):
    """Multi-head self-attention: ``qkv`` (rows: all queries, then keys, then values, head after head), ``proj``."""

    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, t, width = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, width))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, activation: str, causal: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, causal)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, hidden, activation)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Base of both models: ``blocks``, a final ``norm`` and ``head``; subclasses embed and pool."""

    def __init__(self, width: int, depth: int, heads: int, hidden: int, num_classes: int, activation: str,
                 causal: bool, also_prune: tuple[str, ...]):
        super().__init__()
        self.blocks = nn.Sequential(*(Block(width, heads, hidden, activation, causal) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.activation, self.heads, self.also_prune = activation, heads, also_prune
        self.residual_outputs = [f"blocks.{i}.{layer}" for i in range(depth) for layer in ("attn.proj", "mlp.fc2")]

    def prunable_parameters(self) -> list[str]:
        """Names IMP prunes: every Linear weight, plus the kinds ``also_prune`` names (module order)."""
        names = []
        for prefix, module in self.named_modules():
            for pname, _ in module.named_parameters(prefix=prefix, recurse=False):
                kind = pname.rpartition(".")[2]
                if (isinstance(module, nn.Linear) and kind == "weight"
                        or "biases" in self.also_prune and kind == "bias"
                        or "norms" in self.also_prune and isinstance(module, nn.LayerNorm) and kind == "weight"
                        or "embeddings" in self.also_prune and kind == "weight"
                        and isinstance(module, (nn.Embedding, nn.Conv2d))):
                    names.append(pname)
        return names
