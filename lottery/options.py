"""One option system for the experiment ``Config`` and every subcommand's own options.

A setting is a dataclass field made by ``option``: its default, its help text, how to read a flag's text or a TOML
value (``parse``) and which values it accepts (``check``), so the flag, the TOML key, the default and the
validation are written once. ``add_flags`` turns a dataclass (Config, or a driver's ``Options`` subclass, which
lives in that driver's module) into argparse flags; ``options_from_args`` builds a driver's options from the
``--config`` file's table (``[gradual]``, ``[export]``, ...) overridden by the flags that were given. A bad value
is one ConfigError line naming the flag (or the key and file it came from).
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import tomllib
import types
import typing
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Collection

from lottery.errors import ConfigError, LotteryError


def option(default: Any, help: str, *, section: str | None = None, hashed: bool = True, flag: bool = True,
           **meta: Any) -> Any:
    """A setting: ``help`` is the CLI help; ``section`` Config's section (lottery/config.py); ``hashed=False``
    for settings that cannot change results; ``flag=False`` for a file-only setting. ``meta`` may hold ``parse``
    (read a flag's text or a TOML value), ``check`` (None when fine, else the end of "--flag must be ..."),
    ``metavar`` and ``switch`` (a flag without a value)."""
    kw = {"default_factory": lambda: dict(default)} if isinstance(default, dict) else {"default": default}
    return field(metadata={"help": help, "hashed": hashed, "flag": flag, "section": section, **meta}, **kw)


# -- reading TOML files, lists and key=value options ------------------------------------------------------------
def load_toml(path: str | Path) -> dict:
    """Read a TOML experiment file into a flat dict of Config keys (validated by ``from_dict``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing .toml (see experiments/)")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML ({e}); fix the line it names") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply; write the options flat") from None


def parse_list(value: Any, kind: type = str) -> tuple:
    """'a,b' / ['a','b'] -> ('a','b'); 'none' or '' -> ()."""
    if isinstance(value, str):
        items = [] if value.strip().lower() in ("", "none") else [s.strip() for s in value.split(",")]
    else:
        items = list(value)
    try:
        return tuple(kind(x) for x in items)
    except (TypeError, ValueError):
        raise ConfigError(f"cannot read {value!r} as a list of {kind.__name__}") from None


def parse_options(text: str) -> dict:
    """'{"a": 1}' (JSON) or 'a=1,b=x' -> dict; values parsed as JSON where possible."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"options {text[:60]!r} are not valid JSON ({e.msg})") from None
        except RecursionError:
            raise ConfigError(f"options {text[:20]!r}... are nested too deeply; give flat key=value options") from None
    out = {}
    for part in re.split(r",(?![^\[]*\])", text):  # commas inside [...] belong to the value
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"option {part!r} must look like key=value")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


# -- reading a flag's text or a TOML value (each accepts both, so a value read twice stays the same) ----------
def read_int(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
        return int(v)
    raise ConfigError(f"expected an integer, got {v!r}")


def read_number(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    try:
        if isinstance(v, str):
            return float(v)
    except ValueError:
        pass
    raise ConfigError(f"expected a number, got {v!r}")


def read_text(v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"expected a string, got {v!r}")
    return v


def read_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return v.lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"expected true or false, got {v!r}")


def read_table(v: Any) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"expected a table, got {v!r}")
    return v


def read_list(kind: type) -> Callable[[Any], tuple]:
    """'a,b' or ['a', 'b'] -> a tuple of ``kind``."""
    def read(v: Any) -> tuple:
        if not isinstance(v, (str, list, tuple)):
            raise ConfigError(f"expected a comma-separated list, got {v!r}")
        return parse_list(v, kind)
    return read


# -- what a value must be: None when fine, else the end of "--flag must be ..."; registries raise their own ---
def at_least(n: int) -> Callable:
    return lambda v: None if v >= n else f"an integer >= {n}"


def fractions(v: tuple) -> str | None:
    return None if v and all(0 < d < 1 for d in v) else "fractions of weights kept, each in (0, 1)"


def in_unit(v: float) -> str | None:
    return None if 0 <= v < 1 else "a fraction of accuracy in [0, 1)"


def one_of(*names: str) -> Callable:
    return lambda v: None if v in names else f"one of {', '.join(names)}"


def known(names: Collection[str], phrase: str = "one of") -> Callable:
    """The value (or every value of a list) is one of ``names`` (a registry or tuple: the library's own list of
    names, never a copy; a registry filled later is read when the value is checked)."""
    def check(v: Any) -> str | None:
        return None if all(x in names for x in (v if isinstance(v, tuple) else (v,))) else \
            f"{phrase} {', '.join(names)}"
    return check


# -- field kinds shared by several subcommands: one definition, one help style ---------------------------------
def int_option(default: int | None, help: str, least: int = 0, **meta: Any) -> Any:
    return option(default, help, parse=read_int, check=at_least(least), **meta)


def densities_option(default: tuple, help: str = "fractions of weights kept") -> Any:
    return option(default, help, parse=read_list(float), check=fractions, metavar="D1,D2,...")


def seed_option(of: str) -> Any:
    return int_option(0, f"random seed of {of}")


def switch_option(default: bool, help: str) -> Any:
    """A flag without a value: ``--no-NAME`` turns on-by-default off, ``--NAME`` turns off-by-default on."""
    return option(default, help, parse=read_bool, switch=True)


def progress_option() -> Any:
    return switch_option(True, "no progress bars")


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


def seeds_option(default: Any, help: str) -> Any:
    return option(default, help, parse=read_seeds, check=lambda v: check_seeds(v), metavar="N|S1,S2,...")


def metric_option() -> Any:
    """Which accuracy every table and verdict reads (lottery/stats.py METRICS)."""
    return option("early_stop", "accuracy compared: early_stop (test accuracy at the step of minimum validation "
                  "loss, as Frankle & Carbin report) or final (the weights at the last step)", parse=read_text,
                  check=one_of("early_stop", "final"))


def tolerance_option(default: float = 0.01) -> Any:
    return option(default, "a ticket matches dense when the lower end of the 95 % interval of ticket - dense is "
                  "above -this (0.01 = one point of accuracy)", parse=read_number, check=in_unit, metavar="FRACTION")


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


def experiment_settings(data: dict, classes: Collection[type]) -> dict:
    """A TOML file's settings without the subcommands' own (the tables of ``classes``, and the top-level keys of
    those that read them): what is left is the experiment Config, so one file can serve every subcommand."""
    own = {cls.table() for cls in classes}
    own |= {f.name for cls in classes if cls.top_level for f in fields(cls)}
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


@functools.cache
def _type_hints(cls: type) -> dict:
    """``typing.get_type_hints`` evaluates every annotation of the class each call: once per class, not per flag
    (per flag it would add 0.1 s to building the CLI parser, which every ``main`` call pays)."""
    return typing.get_type_hints(cls)


def _annotation_reader(cls: type, name: str) -> Callable:
    """How to read a flag's text for a field without ``parse`` (Config's), from its annotation."""
    hint = _type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    if set(args) == {int, str}:  # a number or a word (--pack 8, --pack auto)
        return lambda text: int(text) if text.lstrip("-").isdigit() else text
    return {dict: parse_options, tuple: parse_list, bool: read_bool}.get(args[0], args[0])
