"""Mean ± sample std over seeds: the one summary statistic every table and plot of lottery reports."""
from __future__ import annotations

import math
from typing import Iterable


def mean_std(values: Iterable[float | None]) -> dict:
    """``{"mean", "std", "n"}`` of the finite values (sample std, ddof=1; 0 for one value; None for none).

    >>> mean_std([1.0, 3.0, None])["mean"], mean_std([])["mean"]
    (2.0, None)
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(xs)}
