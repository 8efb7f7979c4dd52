"""Per-layer sparsity profile: a levels × layers table of how much of each layer IMP kept (or removed).

Global magnitude pruning does not prune layers evenly — large, redundant layers (the first fully connected layer)
empty first, the output layer last. The profile shows it level by level.

>>> results = {"levels": [{"level": 0, "density": 1.0, "layer_density": {"fc1.weight": 1.0, "fc2.weight": 1.0}},
...                       {"level": 1, "density": 0.8, "layer_density": {"fc1.weight": 0.75, "fc2.weight": 0.9}}]}
>>> sparsity_profile(results).values.tolist()
[[0.0, 0.0], [0.25, 0.09999999999999998]]
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lottery.errors import LotteryError
from lottery.storage.rundir import RunDir

MEASURES = ("sparsity", "density")


@dataclass
class Profile:
    """``values[i, j]``: the ``measure`` of layer ``layers[j]`` at level ``levels[i]`` (overall ``densities[i]``)."""

    levels: list[int]
    densities: list[float]
    layers: list[str]
    values: np.ndarray
    measure: str = "sparsity"

    def format(self) -> str:
        names = [n.removesuffix(".weight") for n in self.layers]
        width = max([len(n) for n in names] + [7])
        head = f"{'level':>5} {'weights %':>9} " + " ".join(f"{n:>{width}}" for n in names)
        lines = [f"per-layer {self.measure} (%)", head, "-" * len(head)]
        for level, d, row in zip(self.levels, self.densities, self.values):
            lines.append(f"{level:>5} {100 * d:9.2f} " + " ".join(f"{100 * v:>{width}.2f}" for v in row))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"measure": self.measure, "levels": self.levels, "densities": self.densities, "layers": self.layers,
                "values": self.values.tolist()}


def sparsity_profile(source: dict | str | os.PathLike, measure: str = "sparsity") -> Profile:
    """The profile of a run: ``source`` is its results dict, its directory, or its ``results.json``.

    Levels come from ``layer_density`` in the results (diverged levels included: their mask was still made).
    """
    if measure not in MEASURES:
        raise LotteryError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    results = source if isinstance(source, dict) else _load(source)
    entries = [e for e in results["levels"] if e.get("layer_density")]
    if not entries:
        raise LotteryError("the results hold no level with per-layer densities yet; run at least level 0")
    layers = list(entries[0]["layer_density"])
    dens = np.array([[e["layer_density"].get(k, np.nan) for k in layers] for e in entries], dtype=float)
    values = 1.0 - dens if measure == "sparsity" else dens
    return Profile([e["level"] for e in entries], [e["density"] for e in entries], layers, values, measure)


def _load(path) -> dict:
    path = Path(path)
    results = RunDir(path.parent if path.is_file() else path).load_results_strict()
    if results is None:
        raise LotteryError(f"{path} has no results.json yet; start the run with `lottery run`")
    return results


def plot_profile(profile: Profile, ax=None):
    """Heat map: levels down, layers across, colour = the measure in %."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.5 + 1.0 * len(profile.layers), 1.0 + 0.3 * len(profile.levels)))
    im = ax.imshow(100 * profile.values, aspect="auto", cmap="magma_r" if profile.measure == "sparsity" else "magma",
                   vmin=0, vmax=100)
    ax.set_xticks(range(len(profile.layers)), [n.removesuffix(".weight") for n in profile.layers], fontsize=8)
    ax.set_yticks(range(len(profile.levels)),
                  [f"L{lv} ({100 * d:.1f}%)" for lv, d in zip(profile.levels, profile.densities)], fontsize=7)
    ax.figure.colorbar(im, ax=ax, label=f"{profile.measure} (%)")
    ax.set_title(f"per-layer {profile.measure} by level", fontsize=9)
    return fig or ax.figure
