"""One init grammar for every command: ``SCHEME[:KEY=VALUE[:KEY=VALUE...]][*SCALE]``.

``lottery run --init normal:std=0.01`` and ``lottery compare-inits --inits 'normal:std=0.01,xavier_normal*0.01'``
read the same text: the scheme (``lottery list`` names them), its keyword options separated by ``:``, and an
optional ``*SCALE`` (or ``:scale=``) that multiplies the drawn weights (``init_scale``). ``Config`` expands a
variant written as ``init`` into ``init``, ``init_options`` and ``init_scale``, so both spellings hash alike.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from lottery.errors import ConfigError
from lottery.inits import INIT_SCHEMES
from lottery.options import parse_options

if TYPE_CHECKING:  # Config expands an init variant (lottery.config imports this module)
    from lottery.config import Config

_VARIANT = re.compile(r"^\s*(?P<scheme>[A-Za-z0-9_]+)(?P<opts>(:[^:*]+)*)(\*(?P<scale>[^:*]+))?\s*$")


@dataclass(frozen=True)
class InitVariant:
    """One entry of ``--inits``: a scheme, its options and a scale; ``label`` is how it was written."""

    label: str
    scheme: str
    options: dict = field(default_factory=dict)
    scale: float | None = None  # None: keep the base config's init_scale

    def apply(self, cfg: Config) -> Config:
        changes = {"init": self.scheme, "init_options": dict(self.options)}
        if self.scale is not None:
            changes["init_scale"] = self.scale
        return cfg.replace(**changes)


def parse_init_variant(text: str) -> InitVariant:
    """``'normal:std=0.001'`` / ``'xavier_normal*0.01'`` / ``'kaiming_normal:mode=fan_out*2'`` -> InitVariant."""
    m = _VARIANT.match(text)
    if not m:
        raise ConfigError(f"init variant {text!r} must look like SCHEME[:KEY=VALUE...][*SCALE], "
                          "e.g. normal:std=0.001 or xavier_normal*0.01")
    scheme = m.group("scheme")
    INIT_SCHEMES.get(scheme)  # unknown scheme: error listing the known ones
    options: dict = {}
    for part in filter(None, (m.group("opts") or "").split(":")):
        options.update(parse_options(part))
    scale = options.pop("scale", None)
    if m.group("scale") is not None:
        if scale is not None:
            raise ConfigError(f"init variant {text!r} gives the scale twice (*SCALE and scale=); give it once")
        scale = m.group("scale")
    if scale is not None:
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise ConfigError(f"init variant {text!r}: scale {scale!r} is not a number") from None
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"init variant {text!r}: scale must be a finite number > 0, got {scale!r}")
    return InitVariant(label=text.strip(), scheme=scheme, options=options, scale=scale)
