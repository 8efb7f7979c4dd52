"""Builds compare_methods.ipynb (run it after editing the cells below; the .ipynb is what is committed)."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("""# IMP vs gradual pruning vs pruning at initialization, at matched densities

One small MNIST-1D experiment (a 40-128-128-10 MLP, 500 Adam steps per training run, so the notebook runs in a
minute or two on a laptop CPU) compares the ways `lottery` finds sparse trainable networks:

- **IMP** — iterative magnitude pruning, 50 % of the remaining weights per level, rewinding to the init;
- **gradual** magnitude pruning during one training run (Zhu & Gupta's cubic schedule), no rewinding;
- **pruning at initialization** — SNIP, GraSP, SynFlow, magnitude at init and random — with the *shuffled*
  ablation of Frankle et al. 2021 (the same per-layer counts at random positions).

All methods share one `init.pt` and are compared at exactly the densities of IMP's levels. One seed and a short
budget: read it as a demonstration of the API, not as a measurement (see `experiments/other_methods.py` for that)."""),
    new_code_cell("""import tempfile

import matplotlib.pyplot as plt
import torch

from lottery.config import from_dict
from lottery.drivers.gradual import run_gradual
from lottery.drivers.imp import run_imp
from lottery.drivers.prune_at_init import format_table, run_prune_at_init

torch.set_num_threads(1)  # tiny model: one thread is fastest and results do not depend on the core count
cfg = from_dict({"name": "compare-methods", "dataset": "mnist1d", "model": "mlp", "model_options": {"hidden": [128, 128]},
                 "steps": 500, "eval_every": 100, "levels": 4, "prune_fraction": 0.5, "controls": (),
                 "out": tempfile.mkdtemp(), "progress": False, "device": "cpu"})"""),
    new_markdown_cell("IMP first: its levels fix the densities every other method is compared at."),
    new_code_cell("""imp = run_imp(cfg)
levels = {e["level"]: e for e in imp["levels"]}
densities = [levels[2]["density"], levels[4]["density"]]
print("densities:", [f"{d:.4f}" for d in densities])"""),
    new_code_cell("""gradual = run_gradual(cfg, densities, every=25)
pai = run_prune_at_init(cfg, ["snip", "grasp", "synflow", "magnitude_init", "random"], densities, ablations=["shuffled"])
print(format_table(pai))"""),
    new_markdown_cell("Test accuracy per method at each matched density (dense network for reference)."),
    new_code_cell("""acc = {"IMP ticket": [levels[2]["test_accuracy"], levels[4]["test_accuracy"]],
       "gradual": [next(e["test_accuracy"] for e in gradual["levels"] if e.get("target_density") == d) for d in densities]}
for e in pai["entries"]:
    acc.setdefault(e["strategy"], [None, None])[densities.index(e["target_density"])] = e["test_accuracy"]
    acc.setdefault(e["strategy"] + " (shuffled)", [None, None])[densities.index(e["target_density"])] = \\
        e["controls"]["shuffled"]["test_accuracy"]

print(f"{'method':<26}" + "".join(f"{100 * d:>10.2f} %" for d in densities))
for name, values in acc.items():
    print(f"{name:<26}" + "".join(f"{100 * v:>11.1f}%" for v in values))
print(f"{'dense':<26}{100 * levels[0]['test_accuracy']:>11.1f}%")

fig, ax = plt.subplots(figsize=(7, 4))
for name, values in acc.items():
    ax.plot([100 * d for d in densities], [100 * v for v in values], marker="o",
            ls="--" if "shuffled" in name else "-", label=name)
ax.axhline(100 * levels[0]["test_accuracy"], color="gray", ls=":", label="dense")
ax.set_xscale("log"); ax.invert_xaxis()
ax.set_xlabel("weights remaining (%)"); ax.set_ylabel("test accuracy (%)")
ax.legend(fontsize=7, ncol=2); ax.grid(alpha=0.3)
plt.show()"""),
    new_markdown_cell("""What the full measurement found (`experiments/other_methods.md`: 4 seeds, 2000 steps, IMP levels 7
and 14, i.e. 21 % and 4.4 % of the weights): the IMP ticket and gradual pruning hold dense accuracy at the lower
density, while every pruning-at-init method loses 10–13 points there and random pruning 22. At 4.4 % SNIP and
SynFlow beat their own layer-wise shuffled masks by ~4–4.5 points and GraSP by ~3, but their reinitialized masks
do as well as the original init: these methods find per-layer densities plus some position information, nothing
tied to the initial values. At 21 % no at-init method beats its shuffled mask, and magnitude at init is within
noise of its shuffle. This notebook's one seed and short budget need not reproduce every one of these gaps."""),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}})
nbformat.write(nb, Path(__file__).with_name("compare_methods.ipynb"))
