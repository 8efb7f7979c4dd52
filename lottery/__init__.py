"""lottery: lottery-ticket pruning for PyTorch — iterative magnitude pruning with verified rewinding."""
from lottery.masks import Mask
from lottery.prune import PRUNERS, prune_by_scores, prune_magnitude, prune_random, random_mask_like
from lottery.registry import Registry
from lottery.rewind import rewind, snapshot, verify_rewind

__version__ = "0.1.0"
