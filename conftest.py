"""Collection of the docstring examples in lottery/: only modules that hold an example (``>>>``) are imported for
it. Collecting a module imports it, and the integration modules import Lightning and Transformers (seconds each,
in every run of the suite, quick tier included) while holding no example; their tests import them when they run."""
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "lottery"


def pytest_ignore_collect(collection_path: Path, config):
    if collection_path.suffix == ".py" and PACKAGE in collection_path.parents:
        return ">>>" not in collection_path.read_text(encoding="utf-8")
    return None
