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


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, `kill`): unwinds like Ctrl-C, so the run ends the same resumable way."""


_termination = {"requested": False}


def terminate(requested: bool = True) -> None:
    """SIGTERM's handler (``requested``): note it and raise ``Terminated``; ``terminate(False)`` clears the note."""
    _termination["requested"] = requested
    if requested:
        raise Terminated()


def on_sigterm(signum, frame) -> None:
    """The SIGTERM handler of the ``lottery`` command and of a grid's trunk processes. A SIGTERM that comes while
    an earlier one is still unwinding (a grid's launcher sends it again every second) does not raise again: it
    would interrupt the clean-up (the run's lock, its last atomic writes)."""
    if not _termination["requested"]:
        terminate()


def raise_if_terminated() -> None:
    """Raise ``Terminated`` once SIGTERM has come: a handler's exception raised inside a ``__del__`` or a garbage
    collector callback is only printed by Python, and the run would go on; the training loop asks every step."""
    if _termination["requested"]:
        raise Terminated()
