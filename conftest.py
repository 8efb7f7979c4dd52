"""Collection of the docstring examples in lottery/: only modules that hold an example (``>>>``) are imported for
it. Collecting a module imports it, and the integration modules import Lightning and Transformers (seconds each,
in every run of the suite, quick tier included) while holding no example; their tests import them when they run."""
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "lottery"


def pytest_ignore_collect(collection_path: Path, config):
    if collection_path.suffix == ".py" and PACKAGE in collection_path.parents:
        return ">>>" not in collection_path.read_text(encoding="utf-8")
    return None


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject.toml): one worker per core this process may use, at most 8 — each worker imports
    torch (half a GB), and many tests start processes of their own."""
    return max(1, min(8, len(os.sched_getaffinity(0))))
