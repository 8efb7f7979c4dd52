"""Mask transfer: is a ticket its mask or its init?

Level N's mask of an IMP run (the source) is trained on fresh inits of other schemes and seeds (the targets), each
under up to three alignments of the target init to the source:

- ``none``: the target init as drawn, the mask as found;
- ``sign``: on the kept weights, the target's magnitudes with the source init's signs (pruned weights are 0);
- ``trained_sign``: the same with the signs of the source ticket's *trained* weights (level N's final.pt);
- ``permute``: the target's hidden units reordered by weight matching (lottery/analysis/matching.py), then the
  mask applied; the permuted network computes the same function as the target init it came from. ``match`` says
  what is matched: ``"trained"`` the target init to the source's dense trained weights (level_00/final.pt),
  ``"init"`` the target init to the source's init, ``"both_trained"`` the target's dense network trained with the
  source's config (once per target, kept in ``transfer_dense/``) to the source's, as unit-alignment studies of
  tickets do; the permutation found is then applied to the target's init. There the error barrier on the line
  between the two dense networks is measured before and after the permutation (``barrier_before``,
  ``barrier_after``): a barrier that stays high says the alignment failed, not the transfer.

Every row trains with the source's config and data order (only the init differs) and, as IMP's control does,
random masks of the same structure and per-layer counts on the same start state: ``control_draws`` of them, the
first drawn by the engine's own ``random_control`` (so the reference row's first control is the source's). The
target of the source's own scheme and seed with ``none`` is the reference row: the source ticket retrained, alone,
on the thread count the source recorded, and compared with the stored ticket (``reproduces_source``: accuracy,
early-stop step and final weights bit for bit). Rows keyed by the parsed init, so one scheme spelled two ways is
one row; the source's own draw under another alignment (``same_draw``) is the source ticket again, shown apart and
never pooled.

``restored`` of a row = (row's accuracy - its random masks' mean) / (the reference's advantage over its random
masks): the share of the ticket's advantage over a random mask that the transferred mask keeps (1: all of it; 0:
none). A group of rows (one init, one alignment, several target seeds) is summarized by ``restored_interval``: the
paired 95 % t interval over target seeds of accuracy minus random-mask accuracy (lottery/stats.py), divided by
the reference's advantage (taken as fixed: its own noise is not in the interval).

Rows accumulate in ``transfer.json`` in the run directory, under that file's own lock; each finished training run
is written at once, so a killed study resumes where it stopped, and a damaged file is set aside and recomputed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Sequence

import torch

from lottery import distributed
from lottery.analysis.matching import linear_chain, permute_units, weight_matching
from lottery.barrier import error_barrier
from lottery.config import Config
from lottery.drivers.compare_inits import check_seeds, check_variants, parse_inits, parse_seeds, read_seeds
from lottery.errors import ConfigError
from lottery.imp_engine import random_control
from lottery.init_variant import InitVariant
from lottery.masks import Mask
from lottery.options import (Options, int_option, known, option, progress_option, read_list, read_text,
                             switch_option)
from lottery.rewind import snapshot
from lottery.session import Session
from lottery.stats import mean_std, paired_interval
from lottery.storage.atomic import finite, save_json
from lottery.storage.rundir import RunDir, check_writable, refuse_symlink, valid_run, valid_values
from lottery.threads import using_threads

RESULTS_FILE = "transfer.json"
ALIGNMENTS = ("none", "sign", "trained_sign", "permute")
DEFAULT_ALIGN = ("none", "sign", "permute")
MATCH_TO = ("trained", "init", "both_trained")
DENSE_DIR = "transfer_dense"  # the targets' trained dense weights (match="both_trained")
BARRIER_POINTS = 11  # points on the line between two dense networks (both ends included)
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
    align: tuple = option(DEFAULT_ALIGN, "none (the mask as found), sign (the source init's signs on the kept "
                          "weights), trained_sign (the trained source ticket's signs), permute (units aligned by "
                          "weight matching)", parse=read_alignments,
                          check=known(ALIGNMENTS, "alignments from"), metavar="A1,A2")
    match: str = option("trained", "what permute aligns the target's units to: the source's dense trained weights "
                        "or its init", parse=read_text, check=known(MATCH_TO))
    controls: bool = switch_option(True, "no random-mask control per row")
    control_draws: int = int_option(1, "random masks per row (the first is IMP's own draw); their mean is the row's "
                                    "baseline", least=1, metavar="D")
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
    """The init variant a config draws, written as ``--inits`` reads it (``normal:std=0.1*2``) and the same for
    every spelling of it (``normal:std=0.050*2.0`` too): what rows are keyed by."""
    def text(v) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    opts = "".join(f":{k}={text(v)}" for k, v in sorted(cfg.init_options.items()))
    return cfg.init + opts + (f"*{cfg.init_scale:g}" if cfg.init_scale != 1.0 else "")


def same_draw(row: dict, source: dict) -> bool:
    """A row that starts from the source's own draw (its scheme and seed): under ``sign`` or a matching that finds
    the identity, the source ticket itself, not a transfer."""
    return not row.get("reference") and (row["init"], row["seed"]) == (source["init"], source["seed"])


def control_name(draw: int) -> str:
    """Key of a row's ``draw``-th random-mask control (the first is IMP's own name)."""
    return "random_mask" if draw == 0 else f"random_mask_{draw}"


def random_accuracy(row: dict) -> float | None:
    """Mean test accuracy of a row's random-mask controls (None when none finished with one)."""
    return mean_std([c.get("test_accuracy") for k, c in row["controls"].items()
                     if k == "random_mask" or k.startswith("random_mask_")])["mean"]


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
    advantage = _advantage(reference)
    own = None if row["test_accuracy"] is None or random_accuracy(row) is None else \
        row["test_accuracy"] - random_accuracy(row)
    return own / advantage if own is not None and advantage else None


def _advantage(reference: dict | None) -> float | None:
    """The reference ticket's accuracy over its random masks' mean, when it is positive."""
    if reference is None or reference["test_accuracy"] is None or random_accuracy(reference) is None:
        return None
    advantage = reference["test_accuracy"] - random_accuracy(reference)
    return advantage if advantage > 0 else None


def restored_interval(group: list[dict], reference: dict | None) -> dict | None:
    """``{"mean", "lo", "hi", "n"}`` of restored over ``group``'s target seeds: the paired t interval of accuracy
    minus random-mask accuracy (lottery/stats.py) over the reference's advantage; None when undefined."""
    advantage = _advantage(reference)
    if advantage is None:
        return None
    diff = paired_interval({r["seed"]: r["test_accuracy"] for r in group},
                           {r["seed"]: random_accuracy(r) for r in group})
    if diff["mean"] is None:
        return None
    return {k: None if diff[k] is None else diff[k] / advantage for k in ("mean", "lo", "hi")} | {"n": diff["n"]}


def pooled_restored(group: list[dict], rows: list[dict], reference: dict | None) -> float | None:
    """(mean accuracy of ``group`` - R(its init)) / (reference's accuracy - R(the reference's init)), where R(init)
    is the mean random-mask accuracy over the ``rows`` (one level's) of that init; None when undefined."""
    def random(init: str) -> float | None:
        return mean_std([random_accuracy(r) for r in rows if r["init"] == init])["mean"]

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
                  seeds: int | str | Sequence[int] = 1, align: Iterable[str] = DEFAULT_ALIGN, *,
                  match: str = "trained", controls: bool = True, control_draws: int = 1, pack: int = 1,
                  progress: bool = False) -> dict:
    """Train level ``level``'s mask of the IMP run ``run_dir`` on fresh inits of each scheme in ``inits``
    (default: the source's own) and seed (``3`` = seeds 0, 1, 2), under each alignment in ``align``, each row with
    ``control_draws`` random-mask controls; returns transfer.json's content (every row so far, all levels).
    ``pack`` > 1 trains up to that many runs in one fused pass (the reference ticket always alone). Figures:
    ``lottery.reporting.plots.transfer.transfer_plots``."""
    distributed.refuse_processes("transfer")
    aligns = _check_aligns(align)
    if match not in MATCH_TO:
        raise ConfigError(f"match must be one of {', '.join(MATCH_TO)}, got {match!r}")
    if isinstance(control_draws, bool) or not isinstance(control_draws, int) or control_draws < 1:
        raise ConfigError(f"control_draws must be an integer >= 1, got {control_draws!r}")
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
        arms = [control_name(d) for d in range(control_draws)] if controls else []
        if any(row_key(r) not in done or any(a not in done[row_key(r)]["controls"] for a in arms) for r in plan):
            check_writable(run.path)  # before the training, not after it
            _Study(session, run, stored, done, mask, layers, source, level).train(plan, arms)
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
    entry = next((e for e in (run.load_results_strict() or {}).get("levels", []) if e["level"] == level), None)
    if entry is None or run.load_mask(level) is None:
        raise ConfigError(f"{run.path} has no finished level {level} yet; run IMP to that level first")
    if entry["status"] != "ok":
        raise ConfigError(f"level {level} of {run.path} diverged: its mask is no ticket; pick a level whose "
                          "status is ok")
    return entry


def _plan(cfg: Config, variants: Sequence[InitVariant], seeds, aligns, match, level) -> list[dict]:
    """The rows asked for, the reference first (always: every row is measured against it). Variants are keyed by
    the init they parse to: two spellings of one scheme are one variant."""
    source = {"init": variant_label(cfg), "seed": cfg.seed}
    rows = [{"level": level, **source, "align": "none", "match": None, "reference": True}]
    by_label: dict[str, InitVariant] = {}
    for v in variants:
        by_label.setdefault(variant_label(v.apply(cfg)), v)  # the first spelling given wins
    for label, v in by_label.items():
        for seed in seeds:
            for a in aligns:
                row = {"level": level, "init": label, "seed": seed, "align": a,
                       "match": match if a == "permute" else None, "reference": False, "variant": v}
                if not (same_draw(row, source) and a == "none"):  # that one is the reference
                    rows.append({**row, "same_draw": same_draw(row, source)})
    return rows


class _Study:
    """One call's training: start states drawn when a run is about to train, each finished run written at once."""

    def __init__(self, session: Session, run: RunDir, stored: dict, done: dict, mask: Mask, layers: list[str],
                 source: dict, level: int):
        self.session, self.run, self.stored, self.done = session, run, stored, done
        self.mask, self.layers, self.source, self.level = mask, layers, source, level
        self._starts: dict[tuple, tuple[dict, dict]] = {}
        self._finals: dict[str, dict] = {}  # the source's trained weights, read once

    def random(self, draw: int) -> Mask:
        """The row's ``draw``-th random mask: the engine's control draw for this level (the same for every row)."""
        cfg = self.session.cfg
        return random_control(self.session.model, self.mask, cfg.seed, self.level, cfg.structure, cfg.structure_options,
                              draw).to(self.session.device)

    def train(self, plan: list[dict], arms: list[str]) -> None:
        ref = plan[0]
        if row_key(ref) not in self.done:  # alone, unfused, on the source's threads: the source ticket bit for bit
            with using_threads(self.source.get("threads")):
                result = self.session.train_from(self.session.init_state, self.mask, "transfer reference",
                                           point="train:transfer:reference")
                threads = torch.get_num_threads()
            self._record(ref, "ticket", result, threads=threads, source_threads=self.source.get("threads"),
                         reproduces_source=self._reproduces(result.summary()))
        randoms = {a: self.random(d) for d, a in enumerate(arms)}
        runs, owners = [], []
        for row in plan:
            have = self.done.get(row_key(row))
            if have is None:
                runs.append((lambda row=row: self._start(row), self.mask, f"transfer {_name(row)}", "train:transfer"))
                owners.append((row, "ticket"))
            for arm in arms:
                if have is None or arm not in have["controls"]:
                    runs.append((lambda row=row: self._start(row), randoms[arm], f"transfer {_name(row)} {arm}",
                                 "train:transfer:random_mask"))
                    owners.append((row, arm))
        last = {row_key(row): i for i, (row, _) in enumerate(owners)}

        def record(i: int, result) -> None:
            row, arm = owners[i]
            self._record(row, arm, result)
            if last[row_key(row)] == i:
                self._starts.pop(row_key(row), None)  # the row's runs are done: its start state goes

        self.session.train_many(runs, record)

    def _start(self, row: dict) -> dict:
        """The row's start state (drawn once, shared by its ticket and control); alignment facts kept for it."""
        key = row_key(row)
        if key not in self._starts:
            self._starts[key] = self._draw(row)
        return self._starts[key][0]

    def _draw(self, row: dict) -> tuple[dict, dict]:
        s, cfg = self.session, self.session.cfg
        if row["reference"] or row["same_draw"]:
            state = s.init_state  # init.pt itself: the source's own draw, bit for bit
        else:
            state = s.fresh_init(row["seed"], row["variant"].apply(cfg))
        if row["align"] in ("sign", "trained_sign"):
            signs = s.init_state if row["align"] == "sign" else self._source_final(self.level)
            state, flipped = sign_aligned(state, signs, self.mask)
            return state, {"signs_changed": flipped}
        if row["align"] == "permute":
            ours = self._target_dense(row, state) if row["match"] == "both_trained" else state
            theirs = self.session.init_state if row["match"] == "init" else self._source_final(0)
            perms, sweeps = weight_matching(theirs, ours, self.layers)
            moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms) / sum(len(p) for p in perms)
            facts = {"units_moved": moved, "sweeps": sweeps}
            if row["match"] == "both_trained" and not row["same_draw"]:
                facts.update(self._barriers(row, theirs, ours, perms))
            return permute_units(state, self.layers, perms), facts
        return state, {}

    def _source_final(self, level: int) -> dict:
        """The source's trained weights of ``level`` (0: the dense network units are matched to)."""
        name = f"level_{level:02d}/final.pt"
        if name not in self._finals:
            final = self.run.load_state(name, like=self.session.init_state)
            if final is None:
                raise ConfigError(f"{self.run.path} has no {name}; use match=init" if level == 0 else
                                  f"{self.run.path} has no {name}: the run directory is damaged")
            self._finals[name] = {k: v.to(self.session.device) for k, v in final.items()}
        return self._finals[name]

    def _barriers(self, row: dict, theirs: dict, ours: dict, perms) -> dict:
        """The error barrier between the source's and the target's dense networks, before and after the target's
        units are permuted (kept per target in transfer.json: the same for every level)."""
        dense = self.stored.setdefault("dense", {}).setdefault(f"{row['init']} s{row['seed']}", {})
        if "barrier_after" not in dense:
            x, y = self.session.data.test
            for name, other in (("before", ours), ("after", permute_units(ours, self.layers, perms))):
                dense[f"barrier_{name}"] = error_barrier(self.session.model, theirs, other, x, y, BARRIER_POINTS,
                                                         batchnorm_x=self.session.data.train[0])["barrier"]
        return {k: dense[k] for k in ("barrier_before", "barrier_after")}

    def _target_dense(self, row: dict, state: dict) -> dict:
        """The target init trained dense with the source's config: read from transfer_dense/, or trained now."""
        if state is self.session.init_state:  # the source's own draw: its dense network is level 0's
            return self._source_final(0)
        name = re.sub(r"[^A-Za-z0-9_.=-]", "_", row["init"]) + f"_s{row['seed']}"
        stored = self.run.load_state(f"{DENSE_DIR}/{name}.pt", like=self.session.init_state)
        if stored is not None:
            return {k: v.to(self.session.device) for k, v in stored.items()}
        session = self.session
        result = session.train_from(state, Mask.ones_like(session.model).to(session.device), f"transfer dense {name}",
                                    point="train:transfer:dense")
        if result.status != "ok":
            raise ConfigError(f"the dense network of {_name(row)} diverged: its weights match nothing; use "
                              "--match trained or init")
        final = snapshot(self.session.model)
        self.run.save_state(f"{DENSE_DIR}/{name}.pt", final)
        self.stored.setdefault("dense", {})[f"{row['init']} s{row['seed']}"] = {
            k: v for k, v in result.summary().items() if k in KEPT}
        return final

    def _record(self, row: dict, arm: str, result, **facts) -> None:
        summary = {k: v for k, v in result.summary().items() if k in KEPT}
        key = row_key(row)
        if arm == "ticket":
            entry = {k: v for k, v in row.items() if k != "variant"}
            entry.update(density=self.mask.density, **summary, controls={}, **(self._starts.get(key, ({}, {}))[1]),
                         **facts)
            self.stored["rows"].append(entry)
            self.done[key] = entry
        else:
            self.done[key]["controls"][arm] = summary
        save_json(refuse_symlink(self.run.path / RESULTS_FILE, self.run.path), self.stored)

    def _reproduces(self, summary: dict) -> bool:  # right after the reference trained: the model holds its weights
        """The retrained reference ticket equals the stored one: accuracy, early stop and weights, bit for bit."""
        final = self.run.load_state(f"level_{self.level:02d}/final.pt", like=self.session.init_state)
        same_weights = final is not None and all(torch.equal(v.cpu(), final[k])
                                                 for k, v in snapshot(self.session.model).items())
        return same_weights and all(summary[k] == self.source.get(k) for k in ("test_accuracy", "early_stop_step"))


def _name(row: dict) -> str:
    return f"{row['init']} s{row['seed']} {row['align']}"
