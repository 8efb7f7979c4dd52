"""``lottery export RUN_DIR --level N``: a finished level's ticket as a small safetensors file (lottery/export.py),
with its size, FLOPs and latency report."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lottery import export
from lottery.drivers.registry import register_driver
from lottery.errors import ConfigError
from lottery.options import Options, int_option, known, option, read_text, switch_option


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


def report_export(report: dict | None, *_) -> str:
    return export.format_report(report) if report else ""


@register_driver("export", "write a level's ticket as a small sparse safetensors file, with a report",
                 options=ExportOptions, report=report_export)
def export_command(run_dir: str | os.PathLike, opts: ExportOptions) -> dict | None:
    """Writes the file and says so at once (the report's latency measurement takes a while); returns the report."""
    path = export.export_run(run_dir, opts.level, opts.out, opts.format)
    print(f"exported level {opts.level} ({opts.format}) to {path}", flush=True)
    if not opts.report:
        return None
    checkpoint = Path(run_dir) / f"level_{opts.level:02d}" / "final.pt"
    return export.export_report(path, dense_checkpoint=checkpoint, threads=opts.threads)
