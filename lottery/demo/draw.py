"""The demo's figures as PNG bytes (matplotlib's object API: no pyplot state, safe to call from widget callbacks)."""
from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lottery.demo.playground import Arm, LayerSignal, Playground

FLOOR = 1e-12  # a log axis cannot show 0 (zeros init): such values sit at this floor
COLORS = ("tab:blue", "tab:orange")


def training_png(pg: Playground, signal_at_init: list[LayerSignal], signal_now: list[LayerSignal] | None) -> bytes:
    """Three panels: the training loss so far, the decision boundary now, the per-layer signal (init vs now)."""
    return _png(training_figure(pg, signal_at_init, signal_now))


def training_figure(pg: Playground, signal_at_init: list[LayerSignal],
                    signal_now: list[LayerSignal] | None) -> Figure:
    """``training_png``'s figure, for a test or a notebook to look at."""
    fig = Figure(figsize=(13, 3.8))
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.13, top=0.92, wspace=0.22)  # fixed: layout engines cost 4x
    cost, plane, signal = fig.subplots(1, 3)
    _cost(cost, pg.losses, classes=int(pg.y.max()) + 1)
    _boundary(plane, pg, pg.model, f"decision boundary (test accuracy {pg.accuracy():.0%})"
              if pg.losses else "decision boundary at init")
    _signal(signal, signal_at_init, signal_now)
    return fig


def tickets_png(pg: Playground, arms: dict[str, Arm], density: float) -> bytes:
    """The ticket's and the random mask's decision boundaries, side by side, with their test accuracies."""
    fig = Figure(figsize=(9, 3.8))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.86, wspace=0.04)
    for ax, (label, key) in zip(fig.subplots(1, 2), (("ticket", "ticket"), ("random mask", "random"))):
        arm = arms[key]
        result = "diverged" if arm.status == "diverged" else f"test accuracy {arm.accuracy:.0%}"
        _boundary(ax, pg, arm.model, f"{label} at {arm.mask.density:.0%} of the weights: {result}")
    fig.suptitle(f"density {density:.0%}: both retrained from the same init (dense net: {pg.accuracy():.0%})")
    return _png(fig)


def _cost(ax, losses: list[float], classes: int) -> None:
    """The loss as a person reads it: plain tick labels from 0 (never an offset such as ``1e-6+6.9314e-1``, which
    makes a flat loss look busy) and a dotted line at ln C, the loss of a net that predicts chance."""
    chance = math.log(classes)
    finite = [v for v in losses if math.isfinite(v)]
    ax.plot(range(1, len(losses) + 1), [v if math.isfinite(v) else float("nan") for v in losses], color=COLORS[0])
    ax.axhline(chance, color="gray", ls=":", lw=1)
    ax.annotate(f"chance: ln {classes} = {chance:.3f}", (1, chance), xycoords=("axes fraction", "data"),
                xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom", fontsize=7, color="gray")
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax.set_yscale("log")  # a loss falling (or exploding) by orders of magnitude
    else:
        ax.set_ylim(0, 1.15 * max([chance, *finite]))
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.set(title="training loss (cross-entropy)", xlabel="step", ylabel="loss")
    if not losses:
        ax.text(0.5, 0.5, "press Train", ha="center", va="center", transform=ax.transAxes, color="gray")


def _boundary(ax, pg: Playground, model, title: str) -> None:
    xs, ys, p = pg.boundary(model)
    ax.contourf(xs.numpy(), ys.numpy(), p.numpy(), levels=[0, 0.25, 0.5, 0.75, 1.0], cmap="RdBu_r", alpha=0.6,
                vmin=0, vmax=1)
    ax.contour(xs.numpy(), ys.numpy(), p.numpy(), levels=[0.5], colors="k", linewidths=1)
    x, y = pg.x_test.numpy(), pg.y_test.numpy()
    for cls, color in zip((0, 1), ("tab:blue", "tab:red")):
        ax.scatter(x[y == cls, 0], x[y == cls, 1], s=6, color=color, edgecolors="none")
    ax.set(title=title, xticks=[], yticks=[])
    ax.title.set_fontsize(9)


def _signal(ax, at_init: list[LayerSignal], now: list[LayerSignal] | None) -> None:
    layers = range(1, len(at_init) + 1)

    def values(signal, attr):
        return [min(max(getattr(s, attr), FLOOR), 1e30) if math.isfinite(getattr(s, attr)) else float("nan")
                for s in signal]

    for attr, label, color in (("activation_std", "activation std", COLORS[0]), ("grad_norm", "|grad W|", COLORS[1])):
        ax.plot(layers, values(at_init, attr), "--o", color=color, alpha=0.5, label=f"{label} at init")
        if now is not None:
            ax.plot(layers, values(now, attr), "-o", color=color, label=f"{label} now")
    ax.set_yscale("log")
    ax.set(title="per-layer signal", xlabel="Linear layer", xticks=list(layers))
    ax.legend(fontsize=7)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()
