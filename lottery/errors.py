"""Exceptions for user errors. Each message names the problem and the fix; the CLI prints it as one line."""


class LotteryError(ValueError):
    """Base for every user-facing error raised by lottery (a ValueError, so callers may catch either)."""


class UnknownNameError(LotteryError):
    """A registry lookup with a name that is not registered."""


class ConfigError(LotteryError):
    """A setting that is missing, malformed or out of range."""


class MaskMismatchError(LotteryError):
    """A mask that does not fit the model it is applied to."""


class CorruptFileError(LotteryError):
    """A file that is truncated, damaged, or not the kind of file expected."""


class RewindCheckError(RuntimeError):
    """An internal invariant failed: kept weights differ from the rewind state, or pruned ones are non-zero."""


class StructureExhausted(LotteryError):
    """The next IMP level cannot keep the mask's structure (an n:m mask would go below n of every m)."""


class StructureCheckError(RuntimeError):
    """An internal invariant failed: a mask that should satisfy a structure (neuron, n:m) does not."""
