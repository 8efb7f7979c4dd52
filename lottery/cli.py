"""The ``lottery`` command. It only parses arguments and calls the library; flags are generated from Config and
from each subcommand's options dataclass (lottery/options.py)."""
from __future__ import annotations

import argparse
import os
import re
import select
import signal
import sys
import typing
from pathlib import Path

from lottery.config import FIELDS, Config, from_dict, load_toml
from lottery.errors import LotteryError
from lottery.options import (OPTIONS, CompareOptions, ExportOptions, GradualOptions, PruneAtInitOptions,
                             StabilityOptions, SupermaskOptions, add_flags, experiment_settings, options_from_args)

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
    settings = experiment_settings(load_toml(args.config)) if args.config else {}
    settings.update({k: v for k, v in vars(args).items() if k in FIELDS and v is not None})
    return from_dict(settings, source=args.config or "config")


def cmd_run(args: argparse.Namespace) -> int:
    from lottery.distributed import is_main_process
    from lottery.drivers.imp import run_imp
    from lottery.reporting.tables import format_table, write_plots

    cfg = config_from_args(args)
    if args.config and "inits" in load_toml(args.config) and args.init is None:
        print(f"lottery: note: {args.config} is a compare-inits file; `run` trains one config with init = "
              f"{cfg.init!r} (pick one of its inits with --init, or run `lottery compare-inits --config`)",
              file=sys.stderr)
    results = run_imp(cfg)
    if not is_main_process():  # under torchrun, rank 0 prints the table and writes the plots
        return 0
    run_path = Path(cfg.out) / cfg.run_name()
    plots = write_plots(run_path, results)
    print(format_table(results))
    print(f"\nrun directory: {run_path}  (plots: {', '.join(p.name for p in plots)})")
    return 0


def _run_results(path: str) -> dict:
    from lottery.storage.rundir import RunDir

    run = RunDir(path)
    run.settings()  # refuses a directory that is not a run (any driver's: run_imp, find_tickets)
    results = run.read_results()
    if results is None:
        raise LotteryError(f"{run.path} has no results.json yet; start the run with `lottery run`")
    return results


def cmd_report(args: argparse.Namespace) -> int:
    from lottery.reporting.tables import format_table, write_plots
    from lottery.storage.rundir import RunDir

    if args.csv:  # the tidy table (one row per run x level x arm) for pandas, R, a spreadsheet
        from lottery.reporting.frames import load_results
        from lottery.storage.rundir import refuse_run_file

        refuse_run_file(args.csv, "--csv")

        load_results([args.run_dir, *args.more_runs]).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if (Path(args.run_dir) / "summary.json").is_file():  # a compare-inits directory
        from lottery.drivers.compare_inits import format_summary
        from lottery.reporting.plots import compare_plots
        from lottery.storage.summary import load_summary

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
    if args.more_runs:  # several seeds of one experiment: mean ± std table and bands
        from lottery.reporting.plots import seed_plots
        from lottery.reporting.tables import check_seed_runs, format_seeds_table

        dirs = [args.run_dir, *args.more_runs]
        check_seed_runs(dirs)
        results_list = [_run_results(d) for d in dirs]
        out = Path(args.out or Path(args.run_dir).parent)
        print(format_seeds_table(results_list))
        plots = _plots_or_note(lambda: seed_plots(out, results_list), out)
        print(f"\nplots: {', '.join(str(p) for p in plots) or 'none written'}")
        return 0
    results = _run_results(args.run_dir)
    run = RunDir(args.run_dir)
    print(format_table(results))
    plots = _plots_or_note(lambda: write_plots(run.path, results), run.path)
    print(f"\nstatus: {results['status']}; plots: {', '.join(str(p) for p in plots) or 'none written'}")
    return 0


def _plots_or_note(draw, where) -> list:
    """The plots, or none with a one-line note when ``where`` cannot be written (an archived, read-only run)."""
    try:
        return draw()
    except PermissionError as e:
        print(f"lottery: note: plots skipped, {e.filename or where} is not writable", file=sys.stderr)
        return []


def cmd_list(args: argparse.Namespace) -> int:
    from lottery.data import DATASETS
    from lottery.inits import INIT_SCHEMES
    from lottery.models import MODELS
    from lottery.pruning import PRUNERS

    for title, registry in (("models", MODELS), ("data sets", DATASETS), ("init schemes", INIT_SCHEMES),
                            ("pruning strategies", PRUNERS)):
        print(f"{title}: {', '.join(sorted(registry))}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lottery.export import export_report, export_run, format_report

    opts = options_from_args(ExportOptions, args)
    path = export_run(args.run_dir, opts.level, opts.out, opts.format)
    print(f"exported level {opts.level} ({opts.format}) to {path}")
    if opts.report:
        checkpoint = Path(args.run_dir) / f"level_{opts.level:02d}" / "final.pt"
        print(format_report(export_report(path, dense_checkpoint=checkpoint, threads=opts.threads)))
    return 0


COMPARE_INITS_HELP = """\
Run the same IMP experiment under each init variant and seed, then print one summary and write summary.json and
plots to <out>/compare-<name>-<hash>/. Every (variant, seed) is an ordinary run directory, so finished runs are
reused and interrupted ones resume.

init variants: SCHEME[:KEY=VALUE[:KEY=VALUE...]][*SCALE]
  normal                   the scheme's defaults (normal: N(0, 0.01^2))
  normal:std=0.001         scheme options (several separated by ':', e.g. normal:std=0.01:bias=1)
  xavier_normal*0.01       multiply the drawn weights by 0.01 (same as xavier_normal:scale=0.01); quote it
  e.g. --inits 'normal,normal:std=0.0001,normal:std=1.0,xavier_normal,kaiming_normal,orthogonal,zeros,lsuv'

A ticket matches dense at a level when no seed diverged and its mean accuracy >= dense mean - one std over seeds
(one seed: --match-tolerance). "smallest match" is the deepest level down to which every level matches. A scheme
whose dense accuracy is below chance + --stall-margin is marked stalled; one whose dense run diverged, diverged.
"""


def cmd_compare_inits(args: argparse.Namespace) -> int:
    from lottery.drivers.compare_inits import compare_inits, format_summary

    opts = options_from_args(CompareOptions, args)
    cfg = config_from_args(args)
    summary = compare_inits(cfg, opts.inits, opts.seeds, match_tolerance=opts.match_tolerance,
                            stall_margin=opts.stall_margin, log=lambda line: print(line, file=sys.stderr),
                            jobs=opts.jobs, executor=opts.executor, submitit=opts.submitit)
    print(format_summary(summary))
    print(f"\ncomparison directory: {summary['comparison_dir']}  (summary.json and plots)")
    return 0


def cmd_prune_at_init(args: argparse.Namespace) -> int:
    from lottery.drivers.prune_at_init import format_table, run_prune_at_init

    opts = options_from_args(PruneAtInitOptions, args)
    cfg = config_from_args(args)
    results = run_prune_at_init(cfg, opts.strategies, opts.densities, opts.ablations)
    print(format_table(results))
    print(f"\nresults: {Path(cfg.out) / cfg.run_name() / 'prune_at_init.json'}")
    return 0


def cmd_gradual(args: argparse.Namespace) -> int:
    from lottery.drivers.gradual import compare_table, preflight, run_gradual
    from lottery.reporting.tables import format_table

    opts = options_from_args(GradualOptions, args)
    cfg = config_from_args(args)
    schedule = (opts.final_densities, opts.prune_every, opts.begin_step, opts.end_step)
    imp = None
    if opts.with_imp:
        preflight(cfg, *schedule)  # before IMP
        from lottery.drivers.imp import run_imp

        imp = run_imp(cfg)
    results = run_gradual(cfg, *schedule)
    print(format_table(results))
    run_path = Path(cfg.out) / cfg.run_name()
    if imp is None and (run_path / "results.json").exists():
        from lottery.storage.rundir import RunDir

        imp = RunDir(run_path).load_results()
    if imp is not None:
        print("\nIMP ticket vs gradual pruning (nearest IMP level):\n" + compare_table(imp, results))
    print(f"\nresults: {run_path / 'gradual.json'}")
    return 0


def cmd_supermask(args: argparse.Namespace) -> int:
    from lottery.drivers.supermask import format_table, supermask_run

    opts = options_from_args(SupermaskOptions, args)
    results = supermask_run(args.run_dir, opts.densities, opts.criteria or None, opts.scope, opts.seed,
                            progress=opts.progress)
    print(format_table(results))
    return 0


def cmd_stability(args: argparse.Namespace) -> int:
    from lottery.drivers.stability import format_result, stability_run

    opts = options_from_args(StabilityOptions, args)
    result = stability_run(args.run_dir, opts.level, opts.k, opts.seeds, opts.points, progress=opts.progress,
                           pack=opts.pack)
    print(format_result(result))
    print(f"plot: {result['plot']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lottery.demo.serve import serve

    try:
        return serve(args.port)
    except KeyboardInterrupt:  # Ctrl-C is how a user stops the server: not an error
        return 0


SUBCOMMANDS = {  # the subcommands whose options are a dataclass of lottery/options.py: handler, help, extras
    "compare-inits": (cmd_compare_inits, "the same IMP experiment per init scheme and seed, one summary",
                      {"description": COMPARE_INITS_HELP, "formatter_class": argparse.RawDescriptionHelpFormatter}),
    "export": (cmd_export, "write a level's ticket as a small sparse safetensors file, with a report", {}),
    "prune-at-init": (cmd_prune_at_init, "prune at init (snip, grasp, synflow, ...) with shuffle/reinit ablations", {}),
    "gradual": (cmd_gradual, "gradual magnitude pruning during training (Zhu & Gupta), vs IMP", {}),
    "supermask": (cmd_supermask, "accuracy of the masked untrained network (Zhou et al.) for a run", {}),
    "stability": (cmd_stability, "instability (linear mode connectivity) of a level from step k", {}),
}


def _options_subcommand(p: argparse.ArgumentParser, cls: type, func) -> None:
    """A subcommand's flags from its options dataclass, and ``--config`` with its table. A run-directory
    subcommand reads only that table (the experiment is the run's); a training one also the experiment Config."""
    if cls.studies_run:
        p.add_argument("run_dir", help="run directory (<out>/<name>-<hash>); the experiment settings are its own")
        p.add_argument("--config", metavar="FILE.toml", help=f"TOML file whose [{cls.table()}] table holds these "
                       "options; flags override it")
        add_flags(p, cls)
    else:
        add_flags(p, cls)
        add_config_flags(p, cls.table())
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lottery", description="Lottery-ticket experiments: iterative magnitude pruning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("run", help="run (or resume) one IMP experiment; no flags = MNIST-1D MLP default")
    add_config_flags(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="print the table and write the plots of a run (or compare-inits) directory")
    p.add_argument("run_dir")
    p.add_argument("more_runs", nargs="*", metavar="RUN_DIR",
                   help="more runs of the same experiment (other seeds): a mean ± std table and plots")
    p.add_argument("--out", help="where the several-runs plots go (default: the first run's parent directory)")
    p.add_argument("--csv", metavar="FILE", help="also write one row per run x level x arm to FILE (needs pandas)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("list", help="registered models, data sets, init schemes and pruning strategies")
    p.set_defaults(func=cmd_list)
    for command, (func, help, extra) in SUBCOMMANDS.items():
        _options_subcommand(sub.add_parser(command, help=help, **extra), OPTIONS[command], func)
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
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
