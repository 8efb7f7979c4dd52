"""The cost-to-ticket frontier: for each way of finding a ticket, the smallest density that matches dense (the
verdict rule of lottery/stats.py over 3 seeds) and what it cost, in dense trainings per seed (dense included).

Methods, each on every seed of one base config (experiments/frontier_<model>.toml), controls off (a ticket's cost
is what finding and training it takes):

    imp20      IMP at 20 % per level (for LeNet: the headline runs of lenet300_fashion_8k.toml, controls included
               in their compute but not in this cost; for the deep MLP: the base config itself, 11 levels)
    early_bird IMP whose levels are early-bird mask searches, then the deepest mask trained fully
    adaptive   adaptive steps (lottery/pruning/level_plan.py) to the target density, the seeds run together: each
               level judged by the verdict over all of them (plan_seeds, lottery/drivers/plan_seeds.py)
    both       adaptive steps whose levels are early-bird searches, the seeds run together likewise
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
from lottery.drivers.budget import ticket_entry, ticket_verdict
from lottery.drivers.gradual import run_gradual
from lottery.drivers.imp import run_imp
from lottery.drivers.plan_seeds import run_together, together
from lottery.drivers.prune_at_init import run_prune_at_init
from lottery.pruning.level_plan import judge_level
from lottery.storage.atomic import load_json
from lottery.storage.rundir import RunDir

HERE = Path(__file__).resolve().parent
# the goal's 10 % (LeNet), IMP's level 11 (deep MLP) and, for the deep MLP at 3000 steps checked every 50, the goal's
TARGET = {"lenet300": 0.1, "deep_mlp": 0.086, "deep_mlp_3k": 0.1}
# IMP at 20 % per level from the headline study (experiments/RESULTS.md, lenet300_fashion_auto.toml: every seed it
# ran, 5), and the runs whose dense level 0 (8000 steps, the frontier's settings) the frontier's seeds 0 and 1 took
IMP20 = {"lenet300": ("lenet300_fashion_auto", "/work/runs_headline")}
DENSE_DONORS = {"lenet300": ("lenet300_fashion_8k", "/work/runs_headline")}
METHODS = ("early_bird", "adaptive", "both", "oneshot", "gradual", "snip", "synflow")
JOINT = ("adaptive", "both")  # adaptive steps: the seeds run together, judged by the verdict over all of them
RUNNABLE = ("imp20", *METHODS)  # imp20 runs here only for a model without headline runs (IMP20)


def base(model: str, out: str, seed: int) -> dict:
    return {**load_toml(HERE / f"frontier_{model}.toml"), "seed": seed, "out": out, "progress": False}


def method_config(model: str, method: str, out: str, seed: int, seeds):
    """The Config one seed of a method runs (adaptive steps: with the seeds run together as ``plan_seeds``)."""
    cfg = from_dict(imp_settings(model, method, base(model, out, seed)))
    return together(cfg, seeds) if method in JOINT else cfg


def imp_settings(model: str, method: str, b: dict) -> dict:
    """The config of an IMP-engine method; gradual and prune-at-init live in the oneshot run's directory (its
    dense level 0 is theirs)."""
    target = TARGET[model]
    exact = abs(0.8 ** levels_to(target) - target) < 1e-3  # the target is one of IMP's levels (deep MLP: 11)
    if method in ("oneshot", "gradual", "snip", "synflow"):  # per-layer overrides: as many of their levels' worth
        levels = levels_to(target) if exact else math.log(target) / math.log(0.8)
        fractions = {k: 1 - (1 - f) ** levels for k, f in b.get("layer_fractions", {}).items()}
        return {**b, "levels": 1, "prune_fraction": 1 - 0.8 ** levels, "layer_fractions": fractions,
                "name": f"{b['name']}-oneshot"}
    if method == "imp20":  # plain IMP at 20 % per level, the base config's levels
        return {**b, "name": f"{b['name']}-imp20"}
    to_target = {"levels": levels_to(target)} if exact else {"target_density": target, "levels": levels_to(target) + 1}
    plan = {"early_bird": {"early_bird": True, **to_target},
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


def donors(model: str, out: str, cfg) -> list[Path]:
    """Run directories whose dense level 0 ``cfg``'s run may take (prime_dense checks that it is the same)."""
    found = sorted(Path(out).glob(f"{base(model, out, 0)['name']}-*"))
    if model in DENSE_DONORS:
        name, where = DENSE_DONORS[model]
        found += sorted(Path(where).glob(f"{name}-*"))
    return [p for p in found if p.name != cfg.run_name()] + sorted(Path(out).glob("*"))


def run_joint(model: str, out: str, seeds, method: str) -> None:
    """Adaptive steps on every seed together: each level planned once every seed has finished the one before,
    judged by the verdict over all of them (lottery/drivers/plan_seeds.py)."""
    configs = {seed: method_config(model, method, out, seed, seeds) for seed in seeds}
    for seed, cfg in configs.items():
        print(f"[frontier] {model} seed {seed}: {method} -> {cfg.run_name()}", file=sys.stderr, flush=True)
        prime_dense(cfg, donors(model, out, cfg))
    run_together(lambda: {seed: run_imp(cfg) for seed, cfg in configs.items()},
                 log=lambda line: print(f"[frontier] {line}", file=sys.stderr, flush=True))


def run_seed(model: str, out: str, seed: int, methods) -> None:
    b = base(model, out, seed)
    oneshot = from_dict(imp_settings(model, "oneshot", b))
    for method in methods:
        cfg = from_dict(imp_settings(model, method, b))
        print(f"[frontier] {model} seed {seed}: {method} -> {cfg.run_name()}", file=sys.stderr, flush=True)
        prime_dense(cfg, donors(model, out, cfg))
        if method == "imp20" and model in IMP20:
            continue  # the headline runs are its rows
        if method in ("imp20", "early_bird", "adaptive", "both", "oneshot"):
            run_imp(cfg)
        elif method == "gradual":
            run_imp(oneshot)  # its dense level is the baseline
            run_gradual(oneshot, (TARGET[model],), 100)
        else:
            run_imp(oneshot)
            run_prune_at_init(oneshot, (method,), (TARGET[model],), ())


# -- the report -------------------------------------------------------------------------------------------------
def _results(out: str, model: str, method: str, seeds) -> dict:
    """seed → results of one method, as the IMP engine writes them (gradual and prune-at-init entries are put in
    that shape: their dense run as level 0, the method's network as level 1)."""
    runs = {}
    if method == "imp20" and model in IMP20:  # the headline study's finished runs, every seed
        name, where = IMP20[model]
        for d in sorted(Path(where).glob(f"{name}-*")):
            r = load_json(d / "results.json") if (d / "results.json").exists() else {}
            if r.get("status") == "complete":
                runs[r["config"]["seed"]] = r
        return dict(sorted(runs.items()))
    for seed in seeds:
        run = Path(out) / method_config(model, method, out, seed, seeds).run_name()
        if method in ("gradual", "snip", "synflow"):
            f = run / ("gradual.json" if method == "gradual" else "prune_at_init.json")
            if not f.exists():
                continue
            r = load_json(f)
            if method == "gradual":
                dense = next(e for e in r["levels"] if e["level"] == 0)
                mine = [e for e in r["levels"] if e["level"] != 0]
            else:
                dense = {**r["dense"], "level": 0}
                mine = [e for e in r["entries"] if e["strategy"] == method]
            if mine and dense:
                runs[seed] = {"levels": [{**dense, "level": 0}, {**mine[0], "level": 1}]}
        elif (run / "results.json").exists():
            r = load_json(run / "results.json")
            if r["status"] != "running":
                runs[seed] = r
    return runs


def frontier_row(model: str, method: str, runs: dict, tolerance: float = stats.TOLERANCE) -> dict:
    """A method's smallest matching density over the seeds (verdict rule of lottery/stats.py) and its cost in
    dense trainings per seed (mean over seeds, dense included)."""
    if method == "imp20":  # levels align across seeds: the rule as every table reads it
        c = stats.compare_levels(runs, "early_stop", tolerance)
        done = [r for r in c["levels"] if r["level"] > 0 and len(r["seeds"]) == len(runs)]
        # IMP's first level at or under the target (its cost to get there), else its deepest
        row = next((r for r in done if r["density"] <= TARGET[model] * (1 + 1e-9)), done[-1] if done else None)
        return {"density": row and row["density"], "cost": row and row["cost"], "verdict": row["verdict"] if row else "",
                "seeds": len(runs), "levels_done": done[-1]["level"] if done else 0,
                "diff": row and row["ticket_minus_dense"], "matches": bool(row) and row["verdict"] in ("beats", "matches"),
                "smallest": c["smallest_matching_density"],
                "smallest_cost": next((r["cost"] for r in done if r["density"] == c["smallest_matching_density"]), None)}
    pick = deepest_matched(runs) if method == "adaptive" else ticket_entry
    v = ticket_verdict(runs, "early_stop", tolerance, pick=pick)
    ok = v["verdict"] in ("beats", "matches")
    return {"density": v["density"]["mean"], "cost": v["cost"]["mean"], "verdict": v["verdict"], "matches": ok,
            "seeds": len(v["tickets"]), "diff": v["ticket_minus_dense"]}


def deepest_matched(runs: dict):
    """Adaptive steps: ``pick`` for the deepest level the schedule judged matching — by the verdict over the seeds
    (they trained the same levels), the rule it planned with — else each seed's deepest level."""
    by_level = {seed: {e["level"]: e for e in r["levels"]} for seed, r in runs.items()}
    common = set.intersection(*(set(r) for r in by_level.values())) - {0}
    ok = [lv for lv in common if judge_level(by_level, lv)["matched"]]
    if not ok:
        return ticket_entry
    level = min(ok, key=lambda lv: (next(iter(by_level.values()))[lv]["density"], -lv))
    return lambda results: next(e for e in results["levels"] if e["level"] == level)


def report(models, out: str, seeds) -> None:
    rows = []
    for model in models:
        for method in ("imp20", *METHODS):
            runs = _results(out, model, method, seeds)
            if runs:
                rows.append({"model": model, "method": method, **frontier_row(model, method, runs)})
    print("| model | method | seeds | ticket density (%) | verdict vs dense | ticket − dense (points, 95 %) | "
          "cost (dense trainings / seed) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        diff = r.get("diff") or {}
        ci = (f"{100 * diff['mean']:+.2f} [{100 * diff['lo']:+.2f}, {100 * diff['hi']:+.2f}]"
              if diff.get("lo") is not None else "")
        dens = "—" if r["density"] is None else f"{100 * r['density']:.2f}"
        if r.get("smallest") and r["smallest"] != r["density"]:
            dens += f" (smallest matching: {100 * r['smallest']:.2f}, cost {r['smallest_cost']:.0f})"
        cost = "—" if r["cost"] is None else f"{r['cost']:.2f}"
        n = f"{r['seeds']} (levels 1-{r['levels_done']} done)" if "levels_done" in r else r["seeds"]
        print(f"| {r['model']} | {r['method']} | {n} | {dens} | {r['verdict']} | {ci} | {cost} |")
    for model in models:
        dense_runs = next((r for r in (_results(out, model, m, seeds) for m in METHODS) if len(r) == len(seeds)), {})
        note = stats.still_learning_note(stats.dense_still_learning(list(dense_runs.values())))
        if note:
            print(f"\n{model}: {note}")
    plot(rows, HERE / "figures" / "frontier.png")


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lottery.reporting.plots.common import plain_log_ticks

    fig, ax = plt.subplots(figsize=(8, 5))
    offsets = {"oneshot": (4, 6), "gradual": (4, -2), "snip": (4, -10), "synflow": (4, -18), "early_bird": (4, -10),
               "both": (4, 3), "adaptive": (4, 3), "imp20": (-30, 5)}  # methods that share a point stay legible
    markers = {"lenet300": "o", "deep_mlp": "s", "deep_mlp_3k": "^"}
    colors = {"lenet300": "C0", "deep_mlp": "C1", "deep_mlp_3k": "C2"}
    for r in rows:
        if r["density"] is None or r["cost"] is None:
            continue
        ok = r.get("matches", r["method"] == "imp20")
        ax.scatter(r["cost"], 100 * r["density"], marker=markers[r["model"]], s=50,
                   facecolors=None if ok else "none", edgecolors=colors[r["model"]], color=colors[r["model"]])
        dx, dy = offsets.get(r["method"], (4, 3))
        if r["model"] != "lenet300" and r["cost"] <= 2:  # the cost-2 methods of the two models: labels either side
            dx = -34
        ax.annotate(r["method"], (r["cost"], 100 * r["density"]), fontsize=7, xytext=(dx, dy),
                    textcoords="offset points", color=colors[r["model"]])
    ax.axvline(3, color="gray", ls=":")
    ax.axhline(10, color="gray", ls=":")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("cost of the ticket (dense trainings per seed, dense included)")
    ax.set_ylabel("ticket density (% of weights)")
    ax.set_title("cost-to-ticket frontier, Fashion-MNIST (filled: matches dense, 3 seeds; hollow: does not)\n"
                 "circles LeNet-300-100; squares 12x128 MLP (He), 1500 steps; triangles: 3000 steps", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("run", "report"))
    p.add_argument("models", nargs="+", choices=sorted(TARGET))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(RUNNABLE)}")
    p.add_argument("--out", default="runs/frontier")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    unknown = [m for m in a.methods.split(",") if m not in RUNNABLE]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(RUNNABLE)}")
    if a.what == "run":  # method by method, every seed: a method's row is complete before the next starts
        for model in a.models:
            for method in a.methods.split(","):
                if method in JOINT:
                    run_joint(model, a.out, seeds, method)
                    continue
                for seed in seeds:
                    run_seed(model, a.out, seed, [method])
    else:
        report(a.models, a.out, seeds)


if __name__ == "__main__":
    main()
