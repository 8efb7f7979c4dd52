"""Data augmentation on the training device: a random crop from zero padding and a horizontal flip, per sample.

This is how the CIFAR papers trained their convnets (pad each image by 4 black pixels, crop back to its size at a
random offset, flip left-right with probability 1/2). Here it runs on a whole batch at once with tensor ops (one
gather, no per-sample Python loop), and the random draws come from a generator seeded by the run's seed and the
step, drawn on the CPU: the same batches on every device and thread count, after a resume, on every DDP rank, and for
each network of a fused pass. The draws are made for the whole (global) batch and then sliced like its indices.

Given the same offsets and flips, the pixels are those of torchvision's ``RandomCrop(size, padding=pad)`` followed
by ``RandomHorizontalFlip`` (tests/test_augment.py). "Black" is a zero pixel before normalization: each data set
hands its normalized value per channel (``Dataset.fill``), as padding the raw image and normalizing after would.
"""
from __future__ import annotations

import hashlib

import torch

from lottery.errors import ConfigError

AUGMENTS = ("crop_flip",)
DEFAULTS = {"crop_flip": {"pad": 4, "flip": True}}


def check(augment: str | None, options: dict) -> dict:
    """The complete options of ``augment`` (defaults filled in, so both spellings hash alike), or a ConfigError."""
    if augment is None:
        if options:
            raise ConfigError("augment_options are set but augment is not; add augment = \"crop_flip\"")
        return {}
    if augment not in AUGMENTS:
        raise ConfigError(f"unknown augment '{augment}'; known: {', '.join(AUGMENTS)} (or leave it unset)")
    if not isinstance(options, dict):
        raise ConfigError(f"augment_options must be a table / key=value list, got {options!r}")
    unknown = sorted(set(options) - set(DEFAULTS[augment]))
    if unknown:
        raise ConfigError(f"unknown augment option '{unknown[0]}'; {augment} takes: {', '.join(DEFAULTS[augment])}")
    full = {**DEFAULTS[augment], **options}
    if type(full["pad"]) is not int or not 0 <= full["pad"] <= 64:
        raise ConfigError(f"augment option pad must be an integer in [0, 64] (pixels), got {full['pad']!r}")
    if type(full["flip"]) is not bool:
        raise ConfigError(f"augment option flip must be true or false, got {full['flip']!r}")
    return full


def check_inputs(augment: str | None, input_shape: tuple, dataset: str = "this data set") -> None:
    """Refuse ``augment`` on inputs that are not images (channels, height, width) when the data is loaded, before a
    run directory holds anything, not at the first training step."""
    if augment is not None and len(input_shape) != 3:
        raise ConfigError(f"augment {augment} crops and flips images (channels, height, width), but {dataset} gives "
                          f"inputs of shape {tuple(input_shape)}; drop --augment for this data set")


def draw(seed: int, step: int, n: int, pad: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row offsets, column offsets (each in [0, 2 * pad]) and flips of step ``step``'s ``n`` samples, on the CPU.

    A generator of its own per (seed, step): nothing else draws from it, so the batch of step k is known without
    replaying steps 0..k-1 (a resumed or late-rewound run gets the same batches).
    """
    digest = hashlib.sha256(f"{int(seed)}/augment/{int(step)}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return offsets[0], offsets[1], flips


def crop_flip(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, flips: torch.Tensor, pad: int,
              fill: tuple | float = 0.0) -> torch.Tensor:
    """``x`` (B, C, H, W) cropped from its ``pad``-padded copy at (``rows``, ``cols``), then flipped where ``flips``.

    Pixel (i, j) of sample b reads padded (rows[b] + i, cols[b] + j') with j' = W-1-j when flipped: one gather over
    source indices, and the fill value where they fall in the padding (no padded copy of the batch is made).
    """
    if x.dim() != 4:
        raise ConfigError(f"augmentation needs image batches (batch, channels, height, width), got shape "
                          f"{tuple(x.shape)}; drop --augment for this data set")
    b, c, h, w = x.shape
    device = x.device
    rows, cols, flips = rows.to(device), cols.to(device), flips.to(device)
    i = rows[:, None] + torch.arange(h, device=device) - pad  # (B, H) source rows
    j = torch.arange(w, device=device).expand(b, w)
    j = torch.where(flips[:, None], w - 1 - j, j) + cols[:, None] - pad  # (B, W) source columns
    inside = ((i >= 0) & (i < h))[:, :, None] & ((j >= 0) & (j < w))[:, None, :]  # (B, H, W)
    flat = i.clamp(0, h - 1)[:, :, None] * w + j.clamp(0, w - 1)[:, None, :]  # (B, H, W) source pixel
    out = x.reshape(b, c, h * w).gather(2, flat.reshape(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)
    if pad:
        value = torch.as_tensor(fill, dtype=x.dtype, device=device).reshape(-1)
        value = value.view(1, -1, 1, 1) if value.numel() > 1 else value.view(())
        out = torch.where(inside[:, None], out, value)
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
        memory_format=torch.channels_last) and c > 1 else out


def augment_batch(x: torch.Tensor, augment: str | None, options: dict, seed: int, step: int, *,
                  fill: tuple | float = 0.0, shard=None, global_size: int | None = None) -> torch.Tensor:
    """The training batch of ``step`` after augmentation (``x`` itself when ``augment`` is None).

    Under DDP ``x`` is this process's slice of a global batch of ``global_size`` samples and ``shard(t)`` slices a
    per-sample tensor as the batch's indices were sliced: the draws are made for the global batch, so every rank
    applies the crops a single process would apply to those samples.
    """
    if augment is None:
        return x
    opts = check(augment, options)
    rows, cols, flips = draw(seed, step, global_size or len(x), opts["pad"], opts["flip"])
    if shard is not None:
        rows, cols, flips = shard(rows), shard(cols), shard(flips)
    return crop_flip(x, rows, cols, flips, opts["pad"], fill)


def augment_stacked(x: torch.Tensor, augment: str | None, options: dict, seeds, step: int, *,
                    fill: tuple | float = 0.0) -> torch.Tensor:
    """Fused training's batch ``(K * B, C, H, W)``: network k's B samples augmented with its own seed ``seeds[k]``
    (one seed for all when one batch is shared), exactly as that network's own run would augment them."""
    if augment is None:
        return x
    opts = check(augment, options)
    per = len(x) // len(seeds)
    draws = [draw(s, step, per, opts["pad"], opts["flip"]) for s in seeds]
    rows, cols, flips = (torch.cat(parts) for parts in zip(*draws))
    return crop_flip(x, rows, cols, flips, opts["pad"], fill)
