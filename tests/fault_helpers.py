"""The target of the fault tests' forked children: the `lottery` command with a crash point armed."""
import os
import sys


def run_cli_with_crash(point: str, argv: list[str]) -> None:
    import torch

    from lottery.cli import main
    from lottery.faults import ENV

    torch.set_num_threads(1)  # as the test process does: the same arithmetic, and fast on a busy machine
    os.environ[ENV] = point
    sys.exit(main(argv))
