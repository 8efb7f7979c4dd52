"""The built-in subcommands of ``lottery``: importing this module registers every one. Each registers itself in its
own module with ``@register_driver`` (lottery/drivers/registry.py), so a new command is its module plus one import
here; ``lottery list`` is the one defined here, since it lists every registry, the commands' included."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import ClassVar

from lottery.data import DATASETS
from lottery.drivers import seeds, compare_inits, prune_at_init, gradual, supermask, stability  # noqa: F401
from lottery.drivers import transfer_command  # noqa: F401
from lottery.drivers import budget, export_command  # noqa: F401
from lottery.drivers.registry import DRIVERS, register_driver
from lottery.inits import INIT_SCHEMES
from lottery.models import MODELS
from lottery.pruning import PRUNERS, STRUCTURES
from lottery.reporting import report_command  # noqa: F401  (each import registers its command, in this order)
from lottery.demo import serve  # noqa: F401,I001  (and `list`, below, comes last)


@dataclass(frozen=True)
class ListOptions:
    """list: no arguments."""

    command: ClassVar[str] = "list"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        pass

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ListOptions":
        return cls()


@register_driver("list", "registered models, data sets, init schemes, pruning strategies and drivers",
                 options=ListOptions)
def list_command(_, opts: ListOptions) -> None:
    for title, registry in (("models", MODELS), ("data sets", DATASETS), ("init schemes", INIT_SCHEMES),
                            ("pruning strategies", PRUNERS), ("structures (N:M, e.g. 2:4)", STRUCTURES),
                            ("drivers (subcommands)", DRIVERS)):
        print(f"{title}: {', '.join(sorted(registry))}")

