"""The ``lottery`` command. It only parses arguments and calls the library; flags are generated from Config."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import types
import typing
from pathlib import Path

from lottery.config import FIELDS, Config, from_dict, load_toml, parse_list, parse_options
from lottery.errors import LotteryError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2), like every other user error here."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"lottery: error: {message} (see `{self.prog} --help`)\n")


def _flag_type(name: str):
    """How to read a flag's text, from the field's annotation."""
    if name == "milestones":
        return lambda s: parse_list(s, int)
    hint = typing.get_type_hints(Config)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    base = args[0]
    if set(args) == {int, str}:  # a number or a word (--pack 8, --pack auto)
        return lambda text: int(text) if text.lstrip("-").isdigit() else text
    if base is dict:
        return _user_text(parse_options)
    if base is tuple:
        return parse_list
    if base is bool:
        return _boolean
    return base


def _user_text(parse):
    """``parse`` whose ConfigError argparse shows as its own message (not a repr of a possibly huge value)."""
    def read(text: str):
        try:
            return parse(text)
        except LotteryError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return read


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.toml", help="experiment file (see experiments/); flags override it")
    for name, f in FIELDS.items():
        if f.metadata["flag"]:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_flag_type(name), default=None,
                                help=f.metadata["help"].replace("%", "%%"), metavar=name.upper())
    add_progress_flag(parser, default=None)  # None: the --config file (or the default) decides


def add_progress_flag(parser: argparse.ArgumentParser, default: bool | None = True) -> None:
    """``--no-progress``, the same flag on every subcommand that draws progress bars."""
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=default,
                        help="no progress bars")


def config_from_args(args: argparse.Namespace, drop: tuple = ()):
    """TOML file (if any) overridden by the flags that were given; validated."""
    settings = load_toml(args.config) if args.config else {}
    for k in drop:
        settings.pop(k, None)
    settings.update({k: v for k, v in vars(args).items() if k in FIELDS and v is not None})
    return from_dict(settings, source=args.config or "config")


def cmd_run(args: argparse.Namespace) -> int:
    from lottery.distributed import is_main_process
    from lottery.imp import run_imp
    from lottery.report import format_table, write_plots

    cfg = config_from_args(args)
    results = run_imp(cfg)
    if not is_main_process():  # under torchrun, rank 0 prints the table and writes the plots
        return 0
    run_path = Path(cfg.out) / cfg.run_name()
    plots = write_plots(run_path, results)
    print(format_table(results))
    print(f"\nrun directory: {run_path}  (plots: {', '.join(p.name for p in plots)})")
    return 0


def _run_results(path: str) -> dict:
    from lottery.runs import RunDir

    run = RunDir(path)
    run.settings()  # refuses a directory that is not a run (any driver's: run_imp, find_tickets)
    results = run.load_results()
    if results is None:
        raise LotteryError(f"{run.path} has no results.json yet; start the run with `lottery run`")
    return results


def cmd_report(args: argparse.Namespace) -> int:
    from lottery.report import format_table, write_plots
    from lottery.runs import RunDir

    if args.csv:  # the tidy table (one row per run x level x arm) for pandas, R, a spreadsheet
        from lottery.frames import load_results

        load_results([args.run_dir, *args.more_runs]).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if (Path(args.run_dir) / "summary.json").is_file():  # a compare-inits directory
        from lottery.compare import format_summary
        from lottery.io import load_json
        from lottery.plots import compare_plots

        path = Path(args.run_dir) / "summary.json"
        summary = load_json(path)
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
        from lottery.plots import seed_plots
        from lottery.report import check_seed_runs, format_seeds_table

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

    if args.threads < 1:
        raise LotteryError(f"--threads must be >= 1, got {args.threads}")
    path = export_run(args.run_dir, args.level, args.out, args.format)
    print(f"exported level {args.level} ({args.format}) to {path}")
    if args.report:
        checkpoint = Path(args.run_dir) / f"level_{args.level:02d}" / "final.pt"
        print(format_report(export_report(path, dense_checkpoint=checkpoint, threads=args.threads)))
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
    from lottery.compare import COMPARE_KEYS, compare_inits, format_summary

    # the comparison's own settings may also sit in the TOML file (inits = [...], seeds = 3); flags win
    in_file = load_toml(args.config) if args.config else {}
    given = {k: getattr(args, k, None) if getattr(args, k, None) is not None else in_file.get(k) for k in COMPARE_KEYS}
    if not given["inits"]:
        raise LotteryError("name the init schemes to compare: --inits normal,xavier_normal,... "
                           "or inits = [...] in the --config file")
    cfg = config_from_args(args, drop=COMPARE_KEYS)
    summary = compare_inits(cfg, given["inits"], given["seeds"] or 1,
                            match_tolerance=given["match_tolerance"] if given["match_tolerance"] is not None else 0.01,
                            stall_margin=given["stall_margin"] if given["stall_margin"] is not None else 0.05,
                            log=lambda line: print(line, file=sys.stderr),
                            jobs=given["jobs"] if given["jobs"] is not None else 1,
                            executor=given["executor"] or "local", submitit=given["submitit"])
    print(format_summary(summary))
    print(f"\ncomparison directory: {summary['comparison_dir']}  (summary.json and plots)")
    return 0


def _floats(text: str) -> tuple:
    return parse_list(text, float)


def cmd_prune_at_init(args: argparse.Namespace) -> int:
    from lottery.prune_at_init import format_table, run_prune_at_init

    cfg = config_from_args(args)
    results = run_prune_at_init(cfg, parse_list(args.strategies), _floats(args.densities), parse_list(args.ablations))
    print(format_table(results))
    print(f"\nresults: {Path(cfg.out) / cfg.run_name() / 'prune_at_init.json'}")
    return 0


def cmd_gradual(args: argparse.Namespace) -> int:
    from lottery.gradual import compare_table, preflight, run_gradual
    from lottery.report import format_table

    cfg = config_from_args(args)
    imp = None
    if args.with_imp:
        preflight(cfg, _floats(args.final_densities), args.prune_every, args.begin_step, args.end_step)  # before IMP
        from lottery.imp import run_imp

        imp = run_imp(cfg)
    results = run_gradual(cfg, _floats(args.final_densities), args.prune_every, args.begin_step, args.end_step)
    print(format_table(results))
    run_path = Path(cfg.out) / cfg.run_name()
    if imp is None and (run_path / "results.json").exists():
        from lottery.runs import RunDir

        imp = RunDir(run_path).load_results()
    if imp is not None:
        print("\nIMP ticket vs gradual pruning (nearest IMP level):\n" + compare_table(imp, results))
    print(f"\nresults: {run_path / 'gradual.json'}")
    return 0


def cmd_supermask(args: argparse.Namespace) -> int:
    from lottery.analysis.supermask import format_table, supermask_run

    criteria = parse_list(args.criteria) if args.criteria != "all" else None
    results = supermask_run(args.run_dir, _floats(args.densities), criteria, args.scope, args.seed,
                            progress=args.progress)
    print(format_table(results))
    return 0


def cmd_stability(args: argparse.Namespace) -> int:
    from lottery.analysis.stability import format_result, stability_run

    seeds = parse_list(args.seeds, int)
    if len(seeds) != 2:
        raise LotteryError(f"--seeds takes two data-order seeds, e.g. 1,2; got {args.seeds!r}")
    result = stability_run(args.run_dir, args.level, args.k, seeds, args.points, progress=args.progress)
    print(format_result(result))
    print(f"plot: {result['plot']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lottery.demo.serve import serve

    try:
        return serve(args.port)
    except KeyboardInterrupt:  # Ctrl-C is how a user stops the server: not an error
        return 0


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
    p = sub.add_parser("compare-inits", help="the same IMP experiment per init scheme and seed, one summary",
                       description=COMPARE_INITS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inits", metavar="A,B,...",
                   help="comma-separated init variants SCHEME[:KEY=VALUE...][*SCALE] (see above); "
                        "or inits = [...] in the --config file")
    p.add_argument("--seeds", metavar="N|S1,S2,...",
                   help="number of seeds (from --seed up) or a list of seeds; default 1 (config key: seeds)")
    p.add_argument("--match-tolerance", type=float, metavar="FRACTION",
                   help="with one seed: a ticket matches dense within this accuracy (default 0.01 = 1 point)")
    p.add_argument("--stall-margin", type=float, metavar="FRACTION",
                   help="a scheme is 'stalled' when its dense accuracy is below chance + this (default 0.05)")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="run the grid's unfinished (scheme, seed) runs in N local worker processes, each with "
                        "cores/N threads (default 1: one after another)")
    p.add_argument("--executor", choices=("local", "submitit"),
                   help="local worker processes (default) or a submitit job array (SLURM; settings in the config "
                        "file's [submitit] table; pip install 'lottery[grid]')")
    add_config_flags(p)
    p.set_defaults(func=cmd_compare_inits)
    p = sub.add_parser("list", help="registered models, data sets, init schemes and pruning strategies")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("export", help="write a level's ticket as a small sparse safetensors file, with a report")
    p.add_argument("run_dir")
    p.add_argument("--level", type=int, required=True, help="which finished level to export")
    p.add_argument("--format", choices=("dense", "csr", "bitmask"), default="csr", help="weight layout (default csr)")
    p.add_argument("--out", default=None, help="output file (default RUN_DIR/level_NN/ticket-FORMAT.safetensors)")
    p.add_argument("--no-report", dest="report", action="store_false", help="skip the size/FLOPs/latency report")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the latency measurement (default 1)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("prune-at-init", help="prune at init (snip, grasp, synflow, ...) with shuffle/reinit ablations")
    p.add_argument("--strategies", default="snip,grasp,synflow,magnitude_init,random", help="pruning strategies")
    p.add_argument("--densities", default="0.1,0.02", help="fractions of weights kept, e.g. 0.1,0.02")
    p.add_argument("--ablations", default="shuffled,reinit", help="shuffled,reinit or none")
    add_config_flags(p)
    p.set_defaults(func=cmd_prune_at_init)
    p = sub.add_parser("gradual", help="gradual magnitude pruning during training (Zhu & Gupta), vs IMP")
    p.add_argument("--final-densities", default="0.2,0.05", help="final fractions of weights kept, e.g. 0.2,0.05")
    p.add_argument("--prune-every", type=int, default=100, help="steps between pruning steps (default 100)")
    p.add_argument("--begin-step", type=int, default=None, help="first pruning step (default 10%% of the budget)")
    p.add_argument("--end-step", type=int, default=None, help="last pruning step (default ~60%% of the budget)")
    p.add_argument("--with-imp", action="store_true", help="also run (or resume) IMP with the same config")
    add_config_flags(p)
    p.set_defaults(func=cmd_gradual)
    p = sub.add_parser("supermask", help="accuracy of the masked untrained network (Zhou et al.) for a run")
    p.add_argument("run_dir")
    p.add_argument("--densities", default="0.5,0.2,0.1,0.05", help="fractions of weights kept")
    p.add_argument("--criteria", default="all", help="comma-separated criteria, or all")
    p.add_argument("--scope", default="layer", choices=("layer", "global"), help="rank per layer (default) or all")
    p.add_argument("--seed", type=int, default=0, help="seed of the random criteria")
    add_progress_flag(p)
    p.set_defaults(func=cmd_supermask)
    p = sub.add_parser("stability", help="instability (linear mode connectivity) of a level from step k")
    p.add_argument("run_dir")
    p.add_argument("--level", type=int, default=0, help="level whose mask and rewind state to use (default 0)")
    p.add_argument("--k", type=int, default=0, help="train this many steps before the two copies split (default 0)")
    p.add_argument("--seeds", default="1,2", help="the two copies' data-order seeds (default 1,2)")
    p.add_argument("--points", type=int, default=21, help="points on the line, both ends included (default 21)")
    add_progress_flag(p)
    p.set_defaults(func=cmd_stability)
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
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to say to a closed reader
        return 0
    except (LotteryError, OSError) as e:  # OSError: an --out that is a file, a directory without permission, ...
        print(f"lottery: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
        print(f"lottery: {how}; finished levels are saved — run the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
