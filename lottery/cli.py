"""The ``lottery`` command. It only parses arguments and calls the library: the experiment flags come from
Config's fields, each driver subcommand (its flags, help, run and report) from its entry in the driver registry
(lottery/drivers/registry.py)."""
from __future__ import annotations

import argparse
import os
import re
import select
import signal
import sys
import threading
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lottery import export
from lottery.config import FIELDS, Config, from_dict
from lottery.data import DATASETS
from lottery.demo import serve
from lottery.drivers.compare_inits import format_summary
from lottery.drivers.registry import DRIVERS, Driver, formatter
from lottery.errors import ConfigError, LotteryError
from lottery.inits import INIT_SCHEMES
from lottery.models import MODELS
from lottery.options import (Options, add_flags, experiment_settings, int_option, known, load_toml, option,
                             options_from_args, read_text, switch_option)
from lottery.pruning import PRUNERS, STRUCTURES
from lottery.reporting.frames import load_results
from lottery.reporting import tables
from lottery.drivers.seeds import seeds_dir_in
from lottery.reporting.tables import check_seed_runs, format_table, format_verdicts, seed_comparison
from lottery.stats import METRICS, TOLERANCE
from lottery.storage.atomic import save_json
from lottery.storage.rundir import RunDir, refuse_run_file
from lottery.storage.summary import load_summary
from lottery.threads import fit_threads

EXIT_USAGE = 2


@dataclass(frozen=True)
class ExportOptions(Options):
    """export: which level, in which layout, to which file, with or without the size/speed report."""

    command: ClassVar[str] = "export"
    studies_run: ClassVar[bool] = True
    level: int | None = int_option(None, "which finished level to export (required)", metavar="N")
    format: str = option("csr", "weight layout: dense, csr, bitmask, or physical (the smaller dense network a neuron "
                         "ticket is)", parse=read_text,
                         check=known(export.LAYOUTS))
    out: str | None = option(None, "output file (default RUN_DIR/level_NN/ticket-FORMAT.safetensors)", parse=read_text,
                             metavar="FILE")
    report: bool = switch_option(True, "skip the size/FLOPs/latency report")
    threads: int = int_option(1, "CPU threads for the latency measurement", least=1, metavar="N")
    progress: bool = switch_option(True, "accepted like everywhere else; export draws no progress bars")

    def check(self) -> None:
        if self.level is None:
            raise ConfigError("name the level to export: --level N (or level = N in the [export] table)")


_OWN_TABLES = [d.options for d in DRIVERS.values() if d.options is not None] + [ExportOptions]


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
    settings = experiment_settings(data, _OWN_TABLES)
    settings.update({k: v for k, v in vars(args).items() if k in FIELDS and v is not None})
    cfg = from_dict(settings, source=args.config or "config")
    command = getattr(args, "command", "run")
    if "inits" in data and command != "compare-inits" and args.init is None:
        print(f"lottery: note: {args.config} is a compare-inits file; `{command}` trains one config with init = "
              f"{cfg.init!r} (pick one of its inits with --init, or run `lottery compare-inits --config`)",
              file=sys.stderr)
    return cfg


def run_driver(driver: Driver, args: argparse.Namespace) -> int:
    """A driver subcommand: its options (file table, then flags), its target (the Config, or RUN_DIR for a study
    of a finished run), its run, then its report."""
    opts = options_from_args(driver.options, args) if driver.options is not None else None
    target = args.run_dir if driver.study else config_from_args(args)
    text = driver.report(driver.run(target, opts), target, opts)
    if text:
        print(text)
    return 0


def _run_results(path: str) -> dict:
    run = RunDir(path)
    run.settings()  # refuses a directory that is not a run (any driver's: run_imp, find_tickets)
    results = run.read_results()
    if results is None:
        raise LotteryError(f"{run.path} has no results.json yet; start the run with `lottery run`")
    return results


def cmd_report(args: argparse.Namespace) -> int:
    if args.csv:  # the tidy table (one row per run x level x arm) for pandas, R, a spreadsheet
        refuse_run_file(args.csv, "--csv")
        load_results([args.run_dir, *args.more_runs]).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if (Path(args.run_dir) / "summary.json").is_file():  # a compare-inits directory
        from lottery.reporting.plots import compare_plots  # matplotlib: loaded only to plot

        path = Path(args.run_dir) / "summary.json"
        summary = load_summary(args.run_dir)
        try:
            table = format_summary(summary)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            raise LotteryError(f"{path} is not a compare-inits summary; run the comparison again to rewrite it"
                               ) from None
        print(table)
        plots = _plots_or_note(lambda: compare_plots(args.run_dir, summary), args.run_dir)
        print(f"\nplots: {', '.join(str(p) for p in plots) or 'none written'}")
        return 0
    if args.more_runs:  # several seeds of one experiment: the verdict table, verdicts.json and interval bands
        from lottery.reporting.plots import seed_plots  # matplotlib: loaded only to plot

        dirs = [args.run_dir, *args.more_runs]
        check_seed_runs(dirs)
        results_list = [_run_results(d) for d in dirs]
        comparison = seed_comparison(results_list, args.metric, args.tolerance)
        first = Path(args.run_dir).resolve()
        out = Path(args.out) if args.out else seeds_dir_in(first.parent, first.name.rpartition("-")[0] or first.name,
                                                            [Path(d).resolve().name for d in dirs])
        print(format_verdicts(comparison))
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / "verdicts.json", {**comparison, "run_dirs": [str(Path(d).resolve()) for d in dirs]})
        plots = _plots_or_note(lambda: seed_plots(out, results_list, args.metric), out)
        print(f"\nverdicts: {out / 'verdicts.json'}; plots: {', '.join(str(p) for p in plots) or 'none written'}")
        return 0
    results = _run_results(args.run_dir)
    run = RunDir(args.run_dir)
    print(format_table(results, args.metric, args.tolerance))
    plots = _plots_or_note(lambda: tables.write_plots(run.path, results, args.metric), run.path)
    print(f"\nstatus: {results['status']}; plots: {', '.join(str(p) for p in plots) or 'none written'}")
    return 0


def _tolerance(text: str) -> float:
    """--tolerance: a fraction of accuracy in [0, 1) (argparse shows the message as one line, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction of accuracy in [0, 1), got {value:g}")
    return value


def _plots_or_note(draw, where) -> list:
    """The plots, or none with a one-line note when ``where`` cannot be written (an archived, read-only run)."""
    try:
        return draw()
    except PermissionError as e:
        print(f"lottery: note: plots skipped, {e.filename or where} is not writable", file=sys.stderr)
        return []


def cmd_list(args: argparse.Namespace) -> int:
    for title, registry in (("models", MODELS), ("data sets", DATASETS), ("init schemes", INIT_SCHEMES),
                            ("pruning strategies", PRUNERS), ("structures (N:M, e.g. 2:4)", STRUCTURES),
                            ("drivers (subcommands)", DRIVERS)):
        print(f"{title}: {', '.join(sorted(registry))}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    opts = options_from_args(ExportOptions, args)
    path = export.export_run(args.run_dir, opts.level, opts.out, opts.format)
    print(f"exported level {opts.level} ({opts.format}) to {path}")
    if opts.report:
        checkpoint = Path(args.run_dir) / f"level_{opts.level:02d}" / "final.pt"
        print(export.format_report(export.export_report(path, dense_checkpoint=checkpoint, threads=opts.threads)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        return serve.serve(args.port)  # its optional dependencies (lottery[demo]) load here
    except KeyboardInterrupt:  # Ctrl-C is how a user stops the server: not an error
        return 0


def _driver_subcommand(p: argparse.ArgumentParser, driver: Driver) -> None:
    """A driver's flags from its options dataclass, and ``--config`` with its table. A study of a finished run
    reads only that table (the experiment is the run's); a training driver also the experiment Config."""
    cls = driver.options
    if driver.study:
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
    parser = _Parser(prog="lottery", description="Lottery-ticket experiments: iterative magnitude pruning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, driver in DRIVERS.items():
        _driver_subcommand(sub.add_parser(name, help=driver.help, description=driver.description,
                                          formatter_class=formatter(driver)), driver)
    p = sub.add_parser("report", help="print the table and write the plots of a run (or compare-inits) directory")
    p.add_argument("run_dir")
    p.add_argument("more_runs", nargs="*", metavar="RUN_DIR",
                   help="more runs of the same experiment (other seeds): the verdict table with 95 %% intervals, "
                   "verdicts.json and plots")
    p.add_argument("--out", help="where the several-runs verdicts.json and plots go (default: "
                   "<first run's parent>/seeds-<name>-<hash>)")
    p.add_argument("--metric", default="early_stop", choices=tuple(METRICS),
                   help="accuracy compared: early_stop (at the step of minimum validation loss; default) or final")
    p.add_argument("--tolerance", default=TOLERANCE, type=_tolerance, metavar="FRACTION",
                   help="a ticket matches dense when the 95 %% interval of ticket - dense stays above -this "
                   "(default 0.01, one point)")
    p.add_argument("--csv", metavar="FILE", help="also write one row per run x level x arm to FILE (needs pandas)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("list", help="registered models, data sets, init schemes, pruning strategies and drivers")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("export", help="write a level's ticket as a small sparse safetensors file, with a report")
    p.add_argument("run_dir", help="run directory (<out>/<name>-<hash>); the experiment settings are its own")
    p.add_argument("--config", metavar="FILE.toml", help=f"TOML file whose [{ExportOptions.table()}] table holds "
                   "these options; flags override it")
    add_flags(p, ExportOptions)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("demo", help="the interactive init/ticket playground as a local web page (needs lottery[demo])")
    p.add_argument("--port", type=int, default=8866, help="port on localhost to serve it on (default 8866)")
    p.set_defaults(func=cmd_demo)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, `kill`): unwinds like Ctrl-C, so the run ends the same resumable way."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fit_threads()  # never more threads than free cores (lottery/threads.py): a busy machine must not collapse a run
    if threading_is_main():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe (`lottery list | head -1`) shows here, not at interpreter exit
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
        how = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
        print(f"lottery: {how}; finished levels are saved — run the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130


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
