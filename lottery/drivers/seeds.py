"""One IMP experiment over several seeds: ``lottery run --seeds 0,1,2`` and the verdict it prints.

Each seed is an ordinary run directory (``run_imp`` of the config with that seed), so a finished seed is reused and
a killed one resumes; the seeds train one after another, in lockstep with their runs fused (``--pack``), or in
worker processes (``--jobs``), as a compare-inits grid does (lottery/executors/trunks.py). The comparison — per
level, every arm with its 95 % interval, the paired differences, the verdict and the smallest matching density —
comes from lottery/stats.py and is written to ``<out>/seeds-<name>-<hash>/verdicts.json`` with its plots.

The embedded default experiment (``lottery run`` with no flags) trains 3 seeds; any other experiment trains the
one seed of its config unless ``--seeds`` (or ``seeds`` in the file's ``[run]`` table) asks for more.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

from lottery.config import Config
from lottery.distributed import is_main_process
from lottery.drivers import imp
from lottery.drivers.plan_seeds import run_together, together
from lottery.drivers.registry import register_driver
from lottery.fused import resolve_pack
from lottery.errors import ConfigError
from lottery.options import Options, metric_option, option, parse_seeds, read_int, seeds_option, tolerance_option
from lottery.threads import cores
from lottery.reporting import tables
from lottery.reporting.tables import format_table, format_verdicts
from lottery.session import build_network, load_data
from lottery.stats import TOLERANCE, compare_levels
from lottery.storage.atomic import save_json
from lottery.storage.rundir import RunDir

DEFAULT_SEEDS = 3  # the embedded default answers with an interval


def read_jobs(v) -> int | str:
    if v == "auto":
        return v
    n = read_int(v)
    if n < 1:
        raise ConfigError(f"expected auto or an integer >= 1 (worker processes), got {v!r}")
    return n


@dataclass(frozen=True)
class RunOptions(Options):
    """run: which seeds, and how the verdict reads them."""

    command: ClassVar[str] = "run"
    seeds: int | tuple | None = seeds_option(None, "seeds to train: a count from --seed up (3) or a list (0,4,7; "
                                             "seed 4 alone: 4,); default 3 for the embedded default experiment, "
                                             "else 1")
    metric: str = metric_option()
    tolerance: float = tolerance_option()
    jobs: int | str = option("auto", "train the seeds in N local worker processes, each with cores/N threads; "
                             "auto: one per seed up to the cores (1 for one seed)", parse=read_jobs, metavar="N|auto")


def resolve_jobs(jobs: int | str, seeds: int) -> int:
    """``auto``: one worker per seed while there are at most two per core, else one per core; 1 for a single seed.
    One seed per worker keeps the cores busy to the end (3 seeds in 2 workers leave one core idle for the last
    seed's whole run: measured 213 s for the default run, against ~160 s for 3 single-thread workers on 2 cores)."""
    if jobs != "auto":
        return jobs
    return seeds if seeds <= 2 * cores() else cores()


def default_seeds(cfg: Config) -> int:
    """3 for the embedded default experiment (whatever the run settings: out, pack, device), else 1."""
    return DEFAULT_SEEDS if cfg.hashed_settings() == Config().hashed_settings() else 1


def seeds_dir(cfg: Config, run_names: list[str]) -> Path:
    """``<out>/seeds-<name>-<hash>``: the hash covers the seeds' run directories."""
    return seeds_dir_in(Path(cfg.out), cfg.experiment_name(), run_names)


def seeds_dir_in(parent: Path, name: str, run_names: list[str]) -> Path:
    """Where the verdicts over the runs ``run_names`` of experiment ``name`` go (``lottery report`` too)."""
    digest = hashlib.sha256(json.dumps(sorted(run_names)).encode()).hexdigest()[:10]
    return Path(parent) / f"seeds-{name}-{digest}"


def run_seeds(cfg: Config, seeds, *, metric: str = "early_stop", tolerance: float = TOLERANCE, jobs: int | str = 1,
              plots: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Train (or reuse) ``cfg`` under every seed; returns the comparison (``compare_levels``) with ``run_dirs``
    and ``comparison_dir``, also written to ``verdicts.json`` there."""
    from lottery.executors.trunks import run_trunks  # the executors import the IMP driver this module sits beside

    seed_list = parse_seeds(seeds, cfg.seed)
    cfg = together(cfg, seed_list)  # adaptive steps: the seeds judged together (lottery/drivers/plan_seeds.py)
    configs = {s: cfg.replace(seed=s) for s in seed_list}
    data = load_data(cfg)
    model = build_network(cfg, data.input_shape, data.num_classes, data.train[0].device)  # auto pack: its device
    out = seeds_dir(cfg, [c.run_name() for c in configs.values()])
    def run_round() -> dict:
        return run_trunks(configs, cfg, data, resolve_pack(cfg.pack, model), jobs=resolve_jobs(jobs, len(configs)),
                          folder=out / "submitit", log=log)

    runs = run_together(run_round, lambda r: r["results"], log) if cfg.plan_seeds else run_round()
    comparison = compare_levels({s: runs[s]["results"] for s in seed_list}, metric, tolerance)
    comparison["run_dirs"] = {str(s): runs[s]["run_dir"] for s in seed_list}
    comparison["config"] = cfg.replace(seed=seed_list[0]).to_dict()
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "verdicts.json", comparison)
    comparison["comparison_dir"] = str(out)
    if plots:
        from lottery.reporting.plots import seed_plots  # matplotlib: loaded only to plot

        comparison["plots"] = [str(p) for p in seed_plots(out, [runs[s]["results"] for s in seed_list], metric)]
    return comparison


def report_run(outcome: dict, cfg: Config, _) -> str:
    """``lottery run``'s table: one seed's levels (and its plots), or the verdict table over several seeds."""
    if not is_main_process():  # under torchrun, rank 0 prints the table and writes the plots
        return ""
    opts = outcome["options"]
    if "seeds" in outcome:
        c = outcome["seeds"]
        dirs = "\n".join(f"  seed {s}: {d}" for s, d in c["run_dirs"].items())
        return (f"{format_verdicts(c)}\n\nrun directories:\n{dirs}\nverdicts and plots: {c['comparison_dir']}")
    results = outcome["single"]
    run_path = RunDir.path_for(outcome.get("config", cfg))
    plots = tables.write_plots(run_path, results, metric=opts.metric)
    return (f"{format_table(results, opts.metric, opts.tolerance)}\n\nrun directory: {run_path}  "
            f"(plots: {', '.join(p.name for p in plots)})")


@register_driver("run", "run (or resume) one IMP experiment over one or more seeds; no flags = MNIST-1D MLP default, "
                 "3 seeds", options=RunOptions, report=report_run)
def run_command(cfg: Config, opts: RunOptions | None) -> dict:
    """``lottery run``: one seed (the run's own table) or several (the verdict table)."""
    import sys

    opts = opts or RunOptions()
    seeds = parse_seeds(opts.seeds if opts.seeds is not None else default_seeds(cfg), cfg.seed)
    if len(seeds) == 1:  # one seed (--seeds 4, too): that run's own table, no seeds directory
        together(cfg, seeds)  # plan_seeds by hand on one seed: refused
        return {"single": imp.run_imp(cfg.replace(seed=seeds[0])), "options": opts, "config": cfg.replace(seed=seeds[0])}
    return {"seeds": run_seeds(cfg, seeds, metric=opts.metric, tolerance=opts.tolerance, jobs=opts.jobs,
                               log=lambda line: print(line, file=sys.stderr)), "options": opts}


def find_tickets_over_seeds(model, train_fn, seeds, *, metric: str = "early_stop", tolerance: float = TOLERANCE,
                            **options) -> dict:
    """``find_tickets`` under several seeds, and their verdict: ``{"runs": {seed: results}, "verdicts": ...}``.

    The first seed starts from the weights ``model`` holds (or ``init=``); every other seed from a fresh draw
    under its seed — ``reinit(model, seed)`` if given, else each submodule's ``reset_parameters()`` — so seeds
    differ in their init as in ``lottery run``; ``train_fn`` sees the seed as ``run.seed`` (use it for its data
    order). Each seed is its own run directory (resumable); ``options`` go to ``find_tickets``.

    >>> import tempfile, torch, lottery as lt
    >>> def train_fn(model, mask, run):  # a real one trains here
    ...     return {"test_accuracy": 0.5 + 0.01 * run.seed, "early_stop_test_accuracy": 0.5}
    >>> out = lt.find_tickets_over_seeds(torch.nn.Linear(10, 10), train_fn, 3, out=tempfile.mkdtemp(), levels=1,
    ...                                  progress=False)
    >>> sorted(out["runs"]), out["verdicts"]["levels"][1]["verdict"]
    ([0, 1, 2], 'matches')
    """
    from lottery.drivers.find_tickets import find_tickets, reinit_model
    from lottery.rewind import snapshot

    seed_list = parse_seeds(seeds, options.pop("seed", 0))
    first = dict(options.pop("init", None) or snapshot(model))
    runs = {}
    for i, seed in enumerate(seed_list):
        if i == 0:
            init = first
        else:
            model.load_state_dict(first)
            reinit_model(model, seed, options.get("reinit"))
            init = snapshot(model)
        runs[seed] = find_tickets(model, train_fn, init=init, seed=seed, **options)
    return {"runs": runs, "verdicts": compare_levels(runs, metric, tolerance)}

