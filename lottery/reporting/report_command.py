"""``lottery report``: the table and plots again, from a finished or half-finished run, a compare-inits directory,
or several runs of one experiment (seeds: the verdict table, verdicts.json and interval bands)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lottery.drivers.compare_inits import format_summary
from lottery.drivers.registry import register_driver
from lottery.drivers.seeds import seeds_dir_in
from lottery.errors import LotteryError
from lottery.reporting import tables
from lottery.reporting.frames import load_results
from lottery.reporting.tables import check_seed_runs, format_table, format_verdicts, seed_comparison
from lottery.stats import METRICS, TOLERANCE
from lottery.storage.atomic import save_json
from lottery.storage.rundir import RunDir, refuse_run_file
from lottery.storage.summary import load_summary


def _tolerance(text: str) -> float:
    """--tolerance: a fraction of accuracy in [0, 1) (argparse shows the message as one line, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction of accuracy in [0, 1), got {value:g}")
    return value


@dataclass(frozen=True)
class ReportOptions:
    """report: the run directories (one run, a compare-inits directory, or the seeds of one experiment) and how the
    verdict reads them. Its arguments are written by hand: it reads no --config file."""

    command: ClassVar[str] = "report"
    studies_run: ClassVar[bool] = True
    run_dir: str
    more_runs: tuple = ()
    out: str | None = None
    metric: str = "early_stop"
    tolerance: float = TOLERANCE
    csv: str | None = None

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ReportOptions":
        return cls(args.run_dir, tuple(args.more_runs), args.out, args.metric, args.tolerance, args.csv)


@register_driver("report", "print the table and write the plots of a run (or compare-inits) directory",
                 options=ReportOptions)
def report_command(_, opts: ReportOptions) -> None:
    """Prints as it goes: the CSV first, then one of a comparison's, several seeds' or one run's table and plots."""
    if opts.csv:  # the tidy table (one row per run x level x arm) for pandas, R, a spreadsheet
        refuse_run_file(opts.csv, "--csv")
        load_results([opts.run_dir, *opts.more_runs]).to_csv(opts.csv, index=False)
        print(f"wrote {opts.csv}")
    if (Path(opts.run_dir) / "summary.json").is_file():
        _report_comparison(opts.run_dir)
    elif opts.more_runs:
        _report_seeds(opts)
    else:
        results = _run_results(opts.run_dir)
        run = RunDir(opts.run_dir)
        print(format_table(results, opts.metric, opts.tolerance))
        plots = _plots_or_note(lambda: tables.write_plots(run.path, results, opts.metric), run.path)
        print(f"\nstatus: {results['status']}; plots: {', '.join(str(p) for p in plots) or 'none written'}")


def _report_comparison(run_dir: str) -> None:
    """A compare-inits directory: its summary table and plots."""
    from lottery.reporting.plots import compare_plots  # matplotlib: loaded only to plot

    path = Path(run_dir) / "summary.json"
    summary = load_summary(run_dir)
    try:
        table = format_summary(summary)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        raise LotteryError(f"{path} is not a compare-inits summary; run the comparison again to rewrite it") from None
    print(table)
    plots = _plots_or_note(lambda: compare_plots(run_dir, summary), run_dir)
    print(f"\nplots: {', '.join(str(p) for p in plots) or 'none written'}")


def _report_seeds(opts: ReportOptions) -> None:
    """Several seeds of one experiment: the verdict table, verdicts.json and interval bands."""
    from lottery.reporting.plots import seed_plots  # matplotlib: loaded only to plot

    dirs = [opts.run_dir, *opts.more_runs]
    check_seed_runs(dirs)
    results_list = [_run_results(d) for d in dirs]
    comparison = seed_comparison(results_list, opts.metric, opts.tolerance)
    first = Path(opts.run_dir).resolve()
    out = Path(opts.out) if opts.out else seeds_dir_in(first.parent, first.name.rpartition("-")[0] or first.name,
                                                        [Path(d).resolve().name for d in dirs])
    print(format_verdicts(comparison))
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "verdicts.json", {**comparison, "run_dirs": [str(Path(d).resolve()) for d in dirs]})
    plots = _plots_or_note(lambda: seed_plots(out, results_list, opts.metric), out)
    print(f"\nverdicts: {out / 'verdicts.json'}; plots: {', '.join(str(p) for p in plots) or 'none written'}")


def _run_results(path: str) -> dict:
    run = RunDir(path)
    run.settings()  # refuses a directory that is not a run (any driver's: run_imp, find_tickets)
    results = run.read_results_lenient()
    if results is None:
        raise LotteryError(f"{run.path} has no results.json yet; start the run with `lottery run`")
    return results


def _plots_or_note(draw, where) -> list:
    """The plots, or none with a one-line note when ``where`` cannot be written (an archived, read-only run)."""
    try:
        return draw()
    except PermissionError as e:
        print(f"lottery: note: plots skipped, {e.filename or where} is not writable", file=sys.stderr)
        return []
