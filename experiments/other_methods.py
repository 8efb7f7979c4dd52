"""IMP vs gradual magnitude pruning vs pruning at init (SNIP, GraSP, SynFlow, magnitude, random) on MNIST-1D.

Every method uses the default config (40-256-256-10 ReLU MLP, Xavier normal, Adam 2e-3, batch 100, 2000 steps,
global ranking) and the same ``init.pt``; the densities are those of IMP levels 7 and 14 (20 % per level), so
the methods are compared at exactly matched densities. One process per seed:

    python experiments/other_methods.py --seed 0 --out runs/other-methods
    python experiments/other_methods.py --summary --seeds 0,1 --out runs/other-methods   # mean ± std table

It also measures supermasks of the dense run (accuracy of the masked untrained network) and the instability of
levels 0, 7 and 14 from k = 0.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from lottery.drivers.stability import stability_run
from lottery.drivers.supermask import supermask_run
from lottery.config import from_dict
from lottery.drivers.gradual import run_gradual
from lottery.drivers.imp import run_imp
from lottery.storage.atomic import load_json
from lottery.drivers.prune_at_init import run_prune_at_init

LEVELS = (7, 14)
STRATEGIES = ("snip", "grasp", "synflow", "magnitude_init", "random")
SUPERMASK_CRITERIA = ("large_final", "large_final_same_sign", "magnitude_increase_same_sign", "movement",
                      "large_init", "random")
SUPERMASK_DENSITIES = (0.5, 0.2, 0.05)


def config(seed: int, out: str):
    return from_dict({"name": "other-methods", "levels": max(LEVELS), "controls": (), "seed": seed, "out": out,
                      "progress": False, "device": "cpu"})


def run(seed: int, out: str) -> None:
    cfg = config(seed, out)
    imp = run_imp(cfg)
    densities = [e["density"] for e in imp["levels"] if e["level"] in LEVELS]
    run_gradual(cfg, densities)
    run_prune_at_init(cfg, STRATEGIES, densities)
    path = Path(out) / cfg.run_name()
    supermask_run(path, SUPERMASK_DENSITIES, SUPERMASK_CRITERIA)
    for level in (0, *LEVELS):
        stability_run(path, level, k=0)


def rows(seed: int, out: str) -> dict:
    """(method, level) -> accuracy, for one seed's run directory."""
    cfg = config(seed, out)
    path = Path(out) / cfg.run_name()
    imp, gradual, pai = (load_json(path / f) for f in ("results.json", "gradual.json", "prune_at_init.json"))
    levels = {e["level"]: e for e in imp["levels"]}
    by_density = {round(levels[L]["density"], 6): L for L in LEVELS}
    acc = {("dense", 0): levels[0]["test_accuracy"]}
    for L in LEVELS:
        acc[("IMP ticket (rewind to init)", L)] = levels[L]["test_accuracy"]
    for e in gradual["levels"]:
        if e["level"] > 0:
            acc[("gradual magnitude (Zhu & Gupta)", by_density[round(e["target_density"], 6)])] = e["test_accuracy"]
    for e in pai["entries"]:
        L = by_density[round(e["target_density"], 6)]
        acc[(e["strategy"], L)] = e["test_accuracy"]
        for name, c in e["controls"].items():
            acc[(f"{e['strategy']} {name}", L)] = c["test_accuracy"]
    acc["_density"] = {L: levels[L]["density"] for L in LEVELS}
    acc["_collapsed"] = {(e["strategy"], by_density[round(e["target_density"], 6)]): e["collapsed_layers"]
                         for e in pai["entries"]}
    return acc


def summary(seeds, out: str) -> str:
    per_seed = [rows(s, out) for s in seeds]
    dens = per_seed[0]["_density"]
    methods = list(dict.fromkeys(k[0] for k in per_seed[0] if isinstance(k, tuple) and k[0] != "dense"))

    def cell(key):
        vals = [100 * r[key] for r in per_seed if r.get(key) is not None]
        if not vals:
            return "-"
        return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else f"{vals[0]:.1f}"

    head = "| method | " + " | ".join(f"{100 * dens[L]:.2f} % weights (IMP level {L})" for L in LEVELS) + " |"
    lines = [head, "|---" * (len(LEVELS) + 1) + "|", f"| dense (100 %) | {cell(('dense', 0))} | |"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(cell((m, L)) for L in LEVELS) + " |")
    collapsed = {k: v for r in per_seed for k, v in r["_collapsed"].items() if v}
    lines.append(f"\nseeds {', '.join(map(str, seeds))} (mean ± std over seeds); layer collapse: "
                 f"{collapsed or 'none'}")
    return "\n".join(lines) + "\n\n" + studies(seeds, out)


def _mean_std(vals) -> str:
    vals = [100 * v for v in vals]
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else f"{vals[0]:.1f}"


def studies(seeds, out: str) -> str:
    """Supermask accuracy (untrained, masked; init / signed constant) and instability, mean ± std over seeds."""
    paths = [Path(out) / config(s, out).run_name() for s in seeds]
    sm = [load_json(p / "supermask.json")["rows"] for p in paths if (p / "supermask.json").exists()]
    lines = ["| supermask criterion (layerwise) | " + " | ".join(f"{100 * d:g} % init / signed const"
                                                            for d in SUPERMASK_DENSITIES) + " |",
             "|---" * (len(SUPERMASK_DENSITIES) + 1) + "|"]
    for c in SUPERMASK_CRITERIA:
        cells = []
        for d in SUPERMASK_DENSITIES:
            got = [r for rows in sm for r in rows if r["criterion"] == c and r["target_density"] == d]
            cells.append(f"{_mean_std([r['init']['test_accuracy'] for r in got])} / "
                         f"{_mean_std([r['signed_constant']['test_accuracy'] for r in got])}" if got else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    st = [load_json(p / "stability.json")["entries"] for p in paths if (p / "stability.json").exists()]
    lines.append("\n| level (weights %) | instability from k=0 (test error points) |\n|---|---|")
    for level in (0, *LEVELS):
        got = [e for entries in st for e in entries if e["level"] == level and e["k"] == 0]
        if got:
            lines.append(f"| {level} ({100 * got[0]['density']:.2f} %) | {_mean_std([e['instability'] for e in got])} |")
    lines.append(f"\nsupermask seeds: {len(sm)}; stability seeds: {len(st)} (copies' data orders 1 and 2)")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="runs/other-methods")
    parser.add_argument("--summary", action="store_true", help="print the table of finished seeds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.summary:
        print(summary([int(s) for s in args.seeds.split(",")], args.out))
    else:
        run(args.seed, args.out)
