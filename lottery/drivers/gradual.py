"""Gradual magnitude pruning during training (Zhu & Gupta 2017; the schedule of TensorFlow's pruning API).

One training run, no rewinding: every ``every`` steps from ``begin_step`` to ``end_step`` the smallest-magnitude
weights are removed so that the sparsity follows the cubic schedule

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n Δt))**3,   t in {t0, t0 + Δt, ..., t0 + n Δt}

(fast at first, while there is much redundancy, then slower), and the rest of the budget trains at the final
density. It runs through the one training loop (``Session.train_from``: rewind and pruned weights checked), whose
step hook prunes on the schedule.
Weights pruned mid-run also lose their optimizer state (momentum, Adam moments), or they would keep moving.

Results go to ``gradual.json`` in the IMP run directory of the same config (same ``init.pt``), with entries
shaped like IMP levels, so ``lottery.reporting.tables.format_table`` prints them and IMP vs gradual is one table.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from lottery import __version__, distributed
from lottery.config import Config, from_dict, validate
from lottery.drivers.imp import run_imp
from lottery.drivers.registry import register_driver
from lottery.errors import ConfigError, CorruptFileError
from lottery.masks import Mask
from lottery.options import Options, densities_option, int_option, parse_seeds, seeds_option, switch_option
from lottery.pruning import cubic_sparsity, kept_counts, prune_to_counts
from lottery.reporting.tables import format_table, format_verdicts
from lottery.contract import check_pruned_zero
from lottery.session import Session, build_network, load_data, read_dataset
from lottery.stats import compare_levels, run_costs
from lottery.storage.atomic import load_json, save_json
from lottery.storage.rundir import RunDir, valid_level
from lottery.train import TrainResult, budget_steps, train
from lottery.pruning.level_plan import refuse_early_bird

RESULTS_FILE = "gradual.json"


@dataclass(frozen=True)
class CubicSchedule:
    """Sparsity ``initial → final`` (as densities) at steps ``begin_step, begin_step + every, …, end_step``."""

    final_density: float
    begin_step: int
    end_step: int
    every: int = 100
    initial_density: float = 1.0

    def __post_init__(self):
        if not 0 < self.final_density < 1 or not self.final_density <= self.initial_density <= 1:
            raise ConfigError(f"need 0 < final_density <= initial_density <= 1, got {self.final_density}, "
                              f"{self.initial_density}")
        if self.every < 1 or self.begin_step < 0 or self.end_step <= self.begin_step:
            raise ConfigError(f"need every >= 1 and 0 <= begin_step < end_step, got every={self.every}, "
                              f"begin_step={self.begin_step}, end_step={self.end_step}")
        if (self.end_step - self.begin_step) % self.every:
            raise ConfigError(f"end_step - begin_step ({self.end_step - self.begin_step}) must be a multiple of "
                              f"every ({self.every})")

    @classmethod
    def for_budget(cls, final_density: float, total_steps: int, every: int = 100, begin_step: int | None = None,
                   end_step: int | None = None, **kw) -> "CubicSchedule":
        """Default timing: prune from 10 % to ~60 % of the budget (end rounded down to whole ``every`` steps),
        then train at the final density."""
        every = max(1, min(every, total_steps // 4))
        begin = total_steps // 10 if begin_step is None else begin_step
        end = total_steps * 6 // 10 if end_step is None else end_step
        return cls(final_density, begin, begin + max(1, (end - begin) // every) * every, every, **kw)

    def sparsity(self, step: int) -> float:
        return cubic_sparsity(step, self.begin_step, self.end_step, self.initial_density, self.final_density)

    def steps(self) -> list[int]:
        """The steps at which weights are pruned (before that step's update)."""
        return list(range(self.begin_step, self.end_step + 1, self.every))


@torch.no_grad()
def _prune_step(model: nn.Module, optimizer: torch.optim.Optimizer, start: Mask, mask: Mask, sparsity: float,
                scope: str) -> Mask:
    """Magnitude-prune to ``sparsity`` of ``start`` (exact counts per scope); zero the removed weights and
    their optimizer state."""
    params = mask.check_fits(model)
    new = prune_to_counts({k: p.abs() for k, p in params.items()}, mask, kept_counts(start, sparsity, scope))
    for k, p in params.items():
        gone = ~new[k].to(p.device)
        p.masked_fill_(gone, 0.0)
        for state in optimizer.state.get(p, {}).values():
            if isinstance(state, torch.Tensor) and state.shape == p.shape:
                state.masked_fill_(gone, 0.0)
    return new


class GradualPruning:
    """The step hook that prunes on ``schedule`` (``lottery.train.train``'s ``step_hook``): at each of the
    schedule's steps it removes the smallest weights down to that step's exact count of ``start``'s weights,
    zeroes them and their optimizer state, and hands the trainer the new mask; ``history`` is [[step, density]]."""

    def __init__(self, model: nn.Module, schedule: CubicSchedule, start: Mask, scope: str):
        self.model, self.schedule, self.start, self.scope = model, schedule, start, scope
        self.mask = start
        self.prune_at = set(schedule.steps())
        self.history: list = []

    def __call__(self, step: int, optimizer: torch.optim.Optimizer) -> Mask | None:
        if step not in self.prune_at or self.schedule.sparsity(step) <= 0:
            return None
        self.mask = _prune_step(self.model, optimizer, self.start, self.mask, self.schedule.sparsity(step),
                                self.scope)
        self.history.append([step, self.mask.density])
        return self.mask


def _check_fits(schedule: CubicSchedule, total: int) -> None:
    if schedule.end_step > total:
        raise ConfigError(f"the schedule ends at step {schedule.end_step}, beyond the {total} training steps")


def train_gradual(model: nn.Module, data, cfg: Config, schedule: CubicSchedule, mask: Mask | None = None, *,
                  seed: int = 0, progress=None) -> tuple[TrainResult, Mask, list]:
    """Train ``model`` in place while pruning it on ``schedule``; returns (result, final mask, [[step, density]]).

    The one training loop (``lottery.train.train``) with the ``GradualPruning`` step hook. The early-stop step
    is the minimum validation loss among evaluations at the final density (from ``end_step`` on): earlier minima
    belong to denser networks. ``run_gradual`` trains the same way through a Session (rewind and zeros checked).
    """
    _check_fits(schedule, budget_steps(cfg, len(data.train[0])))
    start = mask if mask is not None else Mask.ones_like(model)
    start.apply(model)
    hook = GradualPruning(model, schedule, start, cfg.scope)
    result = train(model, data, cfg, start, seed=seed, progress=progress, step_hook=hook,
                   early_stop_from=schedule.end_step)
    if result.status == "ok":
        check_pruned_zero(model, hook.mask, "gradual pruning")
    return result, hook.mask, hook.history


def run_gradual(config: Config | dict, final_densities=(0.2, 0.05), every: int = 100, begin_step: int | None = None,
                end_step: int | None = None) -> dict:
    """Run (or resume) gradual pruning to each final density from the config's init; returns ``gradual.json``.

    Level 0 is the dense baseline (IMP's level 0 when that run exists); the other levels are numbered in the
    order they were trained. An entry with the same final density and timing is not retrained.
    """
    cfg = config if isinstance(config, Config) else from_dict(config)
    validate(cfg)
    refuse_early_bird(cfg, "gradual pruning")
    distributed.refuse_processes("gradual pruning")
    densities = check_options(final_densities, every, begin_step, end_step)
    data = load_data(cfg)  # data the config cannot use (--augment on non-images) is refused before the run directory
    run = RunDir.for_config(cfg)
    with run:
        session = Session(cfg, run, data=data)
        check_plan(session.model, session.total_steps, densities, every, begin_step, end_step)  # before training
        path = run.path / RESULTS_FILE
        results = run.driver_results(RESULTS_FILE, valid_results, lambda: {
            "config": cfg.to_dict(), "hash": cfg.hash(), "version": __version__, "mode": "gradual",
            "status": "running", "levels": []})
        if not any(e["level"] == 0 for e in results["levels"]):
            level0 = next((e for e in (run.load_results_strict() or {}).get("levels", []) if e["level"] == 0), None)
            if level0 is None:
                result = session.train_from(session.init_state, Mask.ones_like(session.model), "dense",
                                            point="train:dense")
                level0 = {"level": 0, "density": 1.0, **result.summary()}
            results["levels"].append({**level0, "controls": {}})
            save_json(path, results)
        total = session.total_steps
        for density in densities:
            schedule = CubicSchedule.for_budget(density, total, every, begin_step, end_step)
            if any(e.get("schedule") == asdict(schedule) for e in results["levels"]):
                continue  # finished earlier (same final density and timing)
            _check_fits(schedule, total)
            start = Mask.ones_like(session.model)
            hook = GradualPruning(session.model, schedule, start, cfg.scope)
            result = session.train_from(session.init_state, start, f"gradual {density:g}",
                                        point=f"train:gradual:{density:g}", step_hook=hook,
                                        early_stop_from=schedule.end_step)
            mask = hook.mask
            results["levels"].append({
                "level": len([e for e in results["levels"] if e["level"] > 0]) + 1, "target_density": density,
                "density": mask.density, "num_kept": mask.num_kept, "layer_density": mask.layer_density(),
                "schedule": asdict(schedule), "pruning": hook.history, **result.summary(), "controls": {}})
            results["levels"].sort(key=lambda e: -e["density"])
            save_json(path, results)
        results["status"] = "complete"
        save_json(path, results)
        return results


def check_options(final_densities, every: int, begin_step: int | None, end_step: int | None) -> list[float]:
    """The final densities, sorted; refuses what ``CubicSchedule.for_budget`` would otherwise silently replace."""
    try:
        densities = sorted({float(d) for d in final_densities}, reverse=True)
    except (TypeError, ValueError):
        densities = []
    if not densities or any(not 0 < d < 1 for d in densities):
        raise ConfigError(f"final densities must lie in (0, 1), e.g. 0.2,0.05; got {final_densities}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"--prune-every must be an integer >= 1 (steps between pruning steps), got {every!r}")
    if begin_step is not None and begin_step < 0:
        raise ConfigError(f"--begin-step must be >= 0, got {begin_step}")
    if begin_step is not None and end_step is not None and end_step <= begin_step:
        raise ConfigError(f"--end-step ({end_step}) must come after --begin-step ({begin_step})")
    return densities


@dataclass(frozen=True)
class GradualOptions(Options):
    """gradual: the cubic pruning schedule (Zhu & Gupta) and whether to run IMP beside it."""

    command: ClassVar[str] = "gradual"
    final_densities: tuple = densities_option((0.2, 0.05), "final fractions of weights kept")
    prune_every: int = int_option(100, "steps between pruning steps", least=1, metavar="STEPS")
    begin_step: int | None = int_option(None, "first pruning step (default 10% of the budget)", metavar="STEP")
    end_step: int | None = int_option(None, "last pruning step (default ~60% of the budget)", metavar="STEP")
    with_imp: bool = switch_option(False, "also run (or resume) IMP with the same config and compare")
    seeds: int | tuple = seeds_option(1, "seeds (a count from --seed up, or a list): one run directory each, then the "
                                      "verdict of each final density against dense over the seeds")

    def check(self) -> None:
        check_options(self.final_densities, self.prune_every, self.begin_step, self.end_step)


def check_plan(model: nn.Module, total_steps: int, densities, every: int, begin_step: int | None,
               end_step: int | None) -> None:
    """Every final density keeps a weight of ``model`` and every schedule fits the budget."""
    n = Mask.ones_like(model).num_total
    if min(densities) * n < 1:
        raise ConfigError(f"final density {min(densities):g} keeps no weight of the {n} prunable ones; "
                          f"use at least {1 / n:.2g}")
    for density in densities:
        if CubicSchedule.for_budget(density, total_steps, every, begin_step, end_step).end_step > total_steps:
            raise ConfigError(f"--end-step {end_step} is beyond the {total_steps} training steps")


def preflight(cfg: Config, final_densities, every: int, begin_step: int | None, end_step: int | None) -> None:
    """All of run_gradual's checks without a run directory: for callers that train something else first."""
    densities = check_options(final_densities, every, begin_step, end_step)
    data = read_dataset(cfg)
    model = build_network(cfg, data.input_shape, data.num_classes, "cpu")
    check_plan(model, budget_steps(cfg, len(data.train[0])), densities, every, begin_step, end_step)


def valid_results(results: object) -> bool:
    levels = results.get("levels") if isinstance(results, dict) else None
    return isinstance(levels, list) and all(valid_level(e) for e in levels)


def load_results(run_path) -> dict:
    """A finished or running ``gradual.json``, checked (for reports; the driver sets a damaged one aside)."""
    results = load_json(run_path / RESULTS_FILE)
    if not valid_results(results):
        raise CorruptFileError(f"{run_path / RESULTS_FILE} is not a gradual-pruning results file; delete it")
    return results


def compare_table(imp: dict | None, gradual: dict) -> str:
    """Each gradual density next to the IMP level closest to it in log-density (ticket accuracy), with what each
    cost in dense trainings (lottery/stats.py: gradual is one training; IMP's level L is the L + 1 before it)."""
    head = (f"{'weights % (gradual)':>19} {'gradual %':>9} {'cost':>5} {'IMP level':>9} {'weights % (IMP)':>15} "
            f"{'IMP ticket %':>12} {'cost':>5}")
    lines = [head, "-" * len(head)]
    imp_levels = [e for e in (imp or {}).get("levels", []) if e.get("test_accuracy") is not None]
    imp_costs, costs = run_costs(imp or {}), run_costs(gradual)

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    def cost(table, level):
        c = table.get(level, {}).get("ticket")
        return "-" if c is None else f"{c:.1f}"

    for e in gradual["levels"]:
        if e["level"] == 0:
            continue
        near = min(imp_levels, key=lambda x: abs(math.log(x["density"] / e["density"])), default=None)
        lines.append(f"{100 * e['density']:19.2f} {pct(e.get('test_accuracy')):>9} {cost(costs, e['level']):>5} "
                     f"{near['level'] if near else '-':>9} {pct(near['density']) if near else '-':>15} "
                     f"{pct(near.get('test_accuracy')) if near else '-':>12} "
                     f"{cost(imp_costs, near['level']) if near else '-':>5}")
    lines.append("accuracies: test set, final weights; cost: dense trainings spent to reach that subnetwork")
    return "\n".join(lines)


def report_gradual(results: dict, cfg: Config, opts) -> str:
    """The gradual run's table, beside the IMP run of the same config when there is one (ticket vs gradual);
    several seeds: each seed's, then the verdict table over them (lottery/stats.py)."""
    if "seeds" in results:
        parts = [report_gradual(r, cfg.replace(seed=s), opts) for s, r in results["seeds"].items()]
        return "\n\n".join([*parts, "gradual pruning over seeds (level L = the L-th final density):",
                              format_verdicts(compare_levels(results["seeds"]))])
    run_path = RunDir.path_for(cfg)
    text = format_table(results)
    if (run_path / "results.json").exists():
        text += ("\n\nIMP ticket vs gradual pruning (nearest IMP level):\n"
                 + compare_table(RunDir(run_path).load_results_strict(), results))
    return f"{text}\n\nresults: {run_path / RESULTS_FILE}"


@register_driver("gradual", "gradual magnitude pruning during training (Zhu & Gupta), vs IMP", options=GradualOptions,
                 report=report_gradual)
def gradual_command(cfg: Config, opts: GradualOptions) -> dict:
    """``lottery gradual``: with ``--with-imp``, the IMP run of the same config first (its checks before it)."""
    schedule = (opts.final_densities, opts.prune_every, opts.begin_step, opts.end_step)
    seeds = parse_seeds(opts.seeds, cfg.seed)
    if opts.with_imp:
        preflight(cfg, *schedule)
    outcomes = {}
    for seed in seeds:
        if opts.with_imp:
            run_imp(cfg.replace(seed=seed))
        outcomes[seed] = run_gradual(cfg.replace(seed=seed), *schedule)
    return outcomes[seeds[0]] if seeds == [cfg.seed] else {"seeds": outcomes}
