"""The module names of lottery 0.2.0 and earlier, kept working after the layout moved them into packages.

``import lottery.imp`` (or ``from lottery.runs import RunDir``) gives the very module object that now lives at
``lottery.drivers.imp`` (``lottery.storage.rundir``): the same functions, the same globals, so monkeypatching
either name patches both. New code should use the new names.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "lottery.imp": "lottery.drivers.imp",
    "lottery.gradual": "lottery.drivers.gradual",
    "lottery.prune_at_init": "lottery.drivers.prune_at_init",
    "lottery.compare": "lottery.drivers.compare",
    "lottery.grid": "lottery.drivers.grid",
    "lottery.tickets": "lottery.drivers.tickets",
    "lottery.analysis.stability": "lottery.drivers.stability",
    "lottery.analysis.supermask": "lottery.drivers.supermask",
    "lottery.runs": "lottery.storage.rundir",
    "lottery.io": "lottery.storage.atomic",
    "lottery.faults": "lottery.storage.faults",
    "lottery.report": "lottery.reporting.tables",
    "lottery.frames": "lottery.reporting.frames",
    "lottery.trackers": "lottery.reporting.trackers",
    "lottery.progress": "lottery.reporting.progress",
    "lottery.plots": "lottery.reporting.plots",  # and its submodules: lottery.plots.run, ...
}


def new_name(old: str) -> str | None:
    """Where module ``old`` lives now (``lottery.plots.run`` -> ``lottery.reporting.plots.run``), or None."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before):]
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if new_name(name) else None

    def create_module(self, spec):
        module = importlib.import_module(new_name(spec.name))
        spec.loader_state = module.__spec__  # the import system overwrites __spec__ next; exec_module restores it
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    if not any(type(f).__name__ == "_Alias" and type(f).__module__ == __name__ for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # first: a moved package's old name must not load its files twice
