"""Init-scheme comparison: the same IMP experiment under several init schemes and seeds, and one summary of it.

An init variant is written ``SCHEME[:KEY=VALUE[:KEY=VALUE...]][*SCALE]``:

- ``normal``                    the scheme with its defaults (N(0, 0.01²));
- ``normal:std=0.001``          with options (the scheme's keyword options, ``lottery list`` names the schemes);
- ``normal:std=0.01:bias=1``    several options, separated by ``:``;
- ``xavier_normal*0.01``        every weight multiplied by 0.01 after drawing (``init_scale``; ``:scale=0.01`` is
                                the same) — the "too small" / "too large" experiments. Quote it in a shell.

Each (variant, seed) is one ordinary ``run_imp`` run directory (the base config with ``init``, ``init_options``,
``init_scale`` and ``seed`` replaced), so a comparison reuses every run that already finished — its own or a plain
``lottery run`` of the same settings — and resumes a half-finished one. Trunks draw no per-run plots (seconds per
run, mostly matplotlib): the comparison draws its own figures once, and ``lottery report RUN_DIR`` draws a run's.

The summary (``summary.json`` in ``<out>/compare-<name>-<hash>/``) holds per variant: the dense accuracy and
early-stop step (mean ± std over seeds), the ticket / reinit / random-mask accuracy at each density, and the
smallest density whose ticket still matches dense. Definitions:

- std is the sample standard deviation over seeds (ddof=1; 0 with one seed).
- A level *matches dense* when no seed diverged there and the ticket's mean test accuracy over seeds is at least
  the dense mean minus the tolerance: one std of the dense accuracy over seeds when there are ≥ 2 seeds, else
  ``match_tolerance`` (default 0.01, one point of accuracy).
- ``smallest_matching_density`` is the density of the deepest level L such that every level 1..L matches dense
  (tickets that "still" match, all the way down); ``None`` when level 1 already falls short or the variant
  diverged or stalled.
- A run is *diverged* when any of its levels diverged (non-finite loss or weights); IMP stops pruning there.
  A variant is ``diverged`` when its dense network diverged in any seed.
- A variant is *stalled* when its dense mean test accuracy is below chance (1 / classes) plus ``stall_margin``
  (default 0.05): it never learned (zero init, far too small a scale), so its "tickets" mean nothing.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

from lottery import distributed
from lottery.config import Config
from lottery.drivers import imp
from lottery.errors import ConfigError
from lottery.executors.grid import EXECUTORS, check, run_grid
from lottery.executors.lockstep import run_lockstep
from lottery.fused import resolve_pack
from lottery.init_variant import InitVariant, parse_init_variant  # noqa: F401  (public here too)
from lottery.inits import init_weights
from lottery.models import build_model
from lottery.options import (Options, in_unit, int_option, one_of, option, read_int, read_list, read_number,
                             read_table, read_text)
from lottery.session import data_key, load_data
from lottery.stats import mean_std  # noqa: F401  (re-exported: lottery.drivers.compare_inits.mean_std)
from lottery.storage.rundir import RunDir, RunLockedError
from lottery.storage.summary import save_summary

CONTROL_KEYS = ("reinit", "random_mask")


def parse_inits(value: str | Iterable[str]) -> list[InitVariant]:
    """``'normal,xavier_normal*0.01'`` or a list of variant strings -> variants (duplicate labels refused)."""
    items = [s for s in (value.split(",") if isinstance(value, str) else value) if str(s).strip()]
    if not items:
        raise ConfigError("--inits needs at least one init scheme, e.g. --inits normal,xavier_normal,zeros")
    variants = [v if isinstance(v, InitVariant) else parse_init_variant(str(v)) for v in items]
    labels = [v.label for v in variants]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"init variant {dupes[0]!r} is listed twice; list each once")
    return variants


def parse_seeds(value: int | str | Sequence[int], base_seed: int = 0) -> list[int]:
    """``3`` -> base, base+1, base+2; ``'0,4,7'`` or ``[0, 4, 7]`` -> those seeds."""
    if isinstance(value, str):
        value = value.strip()
        if "," not in value:
            value = int(value) if value.isdigit() else value
    if isinstance(value, bool):
        raise ConfigError(f"seeds must be a count or a list of seeds, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"--seeds must be at least 1, got {value}")
        return [base_seed + i for i in range(value)]
    try:
        seeds = [int(s) for s in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise ConfigError(f"--seeds takes a count (3) or a list (0,1,2), got {value!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must list distinct seeds >= 0, got {value!r}")
    return seeds


def read_seeds(v: Any) -> int | tuple:
    """compare-inits' ``--seeds``: a count (3) or the seeds themselves (0,4,7; one seed alone with a trailing
    comma: 4, — a bare 4 is a count)."""
    if isinstance(v, int) or (isinstance(v, str) and "," not in v):
        return read_int(v)
    if isinstance(v, str) and v.strip().endswith(","):  # "4," is seed 4 alone
        v = v.strip()[:-1]
    return read_list(int)(v)


def check_seeds(v: int | tuple) -> None:
    parse_seeds(v)


def check_variants(v: tuple) -> None:
    if v:
        parse_inits(v)


@dataclass(frozen=True)
class CompareOptions(Options):
    """compare-inits: the variants and seeds, when a ticket matches dense, and where the runs train."""

    command: ClassVar[str] = "compare-inits"
    top_level: ClassVar[bool] = True
    inits: tuple = option((), "comma-separated init variants SCHEME[:KEY=VALUE...][*SCALE] (see above); required",
                          parse=read_list(str), check=check_variants, metavar="A,B,...")
    seeds: int | tuple = option(1, "number of seeds (from --seed up) or a list of seeds (0,4,7; seed 4 alone: 4,)",
                                parse=read_seeds, check=check_seeds, metavar="N|S1,S2,...")
    match_tolerance: float = option(0.01, "with one seed: a ticket matches dense within this accuracy (0.01 = 1 "
                                    "point)", parse=read_number, check=in_unit, metavar="FRACTION")
    stall_margin: float = option(0.05, "a scheme is 'stalled' when its dense accuracy is below chance + this",
                                 parse=read_number, check=in_unit, metavar="FRACTION")
    jobs: int = int_option(1, "run the unfinished (scheme, seed) runs in N local worker processes, each with cores/N "
                           "threads (1: one after another)", least=1, metavar="N")
    executor: str = option("local", "local worker processes or submitit (a job array, e.g. SLURM; settings in the "
                           "[submitit] table; pip install 'lottery[grid]')", parse=read_text,
                           check=one_of(*EXECUTORS))
    submitit: dict | None = option(None, "submitit settings (a TOML table only)", parse=read_table, flag=False)

    def check(self) -> None:
        if not self.inits:
            raise ConfigError("name the init schemes to compare: --inits normal,xavier_normal,... "
                              "or inits = [...] in the --config file")


def comparison_dir(base: Config, variants: Sequence[InitVariant], seeds: Sequence[int]) -> Path:
    """``<out>/compare-<name>-<hash>``: the hash covers the shared settings, the variants and the seeds."""
    blob = json.dumps({"shared": base.comparison_settings(), "inits": [v.label for v in variants],
                       "seeds": list(seeds)},
                      sort_keys=True).encode()
    return Path(base.out) / f"compare-{base.experiment_name()}-{hashlib.sha256(blob).hexdigest()[:10]}"


def _run_finished(cfg: Config) -> dict | None:
    """The results of ``cfg``'s run when it already finished (complete or diverged), without touching its files."""
    path = Path(cfg.out) / cfg.run_name()
    if not (path / "results.json").is_file():
        return None
    run = RunDir.for_config(cfg)  # refuses a directory holding another experiment
    results = run.load_results()
    return results if results and results.get("status") in ("complete", "diverged", "exhausted") else None


def _check_variants(base: Config, variants: Sequence[InitVariant], model, data) -> None:
    """Draw every variant once on the model before the first run: a bad option fails now, in one line, not
    after hours of the variants listed before it."""
    for v in variants:
        cfg = v.apply(base)
        try:
            init_weights(model, cfg.init, seed=0, scale=cfg.init_scale, data=data.train[0][: cfg.batch_size * 5],
                         **cfg.init_options)
        except (ConfigError, TypeError, ValueError) as e:
            raise ConfigError(f"init variant {v.label!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                              ) from None


# -- the comparison -------------------------------------------------------------------------------------------
def compare_inits(base_cfg: Config, inits: str | Iterable[str], seeds: int | str | Sequence[int] = 1, *,
                  match_tolerance: float = 0.01, stall_margin: float = 0.05, plots: bool = True,
                  log: Callable[[str], None] | None = print, jobs: int = 1, executor: str = "local",
                  submitit: dict | None = None) -> dict:
    """Run (or reuse) IMP for every init variant and seed; write and return the summary.

    ``jobs`` > 1 runs the unfinished (variant, seed) trunks in that many worker processes, and ``executor=
    "submitit"`` as a job array (``submitit`` holds its settings); see lottery/executors/grid.py. The workers are spawned
    processes that import the calling script, so a script calling this with ``jobs`` > 1 needs the
    ``if __name__ == "__main__":`` guard. Otherwise, a ``pack`` > 1 in ``base_cfg`` (``auto``: lottery/fused.py)
    advances all trunks in lockstep, their runs fused (lottery/executors/lockstep.py). The summary is built once all are
    done.

    >>> import tempfile
    >>> from lottery.config import from_dict
    >>> base = from_dict({"dataset": "synthetic", "levels": 1, "steps": 50, "controls": "none", "progress": False,
    ...                   "out": tempfile.mkdtemp()})
    >>> s = compare_inits(base, "normal,zeros", seeds=1, plots=False, log=None)
    >>> [(v["label"], v["status"]) for v in s["schemes"]]
    [('normal', 'ok'), ('zeros', 'stalled')]
    """
    variants = parse_inits(inits)
    seed_list = parse_seeds(seeds, base_cfg.seed)
    if not (0 <= match_tolerance < 1):
        raise ConfigError(f"match_tolerance is a fraction of accuracy in [0, 1), got {match_tolerance!r}")
    configs = {(v.label, s): v.apply(base_cfg).replace(seed=s) for v in variants for s in seed_list}
    data = load_data(base_cfg)  # every trunk trains on it: only the init and the seed differ between them
    model = build_model(base_cfg.model, data.input_shape, data.num_classes, activation=base_cfg.activation,
                        **base_cfg.model_options).to(data.train[0].device)
    _check_variants(base_cfg, variants, model, data)
    pack = resolve_pack(base_cfg.pack, model)
    out_dir = comparison_dir(base_cfg, variants, seed_list)
    if jobs != 1 or executor != "local":  # worker processes / a job array
        runs = _run_grid(configs, jobs, executor, submitit, out_dir / "submitit", base_cfg.progress, log,
                         pack if executor == "local" and not distributed.from_env(base_cfg.device).active else 1)
    elif pack > 1 and not distributed.from_env(base_cfg.device).active:
        runs = _run_lockstep(configs, base_cfg, pack, data, base_cfg.progress, log)
    else:
        runs = _run_serial(configs, log)

    summary = summarize(variants, seed_list, runs, chance=chance_of(data), match_tolerance=match_tolerance,
                        stall_margin=stall_margin)
    summary["base_config"] = base_cfg.to_dict()
    summary["comparison_dir"] = str(out_dir)
    save_summary(out_dir, summary)
    if plots:
        from lottery.reporting.plots import compare_plots

        summary_plots = compare_plots(out_dir, summary)
        if log:
            log(f"plots: {', '.join(p.name for p in summary_plots)}")
    return summary


def _run_serial(configs: dict, log) -> dict:
    """One trunk after another, each reused when it finished already."""
    done = {}
    for i, ((label, seed), cfg) in enumerate(configs.items(), start=1):
        finished = _run_finished(cfg) is not None
        if log:
            log(f"[{i}/{len(configs)}] {label} seed {seed}: "
                + (f"finished run reused ({cfg.run_name()})" if finished else f"running IMP ({cfg.run_name()})"))
        if not finished:
            try:
                done[(label, seed)] = imp.run_imp(cfg)
            except RunLockedError:  # another process trains it: _collect comes back to it after the others
                pass
    return _collect(configs, done, log)


def _run_grid(configs: dict, jobs, executor, submitit, folder: Path, progress: bool, log, pack: int = 1) -> dict:
    """The unfinished trunks through lottery.executors.grid (worker processes or submitit); every trunk's results."""
    check(jobs, executor, submitit)
    pending = {key: cfg for key, cfg in configs.items() if _run_finished(cfg) is None}
    if log:
        log(f"grid: {len(configs) - len(pending)} of {len(configs)} runs finished already, {len(pending)} to run "
            f"({executor}, {jobs} worker{'s' if jobs != 1 else ''}"
            + (f", each in lockstep with up to {pack} networks per fused pass)" if pack > 1 else ")"))
    done = dict(zip(pending, run_grid(list(pending.values()), jobs=jobs, executor=executor, submitit=submitit,
                                      folder=folder, progress=progress, log=log, pack=pack))) if pending else {}
    return _collect(configs, done, log)


def _run_lockstep(configs: dict, base: Config, pack: int, data, progress: bool, log) -> dict:
    """The unfinished trunks level by level together, their runs fused up to ``pack`` per pass (lottery/executors/lockstep.py)."""
    pending = {key: cfg for key, cfg in configs.items() if _run_finished(cfg) is None}
    if log:
        log(f"lockstep: {len(configs) - len(pending)} of {len(configs)} runs finished already, {len(pending)} to run "
            f"level by level, up to {pack} networks per fused pass")
    done = run_lockstep(pending, pack, datasets={data_key(base): data}, progress=progress, log=log) if pending else {}
    return _collect(configs, done, log)


def _collect(configs: dict, done: dict, log) -> dict:
    """Every trunk's results and run directory: run now (``done``), finished before, or — held by another process
    all along (a second grid on this runs directory) — waited for, then reused or resumed."""
    return {key: {"results": done.get(key) or _run_finished(cfg) or imp.run_imp_when_free(cfg, log),
                  "run_dir": str(Path(cfg.out) / cfg.run_name())} for key, cfg in configs.items()}


def chance_of(data) -> float:
    """1 / the labels present in the test set (dataset option classes=[...] keeps a few of num_classes)."""
    return 1.0 / len(data.test[1].unique())


def summarize(variants: Sequence[InitVariant], seeds: Sequence[int], runs: dict, *, chance: float,
              match_tolerance: float = 0.01, stall_margin: float = 0.05) -> dict:
    """The summary dict from ``runs[(label, seed)] = {"results": ..., "run_dir": ...}`` (pure; no files)."""
    schemes = [_summarize_variant(v, seeds, [runs[(v.label, s)] for s in seeds], chance, match_tolerance,
                                  stall_margin) for v in variants]
    return {
        "inits": [v.label for v in variants],
        "seeds": list(seeds),
        "chance_accuracy": chance,
        "match_tolerance": match_tolerance,
        "stall_margin": stall_margin,
        "match_rule": ("a level matches dense when no seed diverged there and mean ticket accuracy >= dense mean - "
                       + ("std of dense accuracy over seeds (ddof=1)" if len(seeds) > 1
                          else f"{match_tolerance} (one seed: fixed tolerance)")
                       + "; smallest_matching_density = deepest level L with levels 1..L all matching"),
        "schemes": schemes,
    }


def _level_entry(results: dict, level: int) -> dict | None:
    return next((e for e in results["levels"] if e["level"] == level), None)


def _summarize_variant(v: InitVariant, seeds, runs: list[dict], chance, match_tolerance, stall_margin) -> dict:
    run_info = []
    for seed, run in zip(seeds, runs):
        levels = run["results"]["levels"]
        bad = [e["level"] for e in levels if e["status"] != "ok"]
        run_info.append({"seed": seed, "run_dir": run["run_dir"], "status": run["results"]["status"],
                         "diverged_at_level": bad[0] if bad else None})
    dense = [_level_entry(r["results"], 0) for r in runs]
    dense_diverged = any(e is None or e["status"] != "ok" for e in dense)
    dense_acc = mean_std(e["test_accuracy"] for e in dense if e and e["status"] == "ok")
    dense_stop = mean_std(e["early_stop_step"] for e in dense if e and e["status"] == "ok")
    stalled = dense_acc["mean"] is not None and dense_acc["mean"] < chance + stall_margin
    for info, e in zip(run_info, dense):
        if info["status"] != "diverged" and e and e["status"] == "ok" and e["test_accuracy"] < chance + stall_margin:
            info["status"] = "stalled"
    status = "diverged" if dense_diverged else "stalled" if stalled else "ok"
    tol = dense_acc["std"] if len(seeds) > 1 and dense_acc["n"] > 1 else match_tolerance

    n_levels = max(len(r["results"]["levels"]) for r in runs)
    all_levels = sorted({e["level"] for r in runs for e in r["results"]["levels"]})
    level_rows = []
    for level in all_levels:
        entries = [_level_entry(r["results"], level) for r in runs]
        present = [e for e in entries if e is not None]
        ok = [e for e in present if e["status"] == "ok"]
        row = {
            "level": level,
            "density": sum(e["density"] for e in present) / len(present),
            "ticket": mean_std(e["test_accuracy"] for e in ok),
            "early_stop_step": mean_std(e["early_stop_step"] for e in ok),
            "diverged": sum(e["status"] != "ok" for e in present),
            "missing": len(entries) - len(present),
        }
        for c in CONTROL_KEYS:
            cs = [e["controls"][c] for e in ok if c in e.get("controls", {})]
            if cs:
                row[c] = mean_std(x["test_accuracy"] for x in cs if x["status"] == "ok")
                row[f"{c}_early_stop_step"] = mean_std(x["early_stop_step"] for x in cs if x["status"] == "ok")
                row[f"{c}_diverged"] = sum(x["status"] != "ok" for x in cs)
                if row["ticket"]["mean"] is not None and row[c]["mean"] is not None:
                    row[f"ticket_minus_{c}"] = row["ticket"]["mean"] - row[c]["mean"]
        if level > 0:
            row["matches_dense"] = bool(
                status == "ok" and row["diverged"] == 0 and row["missing"] == 0 and row["ticket"]["mean"] is not None
                and row["ticket"]["mean"] >= dense_acc["mean"] - tol - 1e-12)
        level_rows.append(row)

    smallest = None
    if status == "ok":
        for row in level_rows[1:]:
            if not row["matches_dense"]:
                break
            smallest = row["density"]
    return {
        "label": v.label, "init": v.scheme, "init_options": dict(v.options), "init_scale": v.scale,
        "status": status,
        "runs": run_info,
        "diverged_runs": [{"seed": r["seed"], "level": r["diverged_at_level"]} for r in run_info
                          if r["diverged_at_level"] is not None],
        "dense": {"test_accuracy": dense_acc, "early_stop_step": dense_stop},
        "match_tolerance_used": tol,
        "smallest_matching_density": smallest,
        "levels_run": n_levels,
        "levels": level_rows,
        "dense_curve": _mean_curve([e.get("curve", []) for e in dense if e and e["status"] == "ok"]),
    }


def _mean_curve(curves: list[list]) -> dict:
    """Val accuracy against step, mean ± std over seeds on the steps every curve reached."""
    curves = [c for c in curves if c]
    if not curves:
        return {"step": [], "mean": [], "std": []}
    n = min(len(c) for c in curves)
    stats = [mean_std(c[i][2] for c in curves) for i in range(n)]
    return {"step": [curves[0][i][0] for i in range(n)], "mean": [s["mean"] for s in stats],
            "std": [s["std"] for s in stats]}


# -- the printed table ----------------------------------------------------------------------------------------
def _ms(stat: dict | None, pct: bool = True) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    k = 100 if pct else 1
    if stat["n"] > 1:
        return f"{k * stat['mean']:.1f}±{k * stat['std']:.1f}" if pct else f"{stat['mean']:.0f}±{stat['std']:.0f}"
    return f"{k * stat['mean']:.1f}" if pct else f"{stat['mean']:.0f}"


def format_summary(summary: dict) -> str:
    """An overview row per init variant, then per variant the ticket vs controls at each density."""
    seeds = summary["seeds"]
    head = (f"{'init':<24} {'status':<9} {'dense acc %':>12} {'early stop':>11} {'smallest match %':>16} "
            f"{'ticket there %':>14}")
    lines = [f"init-scheme comparison: {len(summary['schemes'])} schemes x {len(seeds)} seed(s) {seeds}; "
             f"mean±std over seeds; chance {100 * summary['chance_accuracy']:.1f} %", head, "-" * len(head)]
    for s in summary["schemes"]:
        smallest = s["smallest_matching_density"]
        there = next((r for r in s["levels"] if smallest is not None and r["density"] == smallest), None)
        status = s["status"]
        if status == "ok" and s["diverged_runs"]:
            status = f"ok ({len(s['diverged_runs'])} run diverged)"
        label = s["label"]
        if len(label) > 24:  # a long variant (a checkpoint's path) on its own line, its numbers aligned below
            lines.append(label)
            label = ""
        lines.append(f"{label:<24} {status:<9} {_ms(s['dense']['test_accuracy']):>12} "
                     f"{_ms(s['dense']['early_stop_step'], pct=False):>11} "
                     f"{'-' if smallest is None else f'{100 * smallest:.2f}':>16} "
                     f"{_ms(there['ticket']) if there else '-':>14}")
    lines.append(f"\nmatch rule: {summary['match_rule']}")
    for s in summary["schemes"]:
        lines.append(f"\n== {s['label']} ({s['status']}; dense {_ms(s['dense']['test_accuracy'])} %, "
                     f"tolerance {100 * s['match_tolerance_used']:.2f} points) ==")
        sub = (f"{'level':>5} {'weights %':>9} {'ticket %':>11} {'reinit %':>11} {'random %':>11} "
               f"{'early stop':>11}  match")
        lines += [sub, "-" * len(sub)]
        for r in s["levels"]:
            match = "dense" if r["level"] == 0 else ("yes" if r["matches_dense"] else "no")
            if r["diverged"]:
                match += f" ({r['diverged']} diverged)"
            lines.append(f"{r['level']:>5} {100 * r['density']:9.2f} {_ms(r['ticket']):>11} "
                         f"{_ms(r.get('reinit')):>11} {_ms(r.get('random_mask')):>11} "
                         f"{_ms(r['early_stop_step'], pct=False):>11}  {match}")
    return "\n".join(lines)
