"""The target of the fault tests' forked children: the `lottery` command with a crash point armed."""
import os
import sys


def run_cli_with_crash(point: str, argv: list[str]) -> None:
    from lottery.cli import main
    from lottery.testing import ENV

    os.environ[ENV] = point
    sys.exit(main(argv))


class DropoutNet:
    """A model whose training draws from the global RNG (dropout), registered as ``fault_dropout``."""

    name = "fault_dropout"

    @staticmethod
    def build(input_shape, num_classes):
        import math

        from torch import nn

        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(16, num_classes))

    @classmethod
    def register(cls) -> None:
        from lottery.models import MODELS, register_module

        if cls.name not in MODELS:
            register_module(cls.name, cls.build)


def run_cli_with_crash_dropout(point: str, argv: list[str]) -> None:
    """``run_cli_with_crash`` with the dropout model registered in the child."""
    DropoutNet.register()
    run_cli_with_crash(point, argv)
