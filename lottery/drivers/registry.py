"""The driver registry: every ``lottery`` subcommand registers itself, in its own module, with ``@register_driver``.

An entry says what a command is on the command line: its help, its options class and its entry point, which is the
decorated function, and how its results print (``report``). The options class is an ``Options`` dataclass
(lottery/options.py) whose fields become the flags and the ``--config`` table, or, for a command whose arguments
are written by hand (``report``, ``list``, ``demo``), a class with ``add_arguments(parser)`` and
``from_args(args)``. The entry point is ``run(target, options)``: ``target`` is the experiment ``Config`` (the run
directory and Session it makes are the driver's), the ``RUN_DIR`` of a study of a finished run (its options say
so: ``studies_run``), or None for a command with hand-written arguments (they are all in its options).

``lottery --help``, each subcommand's flags, the CLI reference (docs/hooks/cli_reference.py) and ``lottery list``
read ``DRIVERS``; lottery/commands.py imports the built-in commands' modules; tests/test_drivers.py is
parametrized over the registry. A new driver is one module with its decorated entry point, plus its import in
lottery/commands.py (and a row in that test's table).

>>> @register_driver("hello", "say hello", report=lambda said, cfg, opts: said)
... def hello(cfg, opts):
...     return f"hello, {cfg.dataset}"
>>> from lottery.config import Config
>>> DRIVERS["hello"].run(Config(dataset="synthetic"), None)
'hello, synthetic'
>>> del DRIVERS["hello"]
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from lottery.registry import Registry

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class Driver:
    """One subcommand: ``run(target, options)`` returns the results, ``report(results, target, options)`` the text
    printed after them (None: nothing to print)."""

    help: str
    run: Callable[[Any, Any], Any]
    report: Callable[[Any, Any, Any], str] | None = None
    options: type | None = None  # its options class; None: the experiment Config's flags only
    description: str | None = None  # --help text above the flags

    @property
    def study(self) -> bool:
        """Works on a finished IMP run directory (RUN_DIR), whose config is the experiment."""
        return getattr(self.options, "studies_run", False)

    @property
    def hand_written(self) -> bool:
        """Its arguments are written by hand (``options.add_arguments``), not generated from dataclass fields."""
        return hasattr(self.options, "add_arguments")


DRIVERS = Registry("driver")


def register_driver(name: str, help: str, *, options: type | None = None,
                    report: Callable[[Any, Any, Any], str] | None = None,
                    description: str | None = None) -> Callable[[F], F]:
    """Decorator: the function is subcommand ``name``'s entry point ``run(target, options)``; a name registered
    twice is refused (the registry's rule)."""

    def decorator(run: F) -> F:
        DRIVERS.register(name)(Driver(help, run, report, options, description))
        return run

    return decorator


def formatter(driver: Driver) -> type:
    """The --help formatter: a description written as a block keeps its lines."""
    return argparse.RawDescriptionHelpFormatter if driver.description else argparse.HelpFormatter
