"""Builds inspect_transformer_ticket.ipynb (run it after editing the cells below; the .ipynb is what is committed)."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("""# Inspecting a transformer ticket

Open one IMP run of a `vit` or `gpt` (see docs/transformers.md) and look at where its ticket keeps weights: per
layer, per attention head (the head's query, key and value rows of `qkv` and its columns of the output `proj`), and
per MLP hidden unit (a unit whose `fc1` row is all pruned computes a constant).

**Which run:** set `LOTTERY_RUN_DIR` (e.g. a run of `experiments/vit_fashion.toml`) or assign `RUN_DIR` below.
With neither, the notebook first makes a small ViT run on the synthetic 12×12 image data set (4 levels at 50 %,
a few seconds on a laptop CPU), so every cell has something to show."""),
    new_code_cell("""import inspect
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch

%matplotlib inline

from lottery.models import MODELS
from lottery.reporting.tables import format_table
from lottery.storage.rundir import RunDir

RUN_DIR = os.environ.get("LOTTERY_RUN_DIR")  # or a path, e.g. "runs/vit_fashion-1a2b3c4d5e\""""),
    new_code_cell("""if RUN_DIR is None:  # no run given: make a small one (finished levels are reused when run again)
    from lottery.config import Config
    from lottery.drivers.imp import run_imp

    torch.set_num_threads(1)
    cfg = Config(name="notebook-vit", dataset="synthetic", model="vit",
                 model_options={"patch": 4, "width": 32, "depth": 2, "heads": 4}, init="gpt2", steps=150,
                 eval_every=50, batch_size=64, lr=3e-3, levels=4, prune_fraction=0.5, out="runs", progress=False,
                 device="cpu")
    run_imp(cfg)
    RUN_DIR = Path(cfg.out) / cfg.run_name()

run = RunDir(RUN_DIR)
config = run.settings()
results = run.load_results()
if config["model"] not in ("vit", "gpt"):
    raise SystemExit(f"{RUN_DIR} is a {config['model']} run; this notebook reads vit or gpt runs")
defaults = {k: p.default for k, p in inspect.signature(MODELS[config["model"]]).parameters.items()
            if p.kind is p.KEYWORD_ONLY}
options = {**defaults, **config.get("model_options", {})}
heads, depth, width = options["heads"], options["depth"], options["width"]
print(f"{run.path}: {config['model']} (width {width}, depth {depth}, {heads} heads) on {config['dataset']}, "
      f"init {config['init']}")
print(format_table(results))"""),
    new_markdown_cell("""## Which layers keep weights

The kept fraction of every prunable weight at each level (global magnitude pruning lets layers differ)."""),
    new_code_cell("""levels = [e["level"] for e in results["levels"] if e["level"] > 0]
masks = {level: run.load_mask(level) for level in levels}
names = list(masks[levels[0]])
fig, ax = plt.subplots(figsize=(8, 3.5))
for level in levels:
    ax.plot(range(len(names)), [100 * float(masks[level][n].float().mean()) for n in names], marker="o",
            label=f"level {level} ({100 * masks[level].density:.1f} % overall)")
ax.set_xticks(range(len(names)), [n.replace(".weight", "") for n in names], rotation=60, ha="right", fontsize=7)
ax.set_ylabel("weights kept (%)"); ax.grid(alpha=0.3); ax.legend(fontsize=7)
plt.tight_layout(); plt.show()"""),
    new_markdown_cell("""## Which heads keep weights

`qkv`'s rows are all queries, then all keys, then all values, head after head; head h owns rows
`h*d..(h+1)*d` of each third (d = width / heads) and columns `h*d..(h+1)*d` of `proj`. A head whose queries or
keys are all pruned attends uniformly; one whose values or output columns are all pruned contributes nothing."""),
    new_code_cell("""def head_density(mask, block: int) -> torch.Tensor:
    \"\"\"(heads, 4): kept fraction of each head's query, key and value rows and output columns.\"\"\"
    qkv = mask[f"blocks.{block}.attn.qkv.weight"].float().reshape(3, heads, width // heads, width)
    proj = mask[f"blocks.{block}.attn.proj.weight"].float().reshape(width, heads, width // heads)
    return torch.cat([qkv.mean((2, 3)).T, proj.mean((0, 2))[:, None]], dim=1)

deepest = levels[-1]
fig, axes = plt.subplots(1, depth, figsize=(3.2 * depth, 2.8), squeeze=False)
for block, ax in enumerate(axes[0]):
    d = head_density(masks[deepest], block)
    im = ax.imshow(100 * d, vmin=0, vmax=100, cmap="viridis")
    ax.set_xticks(range(4), ["q", "k", "v", "out"]); ax.set_yticks(range(heads), [f"head {h}" for h in range(heads)])
    ax.set_title(f"block {block}", fontsize=9)
    for (h, j), v in zip(torch.cartesian_prod(torch.arange(heads), torch.arange(4)).tolist(), d.flatten()):
        ax.text(j, h, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < 0.5 else "k")
fig.colorbar(im, ax=axes[0].tolist(), label="kept (%)")
fig.suptitle(f"level {deepest}: {100 * masks[deepest].density:.1f} % of the weights", fontsize=10)
plt.show()"""),
    new_markdown_cell("## MLP hidden units that are still alive (any kept input weight) at each level"),
    new_code_cell("""print("level  " + "  ".join(f"block {b}" for b in range(depth)))
for level in levels:
    alive = [masks[level][f"blocks.{b}.mlp.fc1.weight"].any(1).float().mean() for b in range(depth)]
    print(f"{level:5}  " + "  ".join(f"{100 * float(a):6.1f}%" for a in alive))"""),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}})
nbformat.write(nb, Path(__file__).with_name("inspect_transformer_ticket.ipynb"))
