"""What every benchmark shares: process memory readings, and benchmarks/RESULTS.md, where each benchmark rewrites
only its own sections."""
from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")


def machine_header() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (
        "# Benchmark results\n\n"
        f"Machine: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; Python {platform.python_version()}; "
        f"created {datetime.date.today().isoformat()}.\n"
        "Each section is written by the benchmark it names (`python benchmarks/<bench>.py --write`); "
        "figures are ratios against baselines measured in the same run on the same machine.\n"
    )


def write_sections(sections: dict[str, str], path: str | Path = RESULTS) -> None:
    """Replace each ``heading -> body`` section (heading up to the next ``## ``), append missing ones, keep the rest.

    A body may start with its own heading line; it is not repeated.
    """
    path = Path(path)
    text = path.read_text() if path.exists() else machine_header()
    for heading, body in sections.items():
        body = body.split("\n", 1)[1].lstrip("\n") if body.startswith(heading + "\n") else body
        section = f"{heading}\n\n{body.rstrip()}\n"
        pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
        if pattern.search(text):
            text = pattern.sub(lambda _: section + "\n", text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def rss_bytes(field: str = "VmRSS") -> int:
    """Resident memory of this process (VmRSS), or its peak since the last reset (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
