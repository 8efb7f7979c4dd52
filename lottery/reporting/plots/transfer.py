"""Figures of mask transfer (lottery/drivers/transfer.py): the transfer matrix as a heat map, and accuracy vs
density with the transferred masks beside the source's ticket and controls."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from lottery.drivers.transfer import ALIGNMENTS, random_accuracy, reference_row, restored, same_draw
from lottery.reporting.plots.common import COLORS, density_axis, legend, save
from lottery.stats import mean_std


def _align_name(row: dict) -> str:
    return row["align"] + (f" ({row['match']})" if row.get("match") else "")


def _columns(rows: list[dict]) -> list[str]:
    names = {_align_name(r) for r in rows}
    return sorted(names, key=lambda n: (ALIGNMENTS.index(n.split(" ")[0]), n))


def plot_transfer_matrix(results: list[dict], level: int, ax=None, path: str | Path | None = None):
    """Test accuracy (%) of level ``level``'s mask: one panel per alignment, sources (one per transfer.json in
    ``results``) down, target (init, seed) across; each cell also shows ``restored`` (share of the source
    ticket's advantage over a random mask kept). ``ax``: a sequence of axes, one per alignment."""
    rows = [(res, r) for res in results for r in res["rows"] if r["level"] == level]
    cols = _columns([r for _, r in rows])
    sources = list(dict.fromkeys(f"{res['source']['init']} s{res['source']['seed']}" for res in results))
    targets = list(dict.fromkeys(f"{r['init']} s{r['seed']}" for _, r in rows))
    accs = [r["test_accuracy"] for _, r in rows if r["test_accuracy"] is not None]
    vmin, vmax = (100 * min(accs), 100 * max(accs)) if accs else (0, 100)
    if ax is None:
        fig = plt.figure(figsize=(3 + 0.9 * len(targets), 1.6 + (0.9 + 0.45 * len(sources)) * len(cols)))
        grid_spec = fig.add_gridspec(len(cols), 2, width_ratios=[40, 1])
        axes = [fig.add_subplot(grid_spec[i, 0]) for i in range(len(cols))]
        colorbar_ax = fig.add_subplot(grid_spec[:, 1])
    else:
        fig, axes = None, list(ax)
    image = None
    for panel, col in zip(axes, cols):
        grid = np.full((len(sources), len(targets)), np.nan)
        for res, r in rows:
            if _align_name(r) != col or r["test_accuracy"] is None:
                continue
            i = sources.index(f"{res['source']['init']} s{res['source']['seed']}")
            j = targets.index(f"{r['init']} s{r['seed']}")
            grid[i, j] = 100 * r["test_accuracy"]
            share = restored(r, reference_row(res, level))
            text = f"{grid[i, j]:.1f}" + (f"\n{share:.2f}" if share is not None else "")
            panel.text(j, i, text, ha="center", va="center", fontsize=7,
                       color="white" if grid[i, j] < (vmin + vmax) / 2 else "black")
        image = panel.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        panel.set_title(col, fontsize=9)
        panel.set_xticks(range(len(targets)), targets if panel is axes[-1] else [], rotation=30, ha="right",
                         fontsize=7)
        panel.set_yticks(range(len(sources)), sources, fontsize=7)
        panel.set_ylabel("mask from", fontsize=8)
    axes[-1].set_xlabel("target init")
    if fig is not None:
        fig.colorbar(image, cax=colorbar_ax, label="test accuracy (%)")
        fig.suptitle(f"level {level}'s mask on other inits (accuracy %, restored share below)", fontsize=10)
        return save(fig, path) if path is not None else fig
    return axes


def plot_transfer_accuracy(stored: dict, source: dict | None, ax=None, path: str | Path | None = None):
    """Test accuracy vs weights remaining: the source's IMP ticket (and its controls, where the run has them),
    then every (target init, alignment) as mean ± std over target seeds (filled) with its random masks (hollow);
    the source's own draw under another alignment is the source ticket again and left out."""
    fig, ax = (plt.subplots(figsize=(7, 4.5)) if ax is None else (None, ax))
    levels = (source or {}).get("levels", [])
    pts = [(100 * e["density"], 100 * e["test_accuracy"]) for e in levels if e["test_accuracy"] is not None]
    if pts:
        ax.plot(*zip(*pts), color="black", marker="o", ms=3, label="source ticket (IMP)")
        ax.axhline(pts[0][1], color="gray", ls=":", lw=1, label="source dense")
    for name, style in (("reinit", "--"), ("random_mask", ":")):
        cpts = [(100 * e["density"], 100 * e["controls"][name]["test_accuracy"]) for e in levels
                if e["controls"].get(name, {}).get("test_accuracy") is not None]
        if cpts:
            ax.plot(*zip(*cpts), color="black", ls=style, marker="x", ms=3, label=f"source {name}")
    groups: dict = {}
    for r in stored["rows"]:
        if not r.get("reference") and not same_draw(r, stored["source"]):
            groups.setdefault((r["init"], _align_name(r)), []).append(r)
    for n, ((init, align), rows) in enumerate(sorted(groups.items())):
        color = COLORS[n % len(COLORS)]
        by_level: dict = {}
        for r in rows:
            by_level.setdefault(r["density"], []).append(r)
        for k, (density, group) in enumerate(sorted(by_level.items())):
            x = 100 * density * (1 + 0.012 * (n - len(groups) / 2))  # side by side, not on top of each other
            for arm, filled in (("ticket", True), ("random_mask", False)):
                accs = [r["test_accuracy"] if arm == "ticket" else random_accuracy(r) for r in group]
                stat = mean_std([100 * a for a in accs if a is not None])
                if stat["mean"] is None:
                    continue
                ax.errorbar([x], [stat["mean"]], yerr=[stat["std"]], color=color, marker="o" if filled else "s",
                            mfc=color if filled else "none", ms=5, capsize=2, ls="none",
                            label=(f"{init}, {align}" if filled else None) if k == 0 else None)
    density_axis(ax)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("transferred masks (filled) and their random masks (hollow)", fontsize=10)
    legend(ax, fontsize=7, loc="best")
    if fig is not None:
        return save(fig, path) if path is not None else fig
    return ax


def transfer_plots(run_path: str | Path, stored: dict, source: dict | None) -> list[Path]:
    """``transfer_level_NN.png`` (the heat map) per level, and ``transfer_accuracy.png``, in ``run_path``."""
    run_path = Path(run_path)
    paths = [plot_transfer_matrix([stored], lv, path=run_path / f"transfer_level_{lv:02d}.png")
             for lv in sorted({r["level"] for r in stored["rows"]})]
    return paths + [plot_transfer_accuracy(stored, source, path=run_path / "transfer_accuracy.png")]
