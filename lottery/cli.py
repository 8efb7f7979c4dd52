"""The ``lottery`` command. It only parses arguments and dispatches: every subcommand (its options, entry point and
report) is an entry of the driver registry, registered in its own module (lottery/drivers/registry.py; the
built-in ones are imported by lottery/commands.py), and the experiment flags come from Config's fields."""
from __future__ import annotations

import argparse
import os
import re
import select
import signal
import sys
import threading
import typing

from lottery import commands  # noqa: F401  (registers the built-in subcommands)
from lottery.config import FIELDS, Config, from_dict
from lottery.distributed import leave_together
from lottery.drivers.registry import DRIVERS, Driver, formatter
from lottery.errors import LotteryError, Terminated, on_sigterm, terminate
from lottery.options import Options, add_flags, experiment_settings, load_toml, options_from_args
from lottery.threads import fit_threads

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2), like every other user error here."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"lottery: error: {message} (see `{self.prog} --help`)\n")


def add_config_flags(parser: argparse.ArgumentParser, table: str | None = None) -> None:
    """``--config`` and one flag per Config field: the experiment settings of the training subcommands."""
    own = f"; its [{table}] table holds this subcommand's options" if table else ""
    parser.add_argument("--config", metavar="FILE.toml", help=f"experiment file (see experiments/){own}; "
                        "flags override it")
    add_flags(parser, Config)


def config_from_args(args: argparse.Namespace) -> Config:
    """TOML file (if any; not the subcommands' own tables and keys) overridden by the flags given; validated."""
    data = load_toml(args.config) if args.config else {}
    settings = experiment_settings(data, [d.options for d in DRIVERS.values() if _generated(d)])
    settings.update({k: v for k, v in vars(args).items() if k in FIELDS and v is not None})
    cfg = from_dict(settings, source=args.config or "config")
    command = getattr(args, "command", "run")
    if "inits" in data and command != "compare-inits" and args.init is None:
        print(f"lottery: note: {args.config} is a compare-inits file; `{command}` trains one config with init = "
              f"{cfg.init!r} (pick one of its inits with --init, or run `lottery compare-inits --config`)",
              file=sys.stderr)
    return cfg


def _generated(driver: Driver) -> bool:
    """Its flags and ``--config`` table come from an ``Options`` dataclass."""
    return isinstance(driver.options, type) and issubclass(driver.options, Options)


def run_driver(driver: Driver, args: argparse.Namespace) -> int:
    """A subcommand: its options (file table, then flags; or its hand-written arguments), its target (the Config,
    RUN_DIR for a study of a finished run, or None), its entry point, then its report."""
    if driver.hand_written:
        target, opts = None, driver.options.from_args(args)
    else:
        opts = options_from_args(driver.options, args) if driver.options is not None else None
        target = args.run_dir if driver.study else config_from_args(args)
    results = driver.run(target, opts)
    text = driver.report(results, target, opts) if driver.report is not None else ""
    if text:
        print(text)
    return 0


def _driver_subcommand(p: argparse.ArgumentParser, driver: Driver) -> None:
    """A driver's flags from its options dataclass, and ``--config`` with its table. A study of a finished run
    reads only that table (the experiment is the run's); a training driver also the experiment Config. A command
    whose arguments are written by hand adds its own."""
    cls = driver.options
    if driver.hand_written:
        cls.add_arguments(p)
    elif driver.study:
        p.add_argument("run_dir", help="run directory (<out>/<name>-<hash>); the experiment settings are its own")
        p.add_argument("--config", metavar="FILE.toml", help=f"TOML file whose [{cls.table()}] table holds these "
                       "options; flags override it")
        add_flags(p, cls)
    else:
        if cls is not None:
            add_flags(p, cls)
        add_config_flags(p, cls.table() if cls is not None else None)
    p.set_defaults(func=lambda args: run_driver(driver, args))


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per registered driver, in the order they registered."""
    parser = _Parser(prog="lottery", description="Lottery-ticket experiments: iterative magnitude pruning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, driver in DRIVERS.items():
        _driver_subcommand(sub.add_parser(name, help=driver.help, description=driver.description,
                                          formatter_class=formatter(driver)), driver)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fit_threads()  # never more threads than free cores (lottery/threads.py): a busy machine must not collapse a run
    if threading_is_main():
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe (`lottery list | head -1`) shows here, not at interpreter exit
        if code == 0:
            leave_together()
        return code
    except BrokenPipeError as e:
        if not stdout_closed():  # a pipe to another process (a grid's worker or manager) broke: an error
            print(f"lottery: error: {e.strerror or e} (a process this command talked to ended)", file=sys.stderr)
            return 1
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to say to a closed reader
        return 0
    except (LotteryError, OSError) as e:  # OSError: an --out that is a file, a directory without permission, ...
        print(f"lottery: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as e:
        too_big = out_of_memory(e)
        if too_big is None:
            raise
        print(f"lottery: error: out of memory ({too_big}); choose a smaller model (--model-options), batch or "
              "data set", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        terminate(False)
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"lottery: {how}; finished levels are saved — run the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


def out_of_memory(e: BaseException) -> str | None:
    """What an allocation that failed asked for (torch's CPU or CUDA allocator, or Python's), else None."""
    text = str(e)
    if not isinstance(e, MemoryError) and "can't allocate memory" not in text and "out of memory" not in text:
        return None
    asked = re.search(r"allocate (\d+) bytes", text)
    return f"{int(asked.group(1)) / 2**30:.1f} GiB asked for" if asked else (text.splitlines() or ["no detail"])[0][:120]


def stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader is gone (`lottery list | head -1`): poll reports an error on it."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor (a test's capture)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def threading_is_main() -> bool:
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
