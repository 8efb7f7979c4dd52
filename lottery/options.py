"""Each subcommand's own options (beyond the experiment Config): one frozen dataclass per subcommand.

A field declares its default, its help text, how to read a flag's text or a TOML value (``parse``) and which
values it accepts (``check``), so the flag, the key in the subcommand's TOML table (``[gradual]``, ``[export]``,
...), the default and the validation are written once. ``add_flags`` turns a dataclass (these, and Config) into
argparse flags; ``options_from_args`` builds the options from the ``--config`` file's table overridden by the
flags that were given. A bad value is one ConfigError line naming the flag (or the key and file it came from).
"""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

from lottery.config import _opt, load_toml, parse_list, parse_options
from lottery.errors import ConfigError, LotteryError
from lottery.executors.grid import EXECUTORS


# -- reading a flag's text or a TOML value (each accepts both, so a value read twice stays the same) ----------
def _integer(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
        return int(v)
    raise ConfigError(f"expected an integer, got {v!r}")


def _number(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    try:
        if isinstance(v, str):
            return float(v)
    except ValueError:
        pass
    raise ConfigError(f"expected a number, got {v!r}")


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"expected a string, got {v!r}")
    return v


def _boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return v.lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"expected true or false, got {v!r}")


def _table(v: Any) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"expected a table, got {v!r}")
    return v


def _list(kind: type) -> Callable[[Any], tuple]:
    """'a,b' or ['a', 'b'] -> a tuple of ``kind``."""
    def read(v: Any) -> tuple:
        if not isinstance(v, (str, list, tuple)):
            raise ConfigError(f"expected a comma-separated list, got {v!r}")
        return parse_list(v, kind)
    return read


def _count_or_seeds(v: Any) -> int | tuple:
    """compare-inits' ``--seeds``: a count (3) or the seeds themselves (0,4,7)."""
    return _integer(v) if isinstance(v, int) or (isinstance(v, str) and "," not in v) else _list(int)(v)


def _alignments(v: Any) -> tuple:
    """transfer's ``--align``: 'none' is an alignment there, not an empty list."""
    return ("none",) if isinstance(v, str) and v.strip().lower() == "none" else _list(str)(v)


def _criteria(v: Any) -> tuple:
    return () if v == "all" else _list(str)(v)


# -- what a value must be: None when fine, else the end of "--flag must be ..."; registries raise their own ---
def _at_least(n: int) -> Callable:
    return lambda v: None if v >= n else f"an integer >= {n}"


def _fractions(v: tuple) -> str | None:
    return None if v and all(0 < d < 1 for d in v) else "fractions of weights kept, each in (0, 1)"


def _in_unit(v: float) -> str | None:
    return None if 0 <= v < 1 else "a fraction of accuracy in [0, 1)"


def _one_of(*names: str) -> Callable:
    return lambda v: None if v in names else f"one of {', '.join(names)}"


def _known(module: str, names: str, phrase: str = "one of") -> Callable:
    """The value (or every value of a list) is one of ``module.names``, imported when checked so that building
    the parser loads no models: the library's own list of names, never a copy."""
    def check(v: Any) -> str | None:
        import importlib

        known = getattr(importlib.import_module(module), names)
        return None if all(x in known for x in (v if isinstance(v, tuple) else (v,))) else \
            f"{phrase} {', '.join(known)}"
    return check


def _two_seeds(v: tuple) -> str | None:
    return None if len(v) == 2 and v[0] != v[1] and min(v) >= 0 else "two different data-order seeds >= 0 (e.g. 1,2)"


def _seeds(v: int | tuple) -> None:
    from lottery.drivers.compare_inits import parse_seeds

    parse_seeds(v)


def _variants(v: tuple) -> None:
    from lottery.drivers.compare_inits import parse_inits

    if v:
        parse_inits(v)


# -- field kinds shared by several subcommands: one definition, one help style ---------------------------------
def _int(default: int | None, help: str, least: int = 0, **meta: Any) -> Any:
    return _opt(default, help, parse=_integer, check=_at_least(least), **meta)


def _densities(default: tuple, help: str = "fractions of weights kept") -> Any:
    return _opt(default, help, parse=_list(float), check=_fractions, metavar="D1,D2,...")


def _seed(of: str) -> Any:
    return _int(0, f"random seed of {of}")


def _switch(default: bool, help: str) -> Any:
    """A flag without a value: ``--no-NAME`` turns on-by-default off, ``--NAME`` turns off-by-default on."""
    return _opt(default, help, parse=_boolean, switch=True)


def _progress() -> Any:
    return _switch(True, "no progress bars")


class Options:
    """Base of the per-subcommand dataclasses: reading and checking every field (and the class's ``check``)
    happens on construction, so an options object is always valid, however it was made."""

    command: ClassVar[str]
    top_level: ClassVar[bool] = False  # also read the keys from the file's top level (older compare-inits files)
    studies_run: ClassVar[bool] = False  # takes a RUN_DIR, whose settings are the experiment (no Config flags)

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _read(f, getattr(self, f.name), flag_name(f)))
        self.check()

    def check(self) -> None:
        """Constraints between fields; none by default."""

    @classmethod
    def table(cls) -> str:
        """The subcommand's table in a TOML file: ``prune-at-init`` -> ``[prune_at_init]``."""
        return cls.command.replace("-", "_")


@dataclass(frozen=True)
class CompareOptions(Options):
    """compare-inits: the variants and seeds, when a ticket matches dense, and where the runs train."""

    command: ClassVar[str] = "compare-inits"
    top_level: ClassVar[bool] = True
    inits: tuple = _opt((), "comma-separated init variants SCHEME[:KEY=VALUE...][*SCALE] (see above); required",
                        parse=_list(str), check=_variants, metavar="A,B,...")
    seeds: int | tuple = _opt(1, "number of seeds (from --seed up) or a list of seeds", parse=_count_or_seeds,
                              check=_seeds, metavar="N|S1,S2,...")
    match_tolerance: float = _opt(0.01, "with one seed: a ticket matches dense within this accuracy (0.01 = 1 "
                                  "point)", parse=_number, check=_in_unit, metavar="FRACTION")
    stall_margin: float = _opt(0.05, "a scheme is 'stalled' when its dense accuracy is below chance + this",
                               parse=_number, check=_in_unit, metavar="FRACTION")
    jobs: int = _int(1, "run the unfinished (scheme, seed) runs in N local worker processes, each with cores/N "
                     "threads (1: one after another)", least=1, metavar="N")
    executor: str = _opt("local", "local worker processes or submitit (a job array, e.g. SLURM; settings in the "
                         "[submitit] table; pip install 'lottery[grid]')", parse=_text,
                         check=_one_of(*EXECUTORS))
    submitit: dict | None = _opt(None, "submitit settings (a TOML table only)", parse=_table, flag=False)

    def check(self) -> None:
        if not self.inits:
            raise ConfigError("name the init schemes to compare: --inits normal,xavier_normal,... "
                              "or inits = [...] in the --config file")


@dataclass(frozen=True)
class PruneAtInitOptions(Options):
    """prune-at-init: which pruning-at-init strategies, at which densities, with which ablations."""

    command: ClassVar[str] = "prune-at-init"
    strategies: tuple = _opt(("snip", "grasp", "synflow", "magnitude_init", "random"),
                             "pruning strategies (see `lottery list`)", parse=_list(str), metavar="S1,S2,...",
                             check=_known("lottery.pruning", "PRUNERS", "pruning strategies from"))
    densities: tuple = _densities((0.1, 0.02))
    ablations: tuple = _opt(("shuffled", "reinit"), "ablations of each pruned network: shuffled,reinit or none",
                            parse=_list(str), check=_known("lottery.drivers.prune_at_init", "ABLATIONS", "ablations from"),
                            metavar="A1,A2")


@dataclass(frozen=True)
class GradualOptions(Options):
    """gradual: the cubic pruning schedule (Zhu & Gupta) and whether to run IMP beside it."""

    command: ClassVar[str] = "gradual"
    final_densities: tuple = _densities((0.2, 0.05), "final fractions of weights kept")
    prune_every: int = _int(100, "steps between pruning steps", least=1, metavar="STEPS")
    begin_step: int | None = _int(None, "first pruning step (default 10% of the budget)", metavar="STEP")
    end_step: int | None = _int(None, "last pruning step (default ~60% of the budget)", metavar="STEP")
    with_imp: bool = _switch(False, "also run (or resume) IMP with the same config and compare")

    def check(self) -> None:
        from lottery.drivers.gradual import check_options

        check_options(self.final_densities, self.prune_every, self.begin_step, self.end_step)


@dataclass(frozen=True)
class SupermaskOptions(Options):
    """supermask: masks of the untrained network by each criterion (Zhou et al.)."""

    command: ClassVar[str] = "supermask"
    studies_run: ClassVar[bool] = True
    densities: tuple = _densities((0.5, 0.2, 0.1, 0.05))
    criteria: tuple = _opt((), "comma-separated criteria, or all (the default)", parse=_criteria,
                           check=_known("lottery.drivers.supermask", "CRITERIA", "criteria from"),
                           metavar="C1,C2,...")
    scope: str = _opt("layer", "rank weights within each layer (layer) or across all layers (global)", parse=_text,
                      check=_known("lottery.pruning", "SCOPES"))
    seed: int = _seed("the random criterion")
    progress: bool = _progress()


@dataclass(frozen=True)
class StabilityOptions(Options):
    """stability: where the two copies split and how finely the path between them is measured."""

    command: ClassVar[str] = "stability"
    studies_run: ClassVar[bool] = True
    level: int = _int(0, "level whose mask and rewind state to use", metavar="N")
    k: int = _int(0, "train this many steps before the two copies split", metavar="K")
    seeds: tuple = _opt((1, 2), "the two copies' data-order seeds", parse=_list(int), check=_two_seeds,
                        metavar="S1,S2")
    points: int = _int(21, "points on the line, both ends included", least=2, metavar="N")
    pack: int = _int(1, "2 trains the two copies in one fused pass (the same results up to float rounding); "
                     "1 = one after another, bit for bit", least=1, metavar="K")
    progress: bool = _progress()


@dataclass(frozen=True)
class ExportOptions(Options):
    """export: which level, in which layout, to which file, with or without the size/speed report."""

    command: ClassVar[str] = "export"
    studies_run: ClassVar[bool] = True
    level: int | None = _int(None, "which finished level to export (required)", metavar="N")
    format: str = _opt("csr", "weight layout: dense, csr or bitmask", parse=_text,
                       check=_known("lottery.export", "LAYOUTS"))
    out: str | None = _opt(None, "output file (default RUN_DIR/level_NN/ticket-FORMAT.safetensors)", parse=_text,
                           metavar="FILE")
    report: bool = _switch(True, "skip the size/FLOPs/latency report")
    threads: int = _int(1, "CPU threads for the latency measurement", least=1, metavar="N")
    progress: bool = _switch(True, "accepted like everywhere else; export draws no progress bars")

    def check(self) -> None:
        if self.level is None:
            raise ConfigError("name the level to export: --level N (or level = N in the [export] table)")


@dataclass(frozen=True)
class TransferOptions(Options):
    """transfer: which level's mask goes onto which inits and seeds, aligned how."""

    command: ClassVar[str] = "transfer"
    studies_run: ClassVar[bool] = True
    level: int | None = _int(None, "level whose mask to transfer (required)", least=1, metavar="N")
    inits: tuple = _opt((), "target init variants SCHEME[:KEY=VALUE...][*SCALE] (default: the run's own)",
                        parse=_list(str), check=_variants, metavar="A,B,...")
    seeds: int | tuple = _opt(1, "target seeds: a count (3 = seeds 0,1,2) or a list", parse=_count_or_seeds,
                              check=_seeds, metavar="N|S1,S2,...")
    align: tuple = _opt(("none", "sign", "permute"), "none (the mask as found), sign (the source init's signs on "
                        "the kept weights), permute (units aligned by weight matching)", parse=_alignments,
                        check=_known("lottery.drivers.transfer", "ALIGNMENTS", "alignments from"), metavar="A1,A2")
    match: str = _opt("trained", "what permute aligns the target's units to: the source's dense trained weights "
                      "or its init", parse=_text, check=_known("lottery.drivers.transfer", "MATCH_TO"))
    controls: bool = _switch(True, "no random-mask control per row")
    pack: int = _int(1, "train up to K runs in one fused pass (the same results up to float rounding; the "
                     "reference row always alone)", least=1, metavar="K")
    plot: bool = _switch(True, "no figures")
    progress: bool = _progress()

    def check(self) -> None:
        if self.level is None:
            raise ConfigError("name the level whose mask to transfer: --level N (or level = N in [transfer])")


OPTIONS = {cls.command: cls for cls in (CompareOptions, PruneAtInitOptions, GradualOptions, SupermaskOptions,
                                        StabilityOptions, ExportOptions, TransferOptions)}


# -- generic: flags from fields, options from a file and flags --------------------------------------------------
def flag_name(f: Field) -> str:
    """``prune_every`` -> ``--prune-every``; a switch on by default is turned off: ``--no-report``."""
    off = f.metadata.get("switch") and _default(f) is True
    return f"--{'no-' if off else ''}{f.name.replace('_', '-')}"


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the dataclass ``cls`` (not those with ``flag=False``). Every flag defaults to None,
    so that the flags given can be told from those not given (which leave the file's value, or the default)."""
    for f in fields(cls):
        if not f.metadata["flag"]:
            continue
        help = (f.metadata["help"] + _default_note(f)).replace("%", "%%")
        if f.metadata.get("switch"):
            parser.add_argument(flag_name(f), dest=f.name, action="store_const", const=not _default(f),
                                default=None, help=help)
        else:
            parser.add_argument(flag_name(f), dest=f.name, type=_user_text(f.metadata.get("parse") or
                                _annotation_reader(cls, f.name)), default=None, help=help,
                                metavar=f.metadata.get("metavar", f.name.upper()))


def options_from_args(cls: type, args: argparse.Namespace) -> Options:
    """``cls``'s options: the ``--config`` file's table (if any) overridden by the flags that were given."""
    settings = file_options(cls, args.config) if getattr(args, "config", None) else {}
    settings.update({f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None})
    return cls(**settings)


def file_options(cls: type, path: str | Path) -> dict:
    """The subcommand's table of a TOML file, each value read and checked (an error names the key and file)."""
    data, name = load_toml(path), cls.table()
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"'{name}' in {path} must be a table: [{name}] with the {cls.command} options under it")
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in table if k not in known]
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' in [{name}] of {path}; known keys: {', '.join(known)}")
    values = dict(table)
    if cls.top_level:
        twice = [k for k in known if k in data and k in table]
        if twice:
            raise ConfigError(f"'{twice[0]}' is set both at the top level and in [{name}] of {path}; set it once")
        values.update({k: data[k] for k in known if k in data})
    where = {k: f"'{k}' in [{name}] of {path}" if k in table else f"'{k}' in {path}" for k in values}
    return {k: _read(known[k], v, where[k]) for k, v in values.items()}


def experiment_settings(data: dict) -> dict:
    """A TOML file's settings without the subcommands' own (their tables, and compare-inits' top-level keys):
    what is left is the experiment Config, so one file can serve every subcommand."""
    own = {cls.table() for cls in OPTIONS.values()}
    own |= {f.name for cls in OPTIONS.values() if cls.top_level for f in fields(cls)}
    return {k: v for k, v in data.items() if k not in own}


def _read(f: Field, value: Any, label: str) -> Any:
    if value is None:
        return None
    try:
        value = f.metadata["parse"](value)
    except ConfigError as e:
        raise ConfigError(f"{label}: {e}") from None
    problem = f.metadata["check"](value) if "check" in f.metadata else None
    if problem:
        raise ConfigError(f"{label} must be {problem}, got {_show(value)}")
    return value


def _default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(map(_show, v)) or "none"
    return format(v, "g") if isinstance(v, float) else str(v)


def _default_note(f: Field) -> str:
    v = _default(f)
    return "" if f.metadata.get("switch") or v in (None, {}, ()) else f" (default {_show(v)})"


def _user_text(parse: Callable) -> Callable:
    """``parse`` whose error argparse shows as its own message (not a repr of a possibly huge value)."""
    def read(text: str) -> Any:
        try:
            return parse(text)
        except LotteryError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    read.__name__ = getattr(parse, "__name__", "value")  # argparse's "invalid int value" names the type
    return read


def _annotation_reader(cls: type, name: str) -> Callable:
    """How to read a flag's text for a field without ``parse`` (Config's), from its annotation."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    if set(args) == {int, str}:  # a number or a word (--pack 8, --pack auto)
        return lambda text: int(text) if text.lstrip("-").isdigit() else text
    return {dict: parse_options, tuple: parse_list, bool: _boolean}.get(args[0], args[0])
