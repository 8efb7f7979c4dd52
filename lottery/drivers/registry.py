"""The driver registry: one entry per driver, from which the ``lottery`` subcommands are generated.

An entry says what a driver is on the command line: its help, its options dataclass (lottery/options.py's
``Options``, declared in the driver's module), how it runs — on a ``Config`` (the run directory and Session it
makes are the driver's) or, for a study of a finished run, on that ``RUN_DIR`` — and how its results print.
``lottery --help``, each subcommand's flags and ``lottery list`` read ``DRIVERS``; tests/test_drivers.py is
parametrized over it. A new driver is one module in lottery/drivers/ plus its entry below (and a row in that
test's table).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lottery.config import Config
from lottery.distributed import is_main_process
from lottery.drivers import compare_inits, gradual, imp, prune_at_init, seeds, stability, supermask, transfer
from lottery.registry import Registry
from lottery.reporting import tables
from lottery.reporting.tables import format_table, format_verdicts
from lottery.storage.rundir import RunDir


@dataclass(frozen=True)
class Driver:
    """One subcommand: ``run(target, options)`` returns the results, ``report(results, target, options)`` the text
    printed after them. ``target`` is the Config, or the run directory for a study of a finished run (its
    options say so: ``studies_run``)."""

    help: str
    run: Callable[[Any, Any], Any]
    report: Callable[[Any, Any, Any], str]
    options: type | None = None  # its Options dataclass; None: the experiment Config's flags only
    description: str | None = None  # --help text above the flags

    @property
    def study(self) -> bool:
        """Works on a finished IMP run directory (RUN_DIR), whose config is the experiment."""
        return self.options is not None and self.options.studies_run


DRIVERS = Registry("driver")


def _imp_report(outcome: dict, cfg: Config, _) -> str:
    if not is_main_process():  # under torchrun, rank 0 prints the table and writes the plots
        return ""
    opts = outcome["options"]
    if "seeds" in outcome:
        c = outcome["seeds"]
        dirs = "\n".join(f"  seed {s}: {d}" for s, d in c["run_dirs"].items())
        return (f"{format_verdicts(c)}\n\nrun directories:\n{dirs}\nverdicts and plots: {c['comparison_dir']}")
    results = outcome["single"]
    run_path = Path(cfg.out) / cfg.run_name()
    plots = tables.write_plots(run_path, results, metric=opts.metric)
    return (f"{format_table(results, opts.metric, opts.tolerance)}\n\nrun directory: {run_path}  "
            f"(plots: {', '.join(p.name for p in plots)})")


DRIVERS.register("run")(Driver(
    "run (or resume) one IMP experiment over one or more seeds; no flags = MNIST-1D MLP default, 3 seeds",
    run=lambda cfg, o: seeds.run_command(cfg, o), report=_imp_report, options=seeds.RunOptions))


COMPARE_INITS_HELP = """\
Run the same IMP experiment under each init variant and seed, then print one summary and write summary.json and
plots to <out>/compare-<name>-<hash>/. Every (variant, seed) is an ordinary run directory, so finished runs are
reused and interrupted ones resume.

init variants: SCHEME[:KEY=VALUE[:KEY=VALUE...]][*SCALE]
  normal                   the scheme's defaults (normal: N(0, 0.01^2))
  normal:std=0.001         scheme options (several separated by ':', e.g. normal:std=0.01:bias=1)
  xavier_normal*0.01       multiply the drawn weights by 0.01 (same as xavier_normal:scale=0.01); quote it
  e.g. --inits 'normal,normal:std=0.0001,normal:std=1.0,xavier_normal,kaiming_normal,orthogonal,zeros,lsuv'

Accuracies are test accuracies at the early-stop step (--metric final: the last step's). Per level, ticket - dense
is paired by seed with a 95 % t interval: beats (lower bound > 0), matches (lower bound >= -tolerance), below (upper
bound < -tolerance), else inconclusive; one seed has no interval. "smallest match" is the deepest level down to
which every level beats or matches. A scheme whose dense accuracy is below chance + --stall-margin is marked
stalled; one whose dense run diverged, diverged.
"""


def _compare(cfg: Config, opts: compare_inits.CompareOptions) -> dict:
    return compare_inits.compare_inits(
        cfg, opts.inits, opts.seeds, match_tolerance=opts.match_tolerance, stall_margin=opts.stall_margin,
        metric=opts.metric,
        log=lambda line: print(line, file=sys.stderr), jobs=opts.jobs, executor=opts.executor,
        submitit=opts.submitit)


DRIVERS.register("compare-inits")(Driver(
    "the same IMP experiment per init scheme and seed, one summary", run=_compare,
    report=lambda s, *_: f"{compare_inits.format_summary(s)}\n\ncomparison directory: {s['comparison_dir']}  "
                         "(summary.json and plots)",
    options=compare_inits.CompareOptions, description=COMPARE_INITS_HELP))


DRIVERS.register("prune-at-init")(Driver(
    "prune at init (snip, grasp, synflow, ...) with shuffle/reinit ablations",
    run=lambda cfg, o: prune_at_init.run_prune_at_init(cfg, o.strategies, o.densities, o.ablations),
    report=lambda r, cfg, _: f"{prune_at_init.format_table(r)}\n\nresults: "
                             f"{Path(cfg.out) / cfg.run_name() / prune_at_init.RESULTS_FILE}",
    options=prune_at_init.PruneAtInitOptions))


def _gradual(cfg: Config, o: gradual.GradualOptions) -> dict:
    schedule = (o.final_densities, o.prune_every, o.begin_step, o.end_step)
    if o.with_imp:
        gradual.preflight(cfg, *schedule)  # before IMP
        imp.run_imp(cfg)
    return gradual.run_gradual(cfg, *schedule)


def _gradual_report(results: dict, cfg: Config, _) -> str:
    run_path = Path(cfg.out) / cfg.run_name()
    text = format_table(results)
    if (run_path / "results.json").exists():  # the IMP run of the same config: ticket vs gradual
        text += ("\n\nIMP ticket vs gradual pruning (nearest IMP level):\n"
                 + gradual.compare_table(RunDir(run_path).load_results(), results))
    return f"{text}\n\nresults: {run_path / gradual.RESULTS_FILE}"


DRIVERS.register("gradual")(Driver(
    "gradual magnitude pruning during training (Zhu & Gupta), vs IMP", run=_gradual, report=_gradual_report,
    options=gradual.GradualOptions))


DRIVERS.register("supermask")(Driver(
    "accuracy of the masked untrained network (Zhou et al.) for a run",
    run=lambda run_dir, o: supermask.supermask_run(run_dir, o.densities, o.criteria or None, o.scope, o.seed,
                                                   progress=o.progress),
    report=lambda r, *_: supermask.format_table(r), options=supermask.SupermaskOptions))


DRIVERS.register("stability")(Driver(
    "instability (linear mode connectivity) of a level from step k",
    run=lambda run_dir, o: stability.stability_run(run_dir, o.level, o.k, o.seeds, o.points, progress=o.progress,
                                                   pack=o.pack),
    report=lambda r, *_: f"{stability.format_result(r)}\nplot: {r['plot']}", options=stability.StabilityOptions))


def _transfer_report(results: dict, run_dir, o: transfer.TransferOptions) -> str:
    text = transfer.format_table(results, o.level)
    if o.plot:
        from lottery.reporting.plots.transfer import transfer_plots  # matplotlib: loaded only to plot

        run = RunDir(run_dir)
        plots = transfer_plots(run.path, results, run.load_results())
        text += f"\n\nplots: {', '.join(str(p) for p in plots)}"
    return text


DRIVERS.register("transfer")(Driver(
    "train a level's mask on other inits (raw, sign-aligned, unit-permuted)",
    run=lambda run_dir, o: transfer.transfer_mask(run_dir, o.level, o.inits or None, o.seeds, o.align, match=o.match,
                                                  control_draws=o.control_draws,
                                                  controls=o.controls, pack=o.pack, progress=o.progress),
    report=_transfer_report, options=transfer.TransferOptions))


def formatter(driver: Driver) -> type:
    """The --help formatter: a description written as a block keeps its lines."""
    return argparse.RawDescriptionHelpFormatter if driver.description else argparse.HelpFormatter
