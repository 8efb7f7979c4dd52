"""Mask transfer: is a ticket its mask or its init?

Level N's mask of an IMP run (the source) is trained on fresh inits of other schemes and seeds (the targets), each
under up to three alignments of the target init to the source:

- ``none``: the target init as drawn, the mask as found;
- ``sign``: on the kept weights, the target's magnitudes with the source init's signs (pruned weights are 0);
- ``permute``: the target's hidden units reordered by weight matching (lottery/analysis/matching.py), then the
  mask applied; the permuted network computes the same function as the target init it came from. ``match`` says
  what is matched: ``"trained"`` the target init to the source's dense trained weights (level_00/final.pt),
  ``"init"`` the target init to the source's init, ``"both_trained"`` the target's dense network trained with the
  source's config (once per target, kept in ``transfer_dense/``) to the source's, as unit-alignment studies of
  tickets do; the permutation found is then applied to the target's init.

Every row trains with the source's config and data order (only the init differs) and, as IMP's control does, a
random mask of the same per-layer counts on the same start state (the seed IMP uses for this level's
random-mask control, so the reference row's control is the source's). The target of the source's own scheme and
seed with ``none`` is the reference row: it is the source ticket retrained, trained alone and compared with the
stored ticket (``reproduces_source``: accuracy, early-stop step and final weights bit for bit).

``restored`` of a row = (row's accuracy - its random mask's) / (reference's accuracy - reference's random mask's):
the share of the ticket's advantage over a random mask that the transferred mask keeps (1: all of it; 0: none).
One random mask is a noisy baseline where random masks nearly collapse, so a group of rows (one init, one
alignment, several seeds) is summarized by ``pooled_restored``: the same ratio of means, each random baseline the
mean over every random-mask control on inits of that scheme at that level.

Rows accumulate in ``transfer.json`` in the run directory, under that file's own lock; each finished training run
is written at once, so a killed study resumes where it stopped, and a damaged file is set aside and recomputed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Sequence

import torch

from lottery import distributed
from lottery.analysis.matching import linear_chain, permute_units, weight_matching
from lottery.config import Config
from lottery.drivers.compare_inits import check_seeds, check_variants, parse_inits, parse_seeds, read_seeds
from lottery.errors import ConfigError
from lottery.init_variant import InitVariant
from lottery.masks import Mask
from lottery.options import (Options, int_option, known, option, progress_option, read_list, read_text,
                             switch_option)
from lottery.pruning import random_mask_like
from lottery.rewind import snapshot
from lottery.session import Session
from lottery.stats import mean_std
from lottery.storage.atomic import finite, save_json
from lottery.storage.rundir import RunDir, check_writable, refuse_symlink, valid_run, valid_values
from lottery.train import derived_seed

RESULTS_FILE = "transfer.json"
ALIGNMENTS = ("none", "sign", "permute")
MATCH_TO = ("trained", "init", "both_trained")
DENSE_DIR = "transfer_dense"  # the targets' trained dense weights (match="both_trained")
KEPT = ("test_accuracy", "test_loss", "early_stop_step", "early_stop_test_accuracy", "status", "steps", "wall_time")


# -- alignments -------------------------------------------------------------------------------------------------
def read_alignments(v) -> tuple:
    """``--align``: 'none' is an alignment here, not an empty list."""
    return ("none",) if isinstance(v, str) and v.strip().lower() == "none" else read_list(str)(v)


@dataclass(frozen=True)
class TransferOptions(Options):
    """transfer: which level's mask goes onto which inits and seeds, aligned how."""

    command: ClassVar[str] = "transfer"
    studies_run: ClassVar[bool] = True
    level: int | None = int_option(None, "level whose mask to transfer (required)", least=1, metavar="N")
    inits: tuple = option((), "target init variants SCHEME[:KEY=VALUE...][*SCALE] (default: the run's own)",
                          parse=read_list(str), check=check_variants, metavar="A,B,...")
    seeds: int | tuple = option(1, "target seeds: a count (3 = seeds 0,1,2) or a list (0,4,7; seed 4 alone: 4,)",
                                parse=read_seeds, check=check_seeds, metavar="N|S1,S2,...")
    align: tuple = option(ALIGNMENTS, "none (the mask as found), sign (the source init's signs on the kept "
                          "weights), permute (units aligned by weight matching)", parse=read_alignments,
                          check=known(ALIGNMENTS, "alignments from"), metavar="A1,A2")
    match: str = option("trained", "what permute aligns the target's units to: the source's dense trained weights "
                        "or its init", parse=read_text, check=known(MATCH_TO))
    controls: bool = switch_option(True, "no random-mask control per row")
    pack: int = int_option(1, "train up to K runs in one fused pass (the same results up to float rounding; the "
                           "reference row always alone)", least=1, metavar="K")
    plot: bool = switch_option(True, "no figures")
    progress: bool = progress_option()

    def check(self) -> None:
        if self.level is None:
            raise ConfigError("name the level whose mask to transfer: --level N (or level = N in [transfer])")


def sign_aligned(state: dict, signs: dict, mask: Mask) -> tuple[dict, float]:
    """``state`` whose kept weights take the sign of ``signs`` (magnitudes stay), and the fraction of kept
    weights whose sign changed. ``copysign``: a source weight of exactly 0 counts as positive."""
    out, flipped = dict(state), 0
    for k, m in mask.items():
        new = torch.where(m, torch.copysign(state[k], signs[k]), state[k])
        flipped += int((torch.signbit(new) != torch.signbit(state[k]))[m].sum())
        out[k] = new
    return out, flipped / max(mask.num_kept, 1)


def variant_label(cfg: Config) -> str:
    """The init variant a config draws, written as ``--inits`` reads it (``normal:std=0.1*2``)."""
    opts = "".join(f":{k}={v}" for k, v in sorted(cfg.init_options.items()))
    return cfg.init + opts + (f"*{cfg.init_scale:g}" if cfg.init_scale != 1.0 else "")


def _same_init(v: InitVariant, cfg: Config) -> bool:
    drawn = v.apply(cfg)
    return (drawn.init, drawn.init_options, drawn.init_scale) == (cfg.init, cfg.init_options, cfg.init_scale)


# -- results file -----------------------------------------------------------------------------------------------
def row_key(row: dict) -> tuple:
    return row["level"], row["init"], row["seed"], row["align"], row.get("match")


def valid_results(stored: object) -> bool:
    """transfer.json: rows of known alignments, each a valid training run with valid controls, numbers finite."""
    rows = stored.get("rows") if isinstance(stored, dict) else None
    return isinstance(rows, list) and all(
        isinstance(r, dict) and type(r.get("level")) is int and r["level"] >= 1 and isinstance(r.get("init"), str)
        and type(r.get("seed")) is int and r["seed"] >= 0 and r.get("align") in ALIGNMENTS
        and r.get("match") in (None, *MATCH_TO) and finite(r.get("density"), 0, 1) and valid_run(r)
        and isinstance(r.get("controls"), dict) and all(valid_run(c) for c in r["controls"].values())
        for r in rows) and valid_values(stored)


def restored(row: dict, reference: dict | None) -> float | None:
    """Share of the reference ticket's advantage over its random mask that ``row`` keeps over its own; None
    when a control is missing, a run diverged, or the reference ticket does not beat its random mask."""
    try:
        own = row["test_accuracy"] - row["controls"]["random_mask"]["test_accuracy"]
        ref = reference["test_accuracy"] - reference["controls"]["random_mask"]["test_accuracy"]
    except (KeyError, TypeError):
        return None
    return own / ref if ref > 0 else None


def pooled_restored(group: list[dict], rows: list[dict], reference: dict | None) -> float | None:
    """(mean accuracy of ``group`` - R(its init)) / (reference's accuracy - R(the reference's init)), where R(init)
    is the mean random-mask accuracy over the ``rows`` (one level's) of that init; None when undefined."""
    def random(init: str) -> float | None:
        return mean_std([r["controls"].get("random_mask", {}).get("test_accuracy") for r in rows
                         if r["init"] == init])["mean"]

    accs = mean_std([r["test_accuracy"] for r in group])["mean"]
    if reference is None or reference["test_accuracy"] is None or accs is None or not group:
        return None
    base, ref_base = random(group[0]["init"]), random(reference["init"])
    if base is None or ref_base is None or reference["test_accuracy"] <= ref_base:
        return None
    return (accs - base) / (reference["test_accuracy"] - ref_base)


def reference_row(stored: dict, level: int) -> dict | None:
    return next((r for r in stored["rows"] if r["level"] == level and r.get("reference")), None)


# -- the driver -------------------------------------------------------------------------------------------------
def transfer_mask(run_dir: str | Path, level: int, inits: str | Iterable[str] | None = None,
                  seeds: int | str | Sequence[int] = 1, align: Iterable[str] = ALIGNMENTS, *,
                  match: str = "trained", controls: bool = True, pack: int = 1, progress: bool = False) -> dict:
    """Train level ``level``'s mask of the IMP run ``run_dir`` on fresh inits of each scheme in ``inits``
    (default: the source's own) and seed (``3`` = seeds 0, 1, 2), under each alignment in ``align``; returns
    transfer.json's content (every row so far, all levels). ``pack`` > 1 trains up to that many runs in one fused
    pass (the reference ticket always alone). Figures: ``lottery.reporting.plots.transfer.transfer_plots``."""
    distributed.refuse_processes("transfer")
    aligns = _check_aligns(align)
    if match not in MATCH_TO:
        raise ConfigError(f"match must be one of {', '.join(MATCH_TO)}, got {match!r}")
    run = RunDir(run_dir)
    cfg = run.config().replace(pack=pack, progress=progress)
    if cfg.rewind != "init":
        raise ConfigError(f"{run.path} rewinds to {cfg.rewind}, but other inits exist only at step 0: transfer "
                          "needs an IMP run with --rewind init")
    source = _source_entry(run, level)
    variants = parse_inits(inits if inits is not None else [variant_label(cfg)])
    seed_list = parse_seeds(seeds, 0)
    with run.for_driver(RESULTS_FILE):
        stored = run.driver_results(RESULTS_FILE, valid_results, lambda: {
            "run": str(run.path), "source": {"init": variant_label(cfg), "seed": cfg.seed}, "rows": []})
        for tmp in refuse_symlink(run.path / DENSE_DIR, run.path).glob(".*.tmp"):  # a killed write's, never read
            tmp.unlink()
        session = Session(cfg, run)
        layers = linear_chain(session.model) if "permute" in aligns else []
        mask = run.load_mask(level, like=session.model).to(session.device)
        plan = _plan(cfg, variants, seed_list, aligns, match, level)
        done = {row_key(r): r for r in stored["rows"]}
        if any(row_key(r) not in done or controls and "random_mask" not in done[row_key(r)]["controls"]
               for r in plan):
            check_writable(run.path)  # before the training, not after it
            _Study(session, run, stored, done, mask, layers, source, level).train(plan, controls)
    return stored


def _check_aligns(align: Iterable[str]) -> tuple[str, ...]:
    aligns = tuple(a.strip() for a in (align.split(",") if isinstance(align, str) else align))
    unknown = [a for a in aligns if a not in ALIGNMENTS]
    if unknown or not aligns:
        raise ConfigError(f"unknown alignment {unknown[0] if unknown else '(none given)'!r}; choose from "
                          f"{', '.join(ALIGNMENTS)}")
    return tuple(dict.fromkeys(aligns))


def _source_entry(run: RunDir, level: int) -> dict:
    if level < 1:
        raise ConfigError("level 0 is the dense network, it has no mask to transfer; pick a level >= 1")
    entry = next((e for e in (run.load_results() or {}).get("levels", []) if e["level"] == level), None)
    if entry is None or run.load_mask(level) is None:
        raise ConfigError(f"{run.path} has no finished level {level} yet; run IMP to that level first")
    if entry["status"] != "ok":
        raise ConfigError(f"level {level} of {run.path} diverged: its mask is no ticket; pick a level whose "
                          "status is ok")
    return entry


def _plan(cfg: Config, variants, seeds, aligns, match, level) -> list[dict]:
    """The rows asked for, the reference first (always: every row is measured against it)."""
    label = variant_label(cfg)
    rows = [{"level": level, "init": label, "seed": cfg.seed, "align": "none", "match": None, "reference": True}]
    for v in variants:
        for seed in seeds:
            for a in aligns:
                ref = _same_init(v, cfg) and seed == cfg.seed and a == "none"
                if not ref:
                    rows.append({"level": level, "init": v.label, "seed": seed, "align": a,
                                 "match": match if a == "permute" else None, "reference": False, "variant": v})
    return rows


class _Study:
    """One call's training: start states drawn when a run is about to train, each finished run written at once."""

    def __init__(self, session: Session, run: RunDir, stored: dict, done: dict, mask: Mask, layers: list[str],
                 source: dict, level: int):
        self.s, self.run, self.stored, self.done = session, run, stored, done
        self.mask, self.layers, self.source, self.level = mask, layers, source, level
        cfg = session.cfg
        self.random = random_mask_like(mask, derived_seed(cfg.seed, "random_mask", level)).to(session.device)
        self._starts: dict[tuple, tuple[dict, dict]] = {}
        self._match_to = None

    def train(self, plan: list[dict], controls: bool) -> None:
        ref = plan[0]
        if row_key(ref) not in self.done:  # alone, unfused: the source ticket retrained bit for bit
            self._record(ref, "ticket", self.s.train_from(self.s.init_state, self.mask, "transfer reference",
                                                             point="train:transfer:reference"))
        runs, owners = [], []
        for row in plan:
            have = self.done.get(row_key(row))
            if have is None:
                runs.append((lambda row=row: self._start(row), self.mask, f"transfer {_name(row)}", "train:transfer"))
                owners.append((row, "ticket"))
            if controls and (have is None or "random_mask" not in have["controls"]):
                runs.append((lambda row=row: self._start(row), self.random, f"transfer {_name(row)} random_mask",
                             "train:transfer:random_mask"))
                owners.append((row, "random_mask"))
        last = {row_key(row): i for i, (row, _) in enumerate(owners)}

        def record(i: int, result) -> None:
            row, arm = owners[i]
            self._record(row, arm, result)
            if last[row_key(row)] == i:
                self._starts.pop(row_key(row), None)  # the row's runs are done: its start state goes

        self.s.train_many(runs, record)

    def _start(self, row: dict) -> dict:
        """The row's start state (drawn once, shared by its ticket and control); alignment facts kept for it."""
        key = row_key(row)
        if key not in self._starts:
            self._starts[key] = self._draw(row)
        return self._starts[key][0]

    def _draw(self, row: dict) -> tuple[dict, dict]:
        s, cfg = self.s, self.s.cfg
        if row["reference"] or (_same_init(row["variant"], cfg) and row["seed"] == cfg.seed):
            state = s.init_state  # init.pt itself: the source's own draw, bit for bit
        else:
            state = s.fresh_init(row["seed"], row["variant"].apply(cfg))
        if row["align"] == "sign":
            state, flipped = sign_aligned(state, s.init_state, self.mask)
            return state, {"signs_changed": flipped}
        if row["align"] == "permute":
            ours = self._target_dense(row, state) if row["match"] == "both_trained" else state
            theirs = self.s.init_state if row["match"] == "init" else self._source_final()
            perms, sweeps = weight_matching(theirs, ours, self.layers)
            moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms) / sum(len(p) for p in perms)
            return permute_units(state, self.layers, perms), {"units_moved": moved, "sweeps": sweeps}
        return state, {}

    def _source_final(self) -> dict:
        if self._match_to is None:
            self._match_to = self.run.load_state("level_00/final.pt", like=self.s.init_state)
            if self._match_to is None:
                raise ConfigError(f"{self.run.path} has no level_00/final.pt to match units to; use match=init")
        return self._match_to

    def _target_dense(self, row: dict, state: dict) -> dict:
        """The target init trained dense with the source's config: read from transfer_dense/, or trained now."""
        if state is self.s.init_state:  # the source's own draw: its dense network is level 0's
            return self._source_final()
        name = re.sub(r"[^A-Za-z0-9_.=-]", "_", row["init"]) + f"_s{row['seed']}"
        stored = self.run.load_state(f"{DENSE_DIR}/{name}.pt", like=self.s.init_state)
        if stored is not None:
            return {k: v.to(self.s.device) for k, v in stored.items()}
        result = self.s.train_from(state, Mask.ones_like(self.s.model).to(self.s.device), f"transfer dense {name}",
                                   point="train:transfer:dense")
        if result.status != "ok":
            raise ConfigError(f"the dense network of {_name(row)} diverged: its weights match nothing; use "
                              "--match trained or init")
        final = snapshot(self.s.model)
        self.run.save_state(f"{DENSE_DIR}/{name}.pt", final)
        self.stored.setdefault("dense", {})[f"{row['init']} s{row['seed']}"] = {
            k: v for k, v in result.summary().items() if k in KEPT}
        return final

    def _record(self, row: dict, arm: str, result) -> None:
        summary = {k: v for k, v in result.summary().items() if k in KEPT}
        key = row_key(row)
        if arm == "ticket":
            entry = {k: v for k, v in row.items() if k != "variant"}
            entry.update(density=self.mask.density, **summary, controls={}, **(self._starts.get(key, ({}, {}))[1]))
            if row["reference"]:
                entry["reproduces_source"] = self._reproduces(summary)
            self.stored["rows"].append(entry)
            self.done[key] = entry
        else:
            self.done[key]["controls"]["random_mask"] = summary
        save_json(refuse_symlink(self.run.path / RESULTS_FILE, self.run.path), self.stored)

    def _reproduces(self, summary: dict) -> bool:
        """The retrained reference ticket equals the stored one: accuracy, early stop and weights, bit for bit."""
        final = self.run.load_state(f"level_{self.level:02d}/final.pt", like=self.s.init_state)
        same_weights = final is not None and all(torch.equal(v.cpu(), final[k]) for k, v in snapshot(self.s.model).items())
        return same_weights and all(summary[k] == self.source.get(k) for k in ("test_accuracy", "early_stop_step"))


def _name(row: dict) -> str:
    return f"{row['init']} s{row['seed']} {row['align']}"


# -- tables -----------------------------------------------------------------------------------------------------
def format_table(stored: dict, level: int | None = None) -> str:
    """Every row (of ``level``, default all), then the mean ± std over target seeds per (init, align)."""
    src = stored["source"]
    lines = []
    for lv in sorted({r["level"] for r in stored["rows"]} if level is None else [level]):
        rows = [r for r in stored["rows"] if r["level"] == lv]
        ref = reference_row(stored, lv)
        density = rows[0]["density"] if rows else math.nan
        lines += [f"level {lv}'s mask ({100 * density:.2f} % of weights) of {src['init']} seed {src['seed']}, "
                  f"trained on other inits (data order of seed {src['seed']}); restored = share of the ticket's "
                  "advantage over a random mask kept", ""]
        head = f"{'init':<22} {'seed':>4} {'align':<26} {'mask %':>8} {'random %':>8} {'restored':>8} {'early stop':>10}"
        lines += [head, "-" * len(head)]
        for r in rows:
            align = r["align"] + (f"/{r['match']}" if r.get("match") else "") + (" (ref)" if r.get("reference") else "")
            lines.append(f"{r['init']:<22} {r['seed']:>4} {align:<26} {_pct(r)} {_pct(r['controls'].get('random_mask'))} "
                         f"{_num(restored(r, ref)):>8} {r.get('early_stop_step') or '-':>10}")
        if ref is not None and "reproduces_source" in ref:
            lines.append(f"reference reproduces the source ticket bit for bit: {'yes' if ref['reproduces_source'] else 'NO'}")
        lines += ["", "mean ± std over target seeds (reference excluded); restored pooled: random baselines averaged "
                  "over every random mask on that scheme", f"{'init':<22} {'align':<22} {'n':>2} "
                  f"{'mask %':>12} {'random %':>12} {'restored':>9}"]
        for (init, align), group in _groups(rows).items():
            acc = mean_std([100 * r["test_accuracy"] for r in group if r["test_accuracy"] is not None])
            rnd = mean_std([100 * r["controls"]["random_mask"]["test_accuracy"] for r in group
                            if r["controls"].get("random_mask", {}).get("test_accuracy") is not None])
            lines.append(f"{init:<22} {align:<22} {len(group):>2} {_ms(acc, '.1f'):>12} {_ms(rnd, '.1f'):>12} "
                         f"{_num(pooled_restored(group, rows, ref)):>9}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _groups(rows: list[dict]) -> dict:
    """Rows but the reference by (init, alignment): inits in the order given, alignments in ALIGNMENTS' order."""
    out: dict = {}
    order = list(dict.fromkeys(r["init"] for r in rows))
    for r in sorted(rows, key=lambda r: (order.index(r["init"]), ALIGNMENTS.index(r["align"]))):
        if not r.get("reference"):
            out.setdefault((r["init"], r["align"] + (f"/{r['match']}" if r.get("match") else "")), []).append(r)
    return out


def _pct(run: dict | None) -> str:
    acc = (run or {}).get("test_accuracy")
    return f"{100 * acc:8.2f}" if acc is not None else f"{'-':>8}"


def _num(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "-"


def _ms(stat: dict | None, fmt: str) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:{fmt}}±{stat['std']:{fmt}}"
