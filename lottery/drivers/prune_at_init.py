"""The pruning-at-initialization experiment, with the ablations of Frankle et al. 2021 ("Pruning neural networks
at initialization: why are we missing the mark?").

For each strategy and density: prune the *initialized* network in one shot (SynFlow in its 100 rounds), train the
subnetwork from that same init, and train two ablations — the mask shuffled within each layer (same per-layer
counts, same init) and the mask with freshly drawn weights (same scheme, another seed). If a method's mask does
no better than its own shuffled version, only its per-layer densities carry information.

Results go to ``prune_at_init.json`` inside the IMP run directory of the same config, so the subnetworks start
from the very ``init.pt`` the IMP tickets rewind to. Every finished training run is saved before the next one
starts; running the same command again skips them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from lottery import __version__, distributed
from lottery.config import Config, from_dict, validate
from lottery.drivers.registry import register_driver
from lottery.errors import ConfigError, CorruptFileError
from lottery.masks import Mask
from lottery.options import Options, densities_option, known, option, parse_seeds, read_list, seeds_option
from lottery.pruning import PRUNERS, collapsed_layers, random_mask_like
from lottery.session import Session, load_data
from lottery.stats import paired_interval, single_run_cost, verdict
from lottery.storage.atomic import finite, load_json, save_json
from lottery.storage.rundir import RunDir, refuse_symlink, set_aside, valid_level
from lottery.train import derived_seed
from lottery.pruning.level_plan import refuse_early_bird

RESULTS_FILE = "prune_at_init.json"
STRATEGIES = ("snip", "grasp", "synflow", "magnitude_init", "random")
ABLATIONS = ("shuffled", "reinit")


def check_densities(densities) -> tuple[float, ...]:
    out = tuple(float(d) for d in densities)
    if not out or any(not 0 < d < 1 for d in out):
        raise ConfigError(f"densities must be fractions of weights kept, in (0, 1), e.g. 0.1,0.02; got {densities}")
    return out


@dataclass(frozen=True)
class PruneAtInitOptions(Options):
    """prune-at-init: which pruning-at-init strategies, at which densities, with which ablations."""

    command: ClassVar[str] = "prune-at-init"
    strategies: tuple = option(("snip", "grasp", "synflow", "magnitude_init", "random"),
                               "pruning strategies (see `lottery list`)", parse=read_list(str), metavar="S1,S2,...",
                               check=known(PRUNERS, "pruning strategies from"))
    densities: tuple = densities_option((0.1, 0.02))
    ablations: tuple = option(("shuffled", "reinit"), "ablations of each pruned network: shuffled,reinit or none",
                              parse=read_list(str), check=known(ABLATIONS, "ablations from"),
                              metavar="A1,A2")
    seeds: int | tuple = seeds_option(1, "seeds (a count from --seed up, or a list): one run directory each, then "
                                      "each subnetwork against dense over the seeds, paired, with its verdict")


def run_prune_at_init(config: Config | dict, strategies=STRATEGIES, densities=(0.1, 0.02),
                      ablations=ABLATIONS) -> dict:
    """Run (or resume) the experiment; returns the content of ``prune_at_init.json``.

    ``cfg.scope`` chooses global or layerwise ranking; ``cfg.layer_fractions`` (per-level IMP fractions) are
    ignored here.
    """
    cfg = config if isinstance(config, Config) else from_dict(config)
    validate(cfg)
    refuse_early_bird(cfg, "pruning at init")
    distributed.refuse_processes("prune-at-init")
    for s in strategies:
        PRUNERS.get(s)
    bad = [a for a in ablations if a not in ABLATIONS]
    if bad:
        raise ConfigError(f"unknown ablation '{bad[0]}'; known: {', '.join(ABLATIONS)}")
    if cfg.init == "checkpoint" and "reinit" in ablations:
        raise ConfigError("init 'checkpoint' loads the same weights whatever the seed, so the reinit ablation would "
                          "be the subnetwork itself; use --ablations shuffled (or none)")
    densities = check_densities(densities)
    data = load_data(cfg)  # data the config cannot use (--augment on non-images) is refused before the run directory
    run = RunDir.for_config(cfg)
    with run:
        return PruneAtInit(cfg, run, data).run(tuple(strategies), densities, tuple(ablations))


class PruneAtInit:
    """Runs on the ``Session`` of the config's run directory: its data, model, init state and verified training
    runs (``train_from`` / ``train_many``)."""

    def __init__(self, cfg: Config, run: RunDir, data=None):
        self.cfg, self.rundir = cfg, run
        self.session = Session(cfg, run, data=data)
        self.results = run.driver_results(RESULTS_FILE, valid_results, lambda: {
            "config": cfg.to_dict(), "hash": cfg.hash(), "version": __version__, "mode": "prune_at_init",
            "status": "running", "dense": None, "entries": []})

    def _save(self) -> None:
        save_json(self.rundir.path / RESULTS_FILE, self.results)

    def _entry(self, strategy: str, density: float) -> dict | None:
        return next((e for e in self.results["entries"]
                     if e["strategy"] == strategy and e["target_density"] == density), None)

    def _mask(self, strategy: str, density: float) -> Mask:
        """Prune the initialized network once; the mask is saved so a resumed run reuses it."""
        folder = self.rundir.path / "prune_at_init" / f"{strategy}-{density:g}"
        path = refuse_symlink(folder, self.rundir.path) / "mask.npz"
        if path.exists():
            try:
                return Mask.load(path, like=self.session.model).to(self.session.device)
            except CorruptFileError as e:  # as IMP does with a level's mask: recompute it, keep the bad file
                aside = set_aside(path)
                print(f"lottery: note: {path} was damaged ({str(e).split(';')[0]}); set aside as {aside.name} "
                      "and recomputed", file=sys.stderr)
        model = self.session.model
        model.load_state_dict(self.session.init_state)
        mask = PRUNERS.get(strategy)(model, Mask.ones_like(model), 1.0 - density, scope=self.cfg.scope,
                                     seed=derived_seed(self.cfg.seed, "prune_at_init", strategy, density),
                                     data=self.session.data.train)
        mask.save(path)
        return mask

    def _dense(self) -> None:
        """The dense baseline: IMP's level 0 when that run exists (same config, same init), else trained here."""
        if self.results.get("dense"):
            return
        level0 = next((e for e in (self.rundir.load_results_strict() or {}).get("levels", []) if e["level"] == 0), None)
        if level0 is None:
            result = self.session.train_from(self.session.init_state, Mask.ones_like(self.session.model), "dense",
                                         point="train:dense")
            level0 = {"density": 1.0, **result.summary()}
        self.results["dense"] = {k: v for k, v in level0.items() if k not in ("controls", "layer_density")}
        self._save()

    def run(self, strategies, densities, ablations) -> dict:
        self._dense()
        runs, keys = [], []  # every pending training run, each subnetwork before its ablations
        for strategy in strategies:
            for density in densities:
                mask = self._mask(strategy, density)
                entry = self._entry(strategy, density)
                if entry is None:
                    runs.append((lambda: self.session.init_state, mask, f"{strategy} {density:g}",
                                 f"train:{strategy}:{density:g}"))
                    keys.append((strategy, density, mask, None))
                for ablation in ablations:
                    if entry is not None and ablation in entry["controls"]:
                        continue
                    seed = derived_seed(self.cfg.seed, "prune_at_init", ablation, strategy, density)
                    if ablation == "shuffled":  # same per-layer counts, positions drawn at random; same init
                        start = lambda: self.session.init_state  # noqa: E731
                        ablated = random_mask_like(mask, seed).to(self.session.device)
                    else:  # reinit: same mask, a fresh draw of the same init scheme (the rest from init.pt)
                        start, ablated = (lambda seed=seed: self.session.fresh_init(seed)), mask
                    runs.append((start, ablated, f"{strategy} {density:g} {ablation}",
                                 f"train:{strategy}:{density:g}:{ablation}"))
                    keys.append((strategy, density, mask, ablation))
        # one after another, or with --pack in fused passes; each result is saved as its run (or pass) ends
        self.session.train_many(runs, lambda i, result: self._record(*keys[i], result))
        self.results["status"] = "complete"
        self._save()
        return self.results

    def _record(self, strategy: str, density: float, mask: Mask, ablation: str | None, result) -> None:
        if ablation is None:
            self.results["entries"].append({
                "strategy": strategy, "target_density": density, "density": mask.density, "num_kept": mask.num_kept,
                "layer_density": mask.layer_density(), "collapsed_layers": collapsed_layers(mask),
                **result.summary(), "controls": {}})
        else:
            self._entry(strategy, density)["controls"][ablation] = result.summary()
        self._save()


def valid_results(results: object) -> bool:
    entries = results.get("entries") if isinstance(results, dict) else None
    return isinstance(entries, list) and all(
        isinstance(e, dict) and isinstance(e.get("strategy"), str) and finite(e.get("target_density"), 0, 1)
        and valid_level({**e, "level": 0}) for e in entries) and (
        results.get("dense") is None or valid_level({**results["dense"], "level": 0}))


def load_results(run_path) -> dict:
    """``prune_at_init.json``, checked (for reports; the driver sets a damaged one aside and recomputes)."""
    results = load_json(run_path / RESULTS_FILE)
    if not valid_results(results):
        raise CorruptFileError(f"{run_path / RESULTS_FILE} is not a prune-at-init results file; delete it")
    return results


def _pct(x) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}"


def format_table(results: dict) -> str:
    """strategy, weights remaining, accuracy of the subnetwork and of its shuffled / reinitialized ablations."""
    head = (f"{'strategy':<15} {'weights %':>9} {'acc %':>6} {'shuffled %':>10} {'reinit %':>8} {'cost':>5}  "
            "collapsed layers")
    lines = [head, "-" * len(head)]
    dense = results.get("dense")
    if dense:
        lines.append(f"{'dense':<15} {100.0:9.2f} {_pct(dense.get('test_accuracy')):>6} {'':>10} {'':>8} "
                     f"{1.0:5.1f}")
    unit = (dense or {}).get("steps") or next((e.get("steps") for e in results["entries"]), None)
    for e in sorted(results["entries"], key=lambda e: (-e["target_density"], e["strategy"])):
        c = e.get("controls", {})
        cost = single_run_cost(e, unit)
        lines.append(
            f"{e['strategy']:<15} {100 * e['density']:9.2f} {_pct(e.get('test_accuracy')):>6} "
            f"{_pct(c.get('shuffled', {}).get('test_accuracy')):>10} {_pct(c.get('reinit', {}).get('test_accuracy')):>8}"
            f" {'-' if cost is None else f'{cost:5.1f}':>5}  {', '.join(e['collapsed_layers']) or '-'}"
        )
    lines.append("accuracies: test set, final weights; cost: dense trainings to reach the subnetwork (one training "
                 "of the mask chosen at init; its few scoring batches are not counted)")
    return "\n".join(lines)


def report_prune_at_init(results: dict, cfg: Config, opts) -> str:
    if "seeds" in results:
        parts = [report_prune_at_init(r, cfg.replace(seed=s), opts) for s, r in results["seeds"].items()]
        return "\n\n".join([*parts, seeds_table(results["seeds"])])
    return f"{format_table(results)}\n\nresults: {RunDir.path_for(cfg) / RESULTS_FILE}"


def seeds_table(by_seed: dict) -> str:
    """Each (strategy, density) against dense over the seeds: accuracy − dense paired by seed, 95 % interval and
    verdict (lottery/stats.py; test accuracy of the final weights)."""
    dense = {s: (r.get("dense") or {}).get("test_accuracy") for s, r in by_seed.items()}
    keys = sorted({(e["strategy"], e["target_density"]) for r in by_seed.values() for e in r["entries"]},
                  key=lambda k: (-k[1], k[0]))
    lines = [f"over seeds {list(by_seed)}: subnetwork − dense, paired by seed (points, 95 % interval)",
             f"{'strategy':<15} {'weights %':>9} {'minus dense':>20}  verdict"]
    for strategy, density in keys:
        acc = {s: next((e.get("test_accuracy") for e in r["entries"] if (e["strategy"], e["target_density"]) ==
                        (strategy, density) and e.get("status") == "ok"), None) for s, r in by_seed.items()}
        d = paired_interval(acc, dense)
        shown = "-" if d["mean"] is None else (f"{100 * d['mean']:+.2f}" if d["lo"] is None else
                                               f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f},{100 * d['hi']:+.1f}]")
        lines.append(f"{strategy:<15} {100 * density:9.2f} {shown:>20}  {verdict(d)}")
    return "\n".join(lines)


@register_driver("prune-at-init", "prune at init (snip, grasp, synflow, ...) with shuffle/reinit ablations",
                 options=PruneAtInitOptions, report=report_prune_at_init)
def prune_at_init_command(cfg: Config, opts: PruneAtInitOptions) -> dict:
    seeds = parse_seeds(opts.seeds, cfg.seed)
    outcomes = {s: run_prune_at_init(cfg.replace(seed=s), opts.strategies, opts.densities, opts.ablations)
                for s in seeds}
    return outcomes[seeds[0]] if seeds == [cfg.seed] else {"seeds": outcomes}
