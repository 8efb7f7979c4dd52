"""Matplotlib figures (Agg backend: files only, no display), written as PNG next to the results they show.

- ``run_plots(run_path, results)`` — one run: accuracy and early-stop step vs weights remaining, per-layer
  density per level, training curves per level, and for image models the first layer's mask per input pixel.
- ``seed_plots(out_dir, results_list)`` — several seeds of one config: the same curves as mean ± std bands.
- ``compare_plots(out_dir, summary)`` — an init-scheme comparison (``lottery.drivers.compare_inits``).

Every function returns the paths it wrote; each figure function also accepts an ``ax`` for notebooks.
"""
import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # files only, no display; a notebook's chosen backend is kept
    matplotlib.use("Agg")

from lottery.reporting.plots.compare import (  # noqa: E402
    COMPARE_FILES, compare_plots, plot_compare_accuracy, plot_compare_controls, plot_compare_early_stop,
    plot_compare_relative, plot_compare_training_curves,
)
from lottery.reporting.plots.signal import plot_layer_signal  # noqa: E402
from lottery.reporting.plots.run import (  # noqa: E402
    RUN_FILES, input_shape_of, plot_accuracy_vs_density, plot_early_stop_vs_density, plot_layer_density,
    plot_mask_pixels, plot_training_curves, run_plots, seed_plots,
)

__all__ = [
    "COMPARE_FILES", "RUN_FILES", "compare_plots", "input_shape_of", "plot_accuracy_vs_density",
    "plot_compare_accuracy", "plot_compare_controls", "plot_compare_early_stop", "plot_compare_relative",
    "plot_compare_training_curves",
    "plot_early_stop_vs_density", "plot_layer_density", "plot_layer_signal", "plot_mask_pixels", "plot_training_curves", "run_plots",
    "seed_plots",
]
