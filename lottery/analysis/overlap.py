"""Mask overlap: how much two tickets share, as IoU (Jaccard) matrices across levels, seeds or init schemes.

IoU = |A ∩ B| / |A ∪ B| of the kept weights. Two independent random masks of densities a and b overlap by
ab / (a + b - ab) on average (``random_iou``): the baseline against which a "shared ticket" must stand out. Masks
of one run nest level after level, so there IoU is at most the ratio of the densities.

>>> import torch
>>> from lottery.masks import Mask
>>> a = Mask({"w": torch.tensor([True, True, False, False])})
>>> b = Mask({"w": torch.tensor([True, False, True, False])})
>>> iou_matrix({"a": a, "b": b}).tolist()
[[1.0, 0.3333333333333333], [0.3333333333333333, 1.0]]
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lottery.errors import LotteryError
from lottery.masks import Mask
from lottery.storage.rundir import RunDir
from lottery.storage.summary import load_summary


@dataclass
class Overlap:
    """An IoU matrix with the label and density of each mask (rows and columns in the same order)."""

    labels: list[str]
    densities: list[float]
    matrix: np.ndarray
    layer: str | None = None

    def random_baseline(self) -> np.ndarray:
        """Expected IoU of independent random masks with the same densities (1 on the diagonal)."""
        d = np.asarray(self.densities, dtype=float)
        base = np.array([[random_iou(a, b) for b in d] for a in d])
        np.fill_diagonal(base, 1.0)
        return base

    def format(self, digits: int = 3) -> str:
        width = max([len(s) for s in self.labels] + [digits + 3])
        head = " " * width + " " + " ".join(f"{s:>{width}}" for s in self.labels)
        rows = [f"{s:>{width}} " + " ".join(f"{v:>{width}.{digits}f}" for v in row)
                for s, row in zip(self.labels, self.matrix)]
        return "\n".join([head, *rows])

    def to_dict(self) -> dict:
        return {"labels": self.labels, "densities": self.densities, "layer": self.layer,
                "matrix": self.matrix.tolist()}


def random_iou(a: float, b: float) -> float:
    """E[IoU] of two independent random masks with densities ``a`` and ``b``."""
    union = a + b - a * b
    return a * b / union if union > 0 else 1.0


def iou_matrix(masks: Mapping[str, Mask] | Sequence[Mask], layer: str | None = None) -> np.ndarray:
    """Symmetric matrix of pairwise IoU (overall, or of one ``layer``); the diagonal is 1."""
    items = list(masks.values()) if isinstance(masks, Mapping) else list(masks)
    n = len(items)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            if layer is None:
                v = items[i].iou(items[j])
            else:
                per = items[i].iou(items[j], per_layer=True)
                if layer not in per:
                    raise LotteryError(f"layer {layer!r} is not in the masks; they hold: {', '.join(per)}")
                v = per[layer]
            out[i, j] = out[j, i] = v
    return out


def _overlap(masks: dict[str, Mask], layer: str | None) -> Overlap:
    if not masks:
        raise LotteryError("no masks to compare: the runs have not finished the requested level(s)")
    dens = [m.layer_density()[layer] if layer else m.density for m in masks.values()]
    return Overlap(list(masks), dens, iou_matrix(masks, layer), layer)


def level_masks(run_dir: str | os.PathLike, levels: Sequence[int] | None = None) -> dict[str, Mask]:
    """``{"L3": mask, ...}`` for the saved levels of a run (all of them, or ``levels``)."""
    run = RunDir(run_dir)
    if levels is None:
        levels = sorted(int(p.name[6:]) for p in Path(run_dir).glob("level_[0-9][0-9]") if (p / "mask.npz").exists())
    out = {}
    for level in levels:
        mask = run.load_mask(level)
        if mask is not None:
            out[f"L{level}"] = mask
    return out


def overlap_across_levels(run_dir, levels: Sequence[int] | None = None, layer: str | None = None) -> Overlap:
    """IoU between the masks of a run's levels (nested: the IoU of L and L+1 is their density ratio)."""
    masks = level_masks(run_dir, levels)
    if levels is None:
        masks.pop("L0", None)  # the all-ones dense mask says nothing
    return _overlap(masks, layer)


def overlap_across_runs(run_dirs: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike], level: int,
                        layer: str | None = None) -> Overlap:
    """IoU between the level-``level`` masks of several runs (seeds, or init schemes); runs lacking it are left out."""
    named = dict(run_dirs) if isinstance(run_dirs, Mapping) else {Path(p).name: p for p in run_dirs}
    masks = {}
    for label, path in named.items():
        mask = RunDir(path).load_mask(level)
        if mask is not None:
            masks[label] = mask
    return _overlap(masks, layer)


overlap_across_seeds = overlap_across_runs


def overlap_across_schemes(summary: dict | str | os.PathLike, level: int, seed: int | None = None,
                           layer: str | None = None) -> Overlap:
    """IoU between init schemes' tickets at ``level`` for one seed (default: the first), from a compare summary.

    ``summary`` is the dict ``compare_inits`` returned, its ``summary.json``, or the comparison directory.
    """
    if not isinstance(summary, dict):
        path = Path(summary)
        summary = load_summary(path if path.is_dir() else path.parent)
    seed = summary["seeds"][0] if seed is None else seed
    runs = {}
    for s in summary["schemes"]:
        run = next((r for r in s["runs"] if r["seed"] == seed), None)
        if run is not None:
            runs[s["label"]] = run["run_dir"]
    return overlap_across_runs(runs, level, layer)


def plot_overlap(overlap: Overlap, ax=None, title: str | None = None):
    """Heat map of an IoU matrix, values written in the cells."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        n = len(overlap.labels)
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.5 * n))
    im = ax.imshow(overlap.matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(overlap.labels)), overlap.labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(overlap.labels)), overlap.labels, fontsize=7)
    if len(overlap.labels) <= 12:
        for i, row in enumerate(overlap.matrix):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if v < 0.6 else "black")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title or f"mask IoU{' · ' + overlap.layer if overlap.layer else ''}", fontsize=9)
    return fig or ax.figure
