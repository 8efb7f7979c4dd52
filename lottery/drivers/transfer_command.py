"""``lottery transfer RUN_DIR --level N``: the command around lottery/drivers/transfer.py, with its plots (a module
of its own: the plots read the driver's helpers, so the driver cannot import them)."""
from __future__ import annotations

from pathlib import Path

from lottery.drivers.registry import register_driver
from lottery.drivers import transfer
from lottery.drivers.transfer import TransferOptions
from lottery.reporting.transfer_table import format_table
from lottery.storage.rundir import RunDir


def report_transfer(results: dict, run_dir, opts: TransferOptions) -> str:
    text = format_table(results, opts.level)
    if opts.plot:
        from lottery.reporting.plots.transfer import transfer_plots  # matplotlib: loaded only to plot

        run = RunDir(run_dir)
        text += f"\n\nplots: {', '.join(str(p) for p in transfer_plots(run.path, results, run.load_results_strict()))}"
    return text


@register_driver("transfer", "train a level's mask on other inits (raw, sign-aligned, unit-permuted)",
                 options=TransferOptions, report=report_transfer)
def transfer_command(run_dir: str | Path, opts: TransferOptions) -> dict:
    return transfer.transfer_mask(run_dir, opts.level, opts.inits or None, opts.seeds, opts.align, match=opts.match,
                                  control_draws=opts.control_draws, controls=opts.controls, pack=opts.pack,
                                  progress=opts.progress)
