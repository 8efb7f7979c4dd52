"""The cost-to-ticket frontier: for each way of finding a ticket, the smallest density that matches dense (the
verdict rule of lottery/stats.py over 3 seeds) and what it cost, in dense trainings per seed (dense included).

Methods, each on every seed of one base config (experiments/frontier_<model>.toml), controls off (a ticket's cost
is what finding and training it takes):

    imp20      IMP at 20 % per level (for LeNet: the headline runs of lenet300_fashion_8k.toml, controls included
               in their compute but not in this cost)
    early_bird IMP whose levels are early-bird mask searches, then the deepest mask trained fully
    adaptive   adaptive steps (lottery/pruning/level_plan.py) to the target density
    both       adaptive steps whose levels are early-bird searches
    oneshot    one-shot magnitude pruning of the trained dense network to the target, rewound to init
    gradual    gradual magnitude pruning during one training run (`lottery gradual`) to the target
    snip, synflow  pruning at init (`lottery prune-at-init`) to the target

Every run directory of a seed shares level 0, the dense network: it is trained once (or taken from the headline
run of the same seed and settings) and copied; a copied dense run is the same computation, so its cost is
counted as one dense training in every method, as if each had trained it.

    nice -n 19 python experiments/frontier.py run lenet300 --seeds 0,1,2 --out /work/runs_frontier
    python experiments/frontier.py report lenet300 deep_mlp --out /work/runs_frontier   # table + plot
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

from lottery import __version__, stats
from lottery.config import from_dict, load_toml
from lottery.drivers.gradual import run_gradual
from lottery.drivers.imp import run_imp
from lottery.drivers.prune_at_init import run_prune_at_init
from lottery.storage.atomic import load_json
from lottery.storage.rundir import RunDir

HERE = Path(__file__).resolve().parent
TARGET = {"lenet300": 0.107, "deep_mlp": 0.086}  # IMP's level 10 (LeNet, layerwise) and level 11 (deep MLP)
IMP20 = {"lenet300": ("lenet300_fashion_8k.toml", "/work/runs_headline")}
METHODS = ("early_bird", "adaptive", "both", "oneshot", "gradual", "snip", "synflow")


def base(model: str, out: str, seed: int) -> dict:
    return {**load_toml(HERE / f"frontier_{model}.toml"), "seed": seed, "out": out, "progress": False}


def imp_settings(model: str, method: str, b: dict) -> dict:
    """The config of an IMP-engine method; gradual and prune-at-init live in the oneshot run's directory (its
    dense level 0 is theirs)."""
    target = TARGET[model]
    if method in ("oneshot", "gradual", "snip", "synflow"):
        levels = levels_to(target)
        fractions = {k: 1 - (1 - f) ** levels for k, f in b.get("layer_fractions", {}).items()}
        return {**b, "levels": 1, "prune_fraction": 1 - 0.8 ** levels, "layer_fractions": fractions,
                "name": f"{b['name']}-oneshot"}
    plan = {"early_bird": {"early_bird": True, "levels": levels_to(target)},
            "adaptive": {"prune_schedule": "adaptive", "target_density": target, "levels": 8},
            "both": {"early_bird": True, "prune_schedule": "adaptive", "target_density": target, "levels": 8}}[method]
    return {**b, **plan, "name": f"{b['name']}-{method}"}


def levels_to(target: float) -> int:
    """IMP's levels at 20 % per level down to ``target``."""
    return round(math.log(target) / math.log(0.8))


def prime_dense(cfg, donors: list[Path]) -> None:
    """Give a new run directory the dense level 0 of a finished run with the same data, model, init, training and
    seed (the same computation: training is deterministic in them)."""
    run = RunDir.for_config(cfg)
    if (run.path / "results.json").exists():
        return
    for donor in donors:
        if not (donor / "config.json").exists():
            continue
        d = RunDir(donor)
        results = d.load_results() if (donor / "results.json").exists() else None
        dense = next((e for e in (results or {}).get("levels", []) if e["level"] == 0), None)
        other = d.config()
        same = all(other.section(s) == cfg.section(s) for s in ("data", "model", "init", "training")) \
            and other.seed == cfg.seed and other.rewind == cfg.rewind == "init"
        if dense is None or not same or dense["status"] != "ok":
            continue
        (run.path / "level_00").mkdir(exist_ok=True)
        for rel in ("init.pt", "level_00/final.pt", "level_00/mask.npz"):
            shutil.copyfile(donor / rel, run.path / rel)
        run.save_results({"config": cfg.to_dict(), "hash": cfg.hash(), "version": __version__, "status": "running",
                          "levels": [{**dense, "controls": {}}], "dense_from": str(donor)})
        return


def run_seed(model: str, out: str, seed: int, methods) -> None:
    b = base(model, out, seed)
    donors = sorted(Path(out).glob(f"{b['name']}-*"))
    if model in IMP20:
        toml, where = IMP20[model]
        donors += sorted(Path(where).glob(f"{Path(toml).stem}-*"))
    oneshot = from_dict(imp_settings(model, "oneshot", b))
    for method in methods:
        cfg = from_dict(imp_settings(model, method, b))
        print(f"[frontier] {model} seed {seed}: {method} -> {cfg.run_name()}", file=sys.stderr, flush=True)
        prime_dense(cfg, [p for p in donors if p.name != cfg.run_name()] + sorted(Path(out).glob("*")))
        if method in ("early_bird", "adaptive", "both", "oneshot"):
            run_imp(cfg)
        elif method == "gradual":
            run_imp(oneshot)  # its dense level is the baseline
            run_gradual(oneshot, (TARGET[model],), 100)
        else:
            run_imp(oneshot)
            run_prune_at_init(oneshot, (method,), (TARGET[model],), ())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("run", "report"))
    p.add_argument("models", nargs="+", choices=sorted(TARGET))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default="runs/frontier")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.what == "run":
        for model in a.models:
            for seed in seeds:
                run_seed(model, a.out, seed, a.methods.split(","))
    else:
        from experiments.frontier_report import report

        report(a.models, a.out, seeds)


if __name__ == "__main__":
    main()
