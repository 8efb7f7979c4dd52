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

The summary (``summary.json`` in ``<out>/compare-<name>-<hash>/``) holds per variant: the dense accuracy (mean with
its 95 % interval over seeds) and early-stop step, the ticket / reinit / random-mask accuracy at each density, the
paired differences ticket − dense and ticket − best control, each level's verdict, and the smallest density whose
ticket still matches dense — all from lottery/stats.py (``compare_levels``), the rule every table uses:

- accuracies are ``metric``'s: ``early_stop`` (default; the test accuracy at the step of minimum validation loss)
  or ``final`` (the last step's weights);
- a level *beats* dense when the lower bound of the paired 95 % t interval of ticket − dense is above 0, *matches*
  when it is above −``match_tolerance`` (default 0.01, one point), is *below* when the upper bound is under
  −``match_tolerance``, and is *inconclusive* otherwise; one seed gives no interval and no verdict (``--seeds 3``);
- ``smallest_matching_density`` is the density of the deepest level L such that every level 1..L beats or matches
  dense; ``None`` when level 1 already does not, or the variant diverged or stalled.
- A run is *diverged* when any of its levels diverged (non-finite loss or weights); IMP stops pruning there.
  A variant is ``diverged`` when its dense network diverged in any seed.
- A variant is *stalled* when its dense mean test accuracy is below chance (1 / classes) plus ``stall_margin``
  (default 0.05): it never learned (zero init, far too small a scale), so its "tickets" mean nothing.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

from lottery.config import Config
from lottery.drivers.registry import register_driver
from lottery.errors import ConfigError
from lottery.executors.grid import EXECUTORS
from lottery.executors.trunks import run_trunks
from lottery.fused import resolve_pack
from lottery.init_variant import InitVariant, parse_init_variant  # noqa: F401  (public here too)
from lottery.inits import init_weights
from lottery.options import check_seeds, parse_seeds, read_seeds  # noqa: F401  (public here too)
from lottery.options import metric_option, tolerance_option
from lottery.options import (Options, in_unit, int_option, one_of, option, read_int, read_list, read_number,
                             read_table, read_text)
from lottery.session import build_network, load_data
from lottery.reporting.tables import format_verdicts
from lottery.stats import METRIC_NAMES, TOLERANCE, arm_value, compare_levels, interval, mean_std, rule_text
from lottery.storage.summary import save_summary


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
    match_tolerance: float = tolerance_option()
    metric: str = metric_option()
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
                  match_tolerance: float = TOLERANCE, stall_margin: float = 0.05, metric: str = "early_stop",
                  plots: bool = True,
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
    model = build_network(base_cfg, data.input_shape, data.num_classes, data.train[0].device)
    _check_variants(base_cfg, variants, model, data)
    pack = resolve_pack(base_cfg.pack, model)
    out_dir = comparison_dir(base_cfg, variants, seed_list)
    runs = run_trunks(configs, base_cfg, data, pack, jobs=jobs, executor=executor, submitit=submitit,
                      folder=out_dir / "submitit", log=log)

    summary = summarize(variants, seed_list, runs, chance=chance_of(data), match_tolerance=match_tolerance,
                        stall_margin=stall_margin, metric=metric)
    summary["base_config"] = base_cfg.to_dict()
    summary["comparison_dir"] = str(out_dir)
    save_summary(out_dir, summary)
    if plots:
        from lottery.reporting.plots import compare_plots

        summary_plots = compare_plots(out_dir, summary)
        if log:
            log(f"plots: {', '.join(p.name for p in summary_plots)}")
    return summary


def chance_of(data) -> float:
    """1 / the labels present in the test set (dataset option classes=[...] keeps a few of num_classes)."""
    return 1.0 / len(data.test[1].unique())


def summarize(variants: Sequence[InitVariant], seeds: Sequence[int], runs: dict, *, chance: float,
              match_tolerance: float = TOLERANCE, stall_margin: float = 0.05, metric: str = "early_stop") -> dict:
    """The summary dict from ``runs[(label, seed)] = {"results": ..., "run_dir": ...}`` (pure; no files). Each
    variant's levels carry the verdict of lottery/stats.py (``compare_levels``) on ``metric``."""
    schemes = [_summarize_variant(v, seeds, [runs[(v.label, s)] for s in seeds], chance, match_tolerance,
                                  stall_margin, metric) for v in variants]
    return {
        "inits": [v.label for v in variants],
        "seeds": list(seeds),
        "chance_accuracy": chance,
        "metric": metric,
        "match_tolerance": match_tolerance,
        "stall_margin": stall_margin,
        "match_rule": rule_text(match_tolerance),
        "schemes": schemes,
    }


def _summarize_variant(v: InitVariant, seeds, runs: list[dict], chance, tolerance, stall_margin, metric) -> dict:
    run_info = []
    for seed, run in zip(seeds, runs):
        levels = run["results"]["levels"]
        bad = [e["level"] for e in levels if e["status"] != "ok"]
        run_info.append({"seed": seed, "run_dir": run["run_dir"], "status": run["results"]["status"],
                         "diverged_at_level": bad[0] if bad else None})
    verdicts = compare_levels({seed: run["results"] for seed, run in zip(seeds, runs)}, metric, tolerance)
    dense = [next((e for e in r["results"]["levels"] if e["level"] == 0), None) for r in runs]
    dense_diverged = any(e is None or e["status"] != "ok" for e in dense)
    dense_acc = interval(arm_value(e, "ticket", metric) for e in dense)
    dense_stop = mean_std(e["early_stop_step"] for e in dense if e and e["status"] == "ok")
    stalled = dense_acc["mean"] is not None and dense_acc["mean"] < chance + stall_margin
    for info, e in zip(run_info, dense):
        value = arm_value(e, "ticket", metric)
        if info["status"] != "diverged" and value is not None and value < chance + stall_margin:
            info["status"] = "stalled"
    status = "diverged" if dense_diverged else "stalled" if stalled else "ok"
    level_rows = []
    for row in verdicts["levels"]:
        row = {**row, "missing": len(seeds) - len(row["seeds"])}
        if row["level"] > 0:
            row["matches_dense"] = status == "ok" and row["verdict"] in ("beats", "matches")
        level_rows.append(row)
    return {
        "label": v.label, "init": v.scheme, "init_options": dict(v.options), "init_scale": v.scale,
        "status": status,
        "runs": run_info,
        "diverged_runs": [{"seed": r["seed"], "level": r["diverged_at_level"]} for r in run_info
                          if r["diverged_at_level"] is not None],
        "dense": {"test_accuracy": dense_acc, "early_stop_step": dense_stop},
        "dense_still_learning": verdicts["dense_still_learning"],
        "match_tolerance_used": tolerance,
        "smallest_matching_density": verdicts["smallest_matching_density"] if status == "ok" else None,
        "levels_run": max(len(r["results"]["levels"]) for r in runs),
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
        spread = stat["hi"] - stat["mean"] if stat.get("hi") is not None else stat["std"]
        return f"{k * stat['mean']:.1f}±{k * spread:.1f}" if pct else f"{stat['mean']:.0f}±{stat['std']:.0f}"
    return f"{k * stat['mean']:.1f}" if pct else f"{stat['mean']:.0f}"


def format_summary(summary: dict) -> str:
    """An overview row per init variant, then per variant the ticket vs controls at each density."""
    seeds = summary["seeds"]
    head = (f"{'init':<24} {'status':<9} {'dense acc %':>12} {'early stop':>11} {'smallest match %':>16} "
            f"{'ticket there %':>14}")
    lines = [f"init-scheme comparison: {len(summary['schemes'])} schemes x {len(seeds)} seed(s) {seeds}; "
             f"mean with 95 % interval over seeds; chance {100 * summary['chance_accuracy']:.1f} %", head,
             "-" * len(head)]
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
    for s in summary["schemes"]:
        lines.append(f"\n== {s['label']} ({s['status']}; dense {_ms(s['dense']['test_accuracy'])} %) ==")
        lines.append(format_verdicts({
            "seeds": seeds, "metric": summary.get("metric", "final"), "tolerance": s["match_tolerance_used"],
            "metric_name": METRIC_NAMES[summary.get("metric", "final")], "levels": s["levels"],
            "smallest_matching_density": s["smallest_matching_density"],
            "dense_still_learning": s.get("dense_still_learning")}))
    return "\n".join(lines)


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


def report_comparison(summary: dict, *_) -> str:
    return f"{format_summary(summary)}\n\ncomparison directory: {summary['comparison_dir']}  (summary.json and plots)"


@register_driver("compare-inits", "the same IMP experiment per init scheme and seed, one summary",
                 options=CompareOptions, report=report_comparison, description=COMPARE_INITS_HELP)
def compare_command(cfg: Config, opts: CompareOptions) -> dict:
    """``lottery compare-inits``: the comparison, its progress lines on stderr."""
    return compare_inits(cfg, opts.inits, opts.seeds, match_tolerance=opts.match_tolerance,
                         stall_margin=opts.stall_margin, metric=opts.metric,
                         log=lambda line: print(line, file=sys.stderr), jobs=opts.jobs, executor=opts.executor,
                         submitit=opts.submitit)
