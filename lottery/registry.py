"""One registry shape for every axis a user extends (models, data sets, init schemes, pruning strategies).

A registry is a plain dict ``name -> callable`` filled by ``@REGISTRY.register("name")``. Looking up an unknown
name raises an error that lists the known ones, so a typo on the command line explains itself.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from lottery.errors import UnknownNameError

F = TypeVar("F", bound=Callable)


class Registry(dict):
    """A dict of named constructors for one axis (``axis`` names it in error messages)."""

    def __init__(self, axis: str):
        super().__init__()
        self.axis = axis

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: add ``fn`` under ``name``; refuses duplicates so two plugins cannot silently shadow."""

        def decorator(fn: F) -> F:
            if name in self:
                raise ValueError(f"{self.axis} '{name}' is already registered; pick another name")
            self[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable:  # type: ignore[override]
        """The entry called ``name``, or an error listing the known names."""
        if name not in self:
            raise UnknownNameError(
                f"unknown {self.axis} '{name}'; known {self.axis}s: {', '.join(sorted(self))}"
            )
        return self[name]

    def __repr__(self) -> str:
        return f"Registry({self.axis!r}: {', '.join(sorted(self))})"
