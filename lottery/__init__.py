"""lottery: lottery-ticket pruning for PyTorch — iterative magnitude pruning with verified rewinding.

The public names below load on first use (PEP 562), so ``import lottery`` stays cheap and a user importing only
the mask utilities never pays for the model zoo or the data sets.
"""
from importlib import import_module

__version__ = "0.3.0"

_EXPORTS = {
    "Mask": "lottery.masks", "mask_gradients": "lottery.masks",
    "PRUNERS": "lottery.pruning", "prune_by_scores": "lottery.pruning", "prune_magnitude": "lottery.pruning",
    "prune_random": "lottery.pruning", "random_mask_like": "lottery.pruning",
    "STRUCTURES": "lottery.pruning", "prune_structured": "lottery.pruning", "random_structured_like": "lottery.pruning",
    "Registry": "lottery.registry",
    "snapshot": "lottery.rewind", "rewind": "lottery.rewind", "verify_rewind": "lottery.rewind",
    "Config": "lottery.config",
    "DATASETS": "lottery.data", "load_dataset": "lottery.data",
    "INIT_SCHEMES": "lottery.inits", "init_weights": "lottery.inits",
    "MODELS": "lottery.models", "build_model": "lottery.models",
    "symmetry_report": "lottery.symmetry",
    "TrainResult": "lottery.train",  # the function is lottery.train.train (the module owns the name)
    "run_imp": "lottery.drivers.imp", "Session": "lottery.session",
    "collapsed_layers": "lottery.pruning",
    "compare_inits": "lottery.drivers.compare_inits",
    "run_gradual": "lottery.drivers.gradual",
    "run_prune_at_init": "lottery.drivers.prune_at_init",
    "export_ticket": "lottery.export", "load_exported": "lottery.export",
    "find_tickets": "lottery.drivers.find_tickets",
    "transfer_mask": "lottery.drivers.transfer",
    "load_results": "lottery.reporting.frames", "verdicts": "lottery.reporting.frames",
    "run_seeds": "lottery.drivers.seeds", "find_tickets_over_seeds": "lottery.drivers.seeds",
    "compare_levels": "lottery.stats", "paired_interval": "lottery.stats", "verdict": "lottery.stats",
}
__all__ = sorted(_EXPORTS) + ["__version__"]

# `rewind` names both a function and the module defining it: once anything imports lottery.rewind (the trainer
# does), the import system binds the submodule as this package's attribute and a lazy export never runs, so
# `lt.rewind(...)` would call a module. Binding these three eagerly (their module needs only torch) prevents it.
from lottery.rewind import rewind, snapshot, verify_rewind  # noqa: E402,F401


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # cache: later lookups skip this function
        return value
    raise AttributeError(f"module 'lottery' has no attribute '{name}'")


def __dir__():
    return __all__
