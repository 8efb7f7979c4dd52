"""Do structured tickets exist? Accuracy vs density and vs measured CPU latency, per structure, against the
structured random control, from the run directories of experiments/structured_lenet300_fashion.toml.

    python experiments/structured_tickets.py RUNS [--figure experiments/figures/structured_lenet300_fashion.png]

Each run directory is one (structure, seed). Per structure and level: weights kept, ticket and random-mask test
accuracy (mean ± std over seeds), and the CPU time per forward pass at batch 1 and 256 (one thread) of the network
the ticket runs as: a neuron ticket as its physical export (seed 0's mask), an unstructured or n:m ticket as the
full dense network (a CPU has no faster kernels for them at these densities; see benchmarks/RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import lottery as lt
from lottery.export import measure_latency
from lottery.export_physical import physical_tensors, shrink_to
from lottery.session import load_data
from lottery.storage.rundir import RunDir



def label(config: dict) -> str:
    s = config.get("structure", "unstructured")
    s += " + refill" if (config.get("structure_options") or {}).get("refill") else ""
    return s + (f" ({config['scope']} scope)" if s.startswith("neuron") and config.get("scope") == "global" else "")


def collect(runs: Path) -> dict:
    """``{label: {"runs": [run dirs by seed], "levels": {level: [entries over seeds]}}}``."""
    out: dict = defaultdict(lambda: {"runs": {}, "levels": defaultdict(list)})
    for path in sorted(runs.glob("*/results.json")):
        results = json.loads(path.read_text())
        cfg = results["config"]
        group = out[label(cfg)]
        group["runs"][cfg["seed"]] = path.parent
        for entry in results["levels"]:
            group["levels"][entry["level"]].append(entry)
    return out


def network(run_dir: Path, level: int, structure: str):
    """The network a level's ticket runs as on a CPU, its input shape, and a key naming its shape."""
    run = RunDir(run_dir)
    cfg = run.config()
    data = load_data(cfg)
    model = lt.build_model(cfg.model, data.input_shape, data.num_classes, activation=cfg.activation,
                           **cfg.model_options).eval()
    units = {}
    if structure.startswith("neuron"):
        _, units = physical_tensors(model, run.load_mask(level))
        model = shrink_to(model, units).eval()
    key = json.dumps({k: len(v) for k, v in units.items()}, sort_keys=True)
    return model, data.input_shape, key


def latency(model, shape, batches, seconds: float = 0.2) -> dict:
    """CPU ms per forward (one thread's CPU time; the best of 3 medians of about ``seconds`` of calls each)."""
    return {b: min(measure_latency(model, shape, b, seconds, clock="cpu") * 1e3 for _ in range(3)) for b in batches}


def mean_std(values) -> str:
    values = [v * 100 for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path)
    p.add_argument("--figure", type=Path, default=None)
    p.add_argument("--batches", default="1,256")
    p.add_argument("--figure-min-seeds", type=int, default=1, help="plot only structures run with this many seeds")
    p.add_argument("--seconds", type=float, default=0.2, help="timing budget per measurement")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    groups = collect(args.runs)
    rows, timed = [], {}  # each distinct network shape is timed once
    for name, group in sorted(groups.items()):
        seed0 = group["runs"][min(group["runs"])]
        for level, entries in sorted(group["levels"].items()):
            model, shape, key = network(seed0, level, name)
            if key not in timed:
                timed[key] = latency(model, shape, batches, args.seconds)
            ms = timed[key]
            ticket = [e["test_accuracy"] for e in entries]
            control = [e["controls"].get("random_mask", {}).get("test_accuracy") for e in entries]
            rows.append({"structure": name, "level": level, "seeds": len(entries),
                         "density": statistics.mean(e["density"] for e in entries), "ticket": ticket,
                         "random": control, "ms": ms})
    print("| structure | level | seeds | weights kept | ticket % | random mask % | "
          + " | ".join(f"CPU ms, batch {b}" for b in batches) + " |")
    print("|---" * (6 + len(batches)) + "|")
    for r in rows:
        print(f"| {r['structure']} | {r['level']} | {r['seeds']} | {r['density']:.1%} | {mean_std(r['ticket'])} | "
              f"{mean_std(r['random'])} | " + " | ".join(f"{r['ms'][b]:.3f}" for b in batches) + " |")
    if args.figure:
        cfg = RunDir(next(iter(next(iter(groups.values()))["runs"].values()))).config()
        plot([r for r in rows if len(groups[r["structure"]]["runs"]) >= args.figure_min_seeds], max(batches),
             args.figure, f"{cfg.model} on {cfg.dataset}")
    return 0


def plot(rows, batch: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    names = sorted({r["structure"] for r in rows})
    for i, name in enumerate(names):
        mine = [r for r in rows if r["structure"] == name]
        color = f"C{i}"
        for ax, x in ((axes[0], [r["density"] * 100 for r in mine]), (axes[1], [r["ms"][batch] for r in mine])):
            ticket = [statistics.mean(r["ticket"]) * 100 for r in mine]
            ax.plot(x, ticket, "o-", color=color, label=f"{name} ticket")
            pairs = [(xx, statistics.mean(v for v in r["random"] if v is not None) * 100)
                     for xx, r in zip(x, mine) if any(v is not None for v in r["random"])]
            if pairs:
                ax.plot(*zip(*pairs), "x--", color=color, alpha=0.7, label=f"{name} random mask")
    axes[0].set_xscale("log")
    axes[0].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].invert_xaxis()
    axes[0].set_xlabel("weights kept (%)")
    axes[1].set_xlabel(f"CPU ms per forward, batch {batch}, one thread (network the ticket runs as)")
    axes[0].set_ylabel("test accuracy (%), mean over seeds")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(f"{title}: structured tickets vs structured random masks")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
