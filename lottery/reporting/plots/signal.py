"""``layer_signal.png``: each layer's activation std and weight-gradient norm, at step 0 and every evaluation.

x is the layer's depth, y a log scale, one line per recorded step (light = early, dark = late): a vanishing
signal slopes down with depth, an exploding one up, a well-scaled init stays flat.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

PANELS = (("activation_std", "activation std (layer output)"), ("grad_norm", "weight-gradient norm"))


def plot_layer_signal(signal: dict, axes=None, title: str = ""):
    """Draw ``signal`` (a ``TrainResult.signal`` / results-entry ``"signal"``) into two axes; returns the figure."""
    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    depth = list(range(1, len(signal["layers"]) + 1))
    steps = signal["steps"]
    cmap = plt.get_cmap("viridis_r")
    for ax, (key, label) in zip(axes, PANELS):
        drawn = False
        for i, (step, values) in enumerate(zip(steps, signal[key])):
            pts = [(d, v) for d, v in zip(depth, values) if v is not None and v > 0]  # log axis: no zeros
            if not pts:
                continue
            ax.plot(*zip(*pts), marker=".", lw=2 if i == 0 else 1, color=cmap(i / max(len(steps) - 1, 1)),
                    label=f"step {step}" if i in (0, len(steps) - 1) else None)
            drawn = True
        ax.set_yscale("log" if drawn else "linear")
        ax.set_xlabel("layer (forward order)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "all zero or non-finite", ha="center", transform=ax.transAxes)
    if title:
        axes[0].figure.suptitle(title, fontsize=9)
    return fig or axes[0].figure
