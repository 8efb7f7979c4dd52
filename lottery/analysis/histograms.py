"""Weight magnitudes of the weights a ticket keeps vs those it prunes, at initialization and after training.

Magnitude pruning keeps the weights that ended *large*; the question (Zhou et al. 2019) is whether they also
*started* large, or moved most. ``weight_histograms(run_dir, level)`` takes level ``level``'s mask and histograms
|w| of its kept and pruned weights at init (``init.pt``, what the ticket rewinds to) and at the end of the dense
training (level 0's final weights, by default; ``end_level`` picks another level's end — note that weights pruned
before that level are exactly zero there).

>>> import torch
>>> from lottery.masks import Mask
>>> h = kept_pruned_histograms({"w": torch.tensor([0.1, -0.2, 0.9, 1.0])},
...                            Mask({"w": torch.tensor([False, False, True, True])}), bins=2)
>>> h["kept"].tolist(), h["pruned"].tolist()
([0, 2], [2, 0])
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import torch

from lottery.errors import CorruptFileError, LotteryError
from lottery.masks import Mask
from lottery.storage.rundir import RunDir


def kept_pruned_histograms(weights: Mapping[str, torch.Tensor], mask: Mask, bins: int = 40,
                           layer: str | None = None, value_range: tuple[float, float] | None = None) -> dict:
    """``{"edges", "kept", "pruned"}``: counts of |w| over common bins, for the weights ``mask`` keeps / prunes.

    Only the mask's tensors count (all of them, or ``layer``); ``value_range`` defaults to [0, max |w|].
    """
    names = [layer] if layer is not None else list(mask)
    missing = [n for n in names if n not in mask or n not in weights]
    if missing:
        raise LotteryError(f"{missing[0]!r} is not in both the mask and the weights; the mask holds: {', '.join(mask)}")
    kept = torch.cat([weights[n].detach().abs().flatten().cpu()[mask[n].flatten().cpu()] for n in names])
    pruned = torch.cat([weights[n].detach().abs().flatten().cpu()[~mask[n].flatten().cpu()] for n in names])
    if value_range is None:
        top = max(float(kept.max()) if kept.numel() else 0.0, float(pruned.max()) if pruned.numel() else 0.0)
        value_range = (0.0, top if top > 0 else 1.0)
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    return {"edges": edges,
            "kept": np.histogram(kept.double().numpy(), edges)[0],
            "pruned": np.histogram(pruned.double().numpy(), edges)[0]}


def weight_histograms(run_dir: str | os.PathLike, level: int, bins: int = 40, end_level: int = 0,
                      layer: str | None = None) -> dict:
    """Histograms of level ``level``'s kept vs pruned weights at init and at the end of ``end_level``'s training.

    Returns ``{"level", "density", "layer", "init": {...}, "final": {...}}`` with each part as
    ``kept_pruned_histograms`` gives it.
    """
    run = RunDir(run_dir)
    mask = run.load_mask(level)
    if mask is None:
        raise LotteryError(f"{run.path} has no mask for level {level} yet; finish that level first")
    init = run.load_state("init.pt")
    final = run.load_state(f"level_{end_level:02d}/final.pt")
    if init is None or final is None:
        raise CorruptFileError(f"{run.path} lacks init.pt or level_{end_level:02d}/final.pt; the run is incomplete")
    return {"level": level, "density": mask.density if layer is None else mask.layer_density()[layer],
            "layer": layer, "end_level": end_level,
            "init": kept_pruned_histograms(init, mask, bins, layer),
            "final": kept_pruned_histograms(final, mask, bins, layer)}


def plot_weight_histograms(data: dict, axes=None):
    """Two panels (init, end of training): kept and pruned |w| as overlaid histograms."""
    import matplotlib.pyplot as plt

    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    end = f"after training (level {data.get('end_level', 0)})"
    for ax, key, title in ((axes[0], "init", "at init"), (axes[1], "final", end)):
        h = data[key]
        centers = (h["edges"][:-1] + h["edges"][1:]) / 2
        width = h["edges"][1] - h["edges"][0]
        ax.bar(centers, h["pruned"], width=width, alpha=0.6, label="pruned", color="tab:red")
        ax.bar(centers, h["kept"], width=width, alpha=0.6, label="kept", color="tab:blue")
        ax.set_xlabel("|w|")
        ax.set_ylabel("weights")
        ax.set_title(f"{title}" + (f" · {data['layer']}" if data.get("layer") else ""), fontsize=9)
        ax.legend(fontsize=7)
    axes[0].figure.suptitle(f"level {data['level']} ticket ({100 * data['density']:.1f}% kept): kept vs pruned",
                              fontsize=9)
    if fig is not None:
        fig.tight_layout()
    return fig or axes[0].figure
