"""Early-bird masks: the mask a level would prune to settles long before its training ends.

While a network trains, the magnitude ranking of its weights stops changing early: the mask the pruner would
draw from the weights at step t is, after a fraction of the budget, the mask it would draw at the end. Checked at
every validation evaluation, the normalised Hamming distance between consecutive candidate masks (the fraction of
prunable weights on which they disagree) falls; once it has stayed below ε for ``window`` checks in a row the mask
has stabilised and training can stop there. The defaults, ε = 0.1 over 5 checks, are those of the early-bird
ticket method; the distance counts the weights the level still has (its mask), not those already pruned. Stopping
early makes the run a *mask search*: its weights are not a trained ticket, and IMP reports no accuracy for it
(lottery/imp_engine.py trains the mask it ends on fully).
"""
from __future__ import annotations

from typing import Callable

from lottery.errors import ConfigError
from lottery.masks import Mask

EPSILON = 0.1  # default distance below which consecutive candidate masks count as the same
WINDOW = 5  # default number of consecutive checks that must stay below it


def mask_distance(a: Mask, b: Mask, within: Mask | None = None) -> float:
    """The fraction of prunable weights on which two masks over the same weights disagree (0 same, 1 opposite);
    ``within``: the fraction of the weights that mask keeps instead (a level's live weights: candidates pruned from
    them agree on every weight already gone, which would otherwise make deep levels look settled at once).

    >>> import torch
    >>> mask_distance(Mask({"w": torch.tensor([1, 1, 0, 0], dtype=torch.bool)}),
    ...               Mask({"w": torch.tensor([1, 0, 1, 0], dtype=torch.bool)}))
    0.5
    """
    if sorted(a) != sorted(b):
        raise ValueError("the masks cover different weights; compare masks of the same model")
    if within is None:
        differ, total = sum(int((a[k] != b[k].to(a[k].device)).sum()) for k in a), sum(a[k].numel() for k in a)
    else:
        live = {k: within[k].to(a[k].device) for k in a}
        differ = sum(int(((a[k] != b[k].to(a[k].device)) & live[k]).sum()) for k in a)
        total = sum(int(live[k].sum()) for k in a)
    return differ / total if total else 0.0


def check_early_bird(epsilon: object, window: object) -> None:
    """ε must be a fraction strictly inside (0, 1) and the window a whole number of checks >= 1."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < 1:
        raise ConfigError(f"early_bird_epsilon must be in (0, 1) (a fraction of the prunable weights), got "
                          f"{epsilon!r}; the default is {EPSILON}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"early_bird_window must be an integer >= 1 (checks in a row), got {window!r}; the default "
                          f"is {WINDOW}")


class EarlyBird:
    """The stopping rule of one training run. ``candidate(model)`` is the mask the next level would prune to from
    the model's current weights (the same pruner, fraction and seed the next level uses), distances are taken over
    the weights ``within`` keeps (the level's mask; None: all); ``step_hook`` checks it
    at every ``every``-th step and returns ``stop`` once the last ``window`` distances are all below ``epsilon``.
    ``record()`` is what the level's results entry keeps: the stop step (None: it never stabilised and trained
    to the end) and the distance curve ``[[step, distance], ...]``."""

    def __init__(self, candidate: Callable[[object], Mask], epsilon: float = EPSILON, window: int = WINDOW,
                 within: Mask | None = None):
        check_early_bird(epsilon, window)
        self.candidate, self.epsilon, self.window, self.within = candidate, epsilon, window, within
        self.distances: list = []
        self.stop_step: int | None = None
        self._last: Mask | None = None

    def observe(self, step: int, mask: Mask) -> bool:
        """Take the candidate mask at ``step``; True when the mask has now stabilised."""
        if self._last is not None:
            self.distances.append([step, mask_distance(mask, self._last, self.within)])
        self._last = mask
        recent = self.distances[-self.window:]
        if len(recent) == self.window and all(d < self.epsilon for _, d in recent):
            self.stop_step = step
            return True
        return False

    def step_hook(self, model, every: int, stop: object) -> Callable:
        """A ``lottery.train.train`` step hook checking at steps that are multiples of ``every`` (the validation
        period); it returns ``stop`` (train's sentinel) to end the run at that step."""
        def hook(step: int, optimizer) -> object:
            if step % every == 0 and self.stop_step is None and self.observe(step, self.candidate(model)):
                return stop
            return None

        return hook

    def record(self) -> dict:
        return {"stop_step": self.stop_step, "epsilon": self.epsilon, "window": self.window,
                "distances": self.distances}
