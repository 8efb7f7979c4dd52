"""Supermasks (Zhou et al. 2019): masks that make an *untrained* network accurate.

A criterion scores each weight from its initial and final values; the mask keeps the highest scores (exact counts
per scope, through ``prune_by_scores``). The masked network is then evaluated without any training, with its
original initial weights, or with "signed constants": every kept weight set to ``sign(w_init) * std`` of its
layer's initial weights. Zhou et al. rank weights layer by layer, so ``scope="layer"`` is the default here.

Criteria: ``large_final`` |w_f|, ``large_init`` |w_i|, ``magnitude_increase`` |w_f| - |w_i|, ``movement``
|w_f - w_i|, ``random``; each also as ``<name>_same_sign``: weights whose initial and final signs agree rank above
every other weight (then by the criterion), so when fewer agree than the density asks for, all of them are kept
and the rest are filled by the criterion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from lottery import distributed
from lottery.drivers.registry import register_driver
from lottery.errors import ConfigError
from lottery.masks import Mask
from lottery.options import (Options, densities_option, known, option, progress_option, read_list, read_text,
                             seed_option)
from lottery.pruning import SCOPES, prune_by_scores
from lottery.registry import Registry
from lottery.session import Session
from lottery.storage.atomic import save_json
from lottery.storage.rundir import RunDir, check_writable, refuse_symlink
from lottery.train import evaluate

CRITERIA = Registry("supermask criterion")
RESULTS_FILE = "supermask.json"
VARIANTS = ("init", "signed_constant")

Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@CRITERIA.register("large_final")
def _large_final(w_i, w_f, g):
    return w_f.abs()


@CRITERIA.register("large_init")
def _large_init(w_i, w_f, g):
    return w_i.abs()


@CRITERIA.register("magnitude_increase")
def _magnitude_increase(w_i, w_f, g):
    return w_f.abs() - w_i.abs()


@CRITERIA.register("movement")
def _movement(w_i, w_f, g):
    return (w_f - w_i).abs()


@CRITERIA.register("random")
def _random(w_i, w_f, g):
    return torch.rand(w_i.shape, generator=g, dtype=torch.float64).to(w_i.device)


for _name in list(CRITERIA):
    CRITERIA.register(f"{_name}_same_sign")(CRITERIA[_name])  # the sign rule is applied in ``criterion_scores``


def _criteria(v: Any) -> tuple:
    return () if v == "all" else read_list(str)(v)


@dataclass(frozen=True)
class SupermaskOptions(Options):
    """supermask: masks of the untrained network by each criterion (Zhou et al.)."""

    command: ClassVar[str] = "supermask"
    studies_run: ClassVar[bool] = True
    densities: tuple = densities_option((0.5, 0.2, 0.1, 0.05))
    criteria: tuple = option((), "comma-separated criteria, or all (the default)", parse=_criteria,
                             check=known(CRITERIA, "criteria from"),
                             metavar="C1,C2,...")
    scope: str = option("layer", "rank weights within each layer (layer) or across all layers (global)",
                        parse=read_text,
                        check=known(SCOPES))
    seed: int = seed_option("the random criterion")
    progress: bool = progress_option()


def criterion_scores(criterion: str, init: Mapping[str, torch.Tensor], final: Mapping[str, torch.Tensor],
                     names, seed: int = 0) -> dict[str, torch.Tensor]:
    """Scores (higher = kept) of ``criterion`` for the weights ``names``, in float64."""
    fn = CRITERIA.get(criterion)
    g = torch.Generator().manual_seed(int(seed))
    scores = {k: fn(init[k].double(), final[k].double(), g).double() for k in names}
    if criterion.endswith("_same_sign"):
        # Shift every disagreeing weight below the lowest agreeing one, keeping the order within each group.
        lo = min(float(s.min()) for s in scores.values())
        hi = max(float(s.max()) for s in scores.values())
        for k, s in scores.items():
            agree = torch.sign(init[k]) == torch.sign(final[k])
            scores[k] = torch.where(agree.to(s.device), s, s - (hi - lo) - 1.0)
    return scores


def supermask(init: Mapping[str, torch.Tensor], final: Mapping[str, torch.Tensor], density: float,
              criterion: str = "large_final_same_sign", names=None, scope: str = "layer", seed: int = 0) -> Mask:
    """The mask keeping ``density`` of the weights ``names`` (default: every name in ``init`` with a 2+-D
    tensor of a float dtype that ``final`` also holds) ranked by ``criterion``."""
    if not 0 < density < 1:
        raise ConfigError(f"density must be in (0, 1), got {density}")
    names = list(names) if names is not None else [
        k for k, v in init.items() if k in final and v.is_floating_point() and v.dim() >= 2]
    full = Mask({k: torch.ones(init[k].shape, dtype=torch.bool, device=init[k].device) for k in names})
    return prune_by_scores(criterion_scores(criterion, init, final, names, seed), full, 1.0 - density, scope)


@torch.no_grad()
def masked_untrained(model: nn.Module, init: Mapping[str, torch.Tensor], mask: Mask,
                     variant: str = "init") -> nn.Module:
    """Load ``init`` into ``model`` and apply ``mask``; ``signed_constant`` sets each kept weight to
    ``sign(w_init) * std(layer's initial weights)`` (pruned weights stay 0)."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant '{variant}'; known: {', '.join(VARIANTS)}")
    model.load_state_dict(dict(init))
    if variant == "signed_constant":
        params = mask.check_fits(model)
        for k, p in params.items():
            p.copy_(torch.sign(p) * p.std())
    mask.apply(model)
    return model


def evaluate_supermasks(model: nn.Module, init, final, data, densities=(0.5, 0.2, 0.1, 0.05),
                        criteria=None, scope: str = "layer", seed: int = 0, progress: bool = False) -> list[dict]:
    """Test accuracy of the masked untrained network per criterion, density and variant (``data.test``);
    ``progress``: a bar over the (criterion, density) pairs."""
    names = list(Mask.ones_like(model))
    device = next(model.parameters()).device
    init = {k: v.to(device) for k, v in init.items()}
    final = {k: v.to(device) for k, v in final.items()}
    rows = []
    pairs = [(c, d) for c in criteria or list(CRITERIA) for d in densities]
    for criterion, density in tqdm(pairs, desc="supermasks", dynamic_ncols=True, disable=not progress):
        mask = supermask(init, final, density, criterion, names, scope, seed)
        row = {"criterion": criterion, "density": mask.density, "target_density": density}
        for variant in VARIANTS:
            loss, acc = evaluate(masked_untrained(model, init, mask, variant), *data.test)
            row[variant] = {"test_accuracy": acc, "test_loss": loss if math.isfinite(loss) else None}
        rows.append(row)
    model.load_state_dict(dict(init))
    return rows


def supermask_run(run_dir: str | Path, densities=(0.5, 0.2, 0.1, 0.05), criteria=None, scope: str = "layer",
                  seed: int = 0, progress: bool = False) -> dict:
    """Supermasks of an IMP run directory: ``init.pt`` and the dense run's ``level_00/final.pt``; the results are
    also written to ``supermask.json`` there."""
    distributed.refuse_processes("supermask")
    run = RunDir(run_dir)
    cfg = run.config()
    final = run.load_state("level_00/final.pt")
    if final is None:
        raise ConfigError(f"{run.path} has no level_00/final.pt yet; run level 0 first (`lottery run --levels 0`)")
    dense = next((e for e in (run.load_results_strict() or {}).get("levels", []) if e["level"] == 0), None)
    if dense is not None and dense["status"] != "ok":
        raise ConfigError(f"the dense run (level 0) of {run.path} diverged: its final weights rank nothing; "
                          "supermasks need a run whose level 0 is ok")
    check_writable(run.path)
    # Reads init.pt and level 0 (the IMP run may go on) and writes only supermask.json, under its own lock.
    # Nothing here trains, so a rerun recomputes every row and rewrites the file (a damaged one included).
    with run.for_driver(RESULTS_FILE):
        session = Session(cfg, run)
        rows = evaluate_supermasks(session.model, session.init_state, final, session.data, densities, criteria,
                                   scope, seed, progress)
        results = {"run": str(run.path), "scope": scope, "seed": seed, "rows": rows}
        save_json(refuse_symlink(run.path / RESULTS_FILE, run.path), results)
    return results


def format_table(results: dict) -> str:
    head = f"{'criterion':<30} {'weights %':>9} {'init acc %':>10} {'signed const %':>14}"
    lines = [head, "-" * len(head)]
    for r in results["rows"]:
        lines.append(f"{r['criterion']:<30} {100 * r['density']:9.2f} {100 * r['init']['test_accuracy']:10.2f} "
                     f"{100 * r['signed_constant']['test_accuracy']:14.2f}")
    lines.append("cost: the masked network is not trained; its mask is read from trained weights (1 dense training)")
    return "\n".join(lines)


@register_driver("supermask", "accuracy of the masked untrained network (Zhou et al.) for a run",
                 options=SupermaskOptions, report=lambda results, *_: format_table(results))
def supermask_command(run_dir: str | Path, opts: SupermaskOptions) -> dict:
    return supermask_run(run_dir, opts.densities, opts.criteria or None, opts.scope, opts.seed, progress=opts.progress)
