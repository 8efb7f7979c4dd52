"""``lottery budget``: the smallest matching ticket IMP can find within a budget of dense trainings (``--budget
3``) or down to a target density (``--target-density 0.1``), with the cost it spent and the verdict.

Each seed runs IMP with early-bird levels and adaptive steps (lottery/pruning/level_plan.py): the levels after
the dense one are mask searches stopped once their mask settles, stepping further while they keep up with dense
and backing off when one falls behind; pruning ends at the target, at the frontier, or when one more search and the
final training would exceed the budget; then the deepest matching searched mask is trained fully from the rewind
state. That last training is the ticket: its density, its cost (every training run of the seed, dense included,
counted with the steps it made: ``lottery.stats.run_costs``) and the verdict of ticket − dense over the seeds
(``lottery.stats.compare_levels`` on each seed's dense run and ticket; the searched levels in between report no
accuracy, so the verdict is on the ticket alone, not on every level above it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lottery import stats
from lottery.config import Config
from lottery.drivers.imp import run_imp
from lottery.drivers.plan_seeds import run_together, together
from lottery.drivers.registry import register_driver
from lottery.errors import ConfigError
from lottery.options import Options, metric_option, parse_seeds, seeds_option, tolerance_option


@dataclass(frozen=True)
class BudgetOptions(Options):
    """budget: the seeds the verdict is taken over, and how it reads them (--budget and --target-density are the
    experiment's own settings)."""

    command: ClassVar[str] = "budget"
    seeds: int | tuple = seeds_option(3, "seeds: a count from --seed up (3) or a list (0,4,7)")
    metric: str = metric_option()
    tolerance: float = tolerance_option()


def cheaper(cfg: Config) -> Config:
    """The config IMP runs under: early-bird searches and adaptive steps, no controls (a ticket's cost is what
    finding and training it takes)."""
    if cfg.budget is None and cfg.target_density is None:
        raise ConfigError("say what to stop at: --budget B (dense trainings per seed, > 1) or --target-density D")
    return cfg.replace(early_bird=True, prune_schedule="adaptive", controls=())


def ticket_entry(results: dict) -> dict | None:
    """The reported ticket of a run: its deepest fully trained pruned level (not a search) whose status is ok."""
    trained = [e for e in results.get("levels", []) if e["level"] > 0 and not e.get("search") and e["status"] == "ok"]
    return min(trained, key=lambda e: (e["density"], -e["level"]), default=None)


def ticket_verdict(runs: dict, metric: str = "early_stop", tolerance: float = stats.TOLERANCE,
                   pick=ticket_entry) -> dict:
    """Per seed, the ticket's density and cost (the cost of every run up to the last one trained); over the seeds,
    the verdict of ticket − dense (lottery/stats.py). ``runs``: seed → results; ``pick(results)`` chooses the
    ticket. Seeds without a ticket count against it (``missing``)."""
    pairs, tickets, missing = {}, {}, []
    for seed, results in runs.items():
        ticket = pick(results)
        dense = next((e for e in results["levels"] if e["level"] == 0), None)
        if ticket is None or dense is None:
            missing.append(seed)
            continue
        cost = stats.run_costs(results)[max(e["level"] for e in results["levels"])]
        tickets[seed] = {"level": ticket["level"], "density": ticket["density"], "cost": cost["ticket"],
                         "cost_flops": cost["ticket_flops"]}
        pairs[seed] = {"levels": [dense, {**ticket, "level": 1}]}
    row = stats.compare_levels(pairs, metric, tolerance)["levels"][1] if pairs else None
    return {"tickets": tickets, "missing": missing, "metric": metric, "tolerance": tolerance,
            "verdict": "no ticket" if row is None or missing else row["verdict"],
            "ticket_minus_dense": row and row["ticket_minus_dense"],
            "density": stats.mean_std(t["density"] for t in tickets.values()),
            "cost": stats.mean_std(t["cost"] for t in tickets.values()), "rule": stats.rule_text(tolerance)}


@register_driver("budget", "the smallest matching ticket within --budget B dense trainings or down to "
                 "--target-density D (early-bird searches, adaptive steps), with its cost and verdict",
                 options=BudgetOptions, report=lambda r, *_: format_budget(r))
def run_budget(cfg: Config, opts: BudgetOptions) -> dict:
    """Every seed of the cheaper config (a run directory each, resumable), then the ticket's verdict."""
    seeds = parse_seeds(opts.seeds, cfg.seed)
    base = together(cheaper(cfg), seeds)  # the seeds' levels judged together (lottery/drivers/plan_seeds.py)
    runs = run_together(lambda: {seed: run_imp(base.replace(seed=seed)) for seed in seeds})
    out = ticket_verdict(runs, opts.metric, opts.tolerance)
    out.update(budget=cfg.budget, target_density=cfg.target_density,
               ends={seed: r.get("plan_end") for seed, r in runs.items()},
               run_dirs={seed: base.replace(seed=seed).run_name() for seed in seeds})
    return out


def format_budget(out: dict) -> str:
    """The answer in a few lines: the ticket per seed, its cost, the verdict."""
    goal = " and ".join(x for x in (out.get("budget") and f"a budget of {out['budget']:g} dense trainings",
                                     out.get("target_density") and f"target density {out['target_density']:g}") if x)
    lines = [f"smallest matching ticket within {goal} (early-bird searches, adaptive steps; cost in dense "
             "trainings per seed, dense included):"]
    for seed, t in out["tickets"].items():
        lines.append(f"  seed {seed}: ticket at {100 * t['density']:.2f} % (level {t['level']}), cost {t['cost']:.2f}"
                     f"  [{out['ends'].get(seed) or ''}]")
    for seed in out["missing"]:
        lines.append(f"  seed {seed}: no fully trained ticket")
    d, c, diff = out["density"], out["cost"], out["ticket_minus_dense"]
    if d["n"]:
        lines.append(f"density {100 * d['mean']:.2f} % (mean of {d['n']} seeds), cost {c['mean']:.2f} dense trainings")
    if diff and diff.get("n"):
        interval = (f" [{100 * diff['lo']:+.2f}, {100 * diff['hi']:+.2f}]" if diff.get("lo") is not None
                    else " (one seed: no interval; --seeds 3 gives one)")
        lines.append(f"ticket − dense ({stats.METRIC_NAMES[out['metric']]}): {100 * diff['mean']:+.2f} points{interval}")
    lines.append(f"verdict: {out['verdict']} ({out['rule']})")
    return "\n".join(lines)
