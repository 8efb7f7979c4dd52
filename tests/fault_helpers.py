"""The target of the fault tests' forked children: the `lottery` command with a crash point armed."""
import os
import sys


def run_cli_with_crash(point: str, argv: list[str]) -> None:
    from lottery.cli import main
    from lottery.faults import ENV

    os.environ[ENV] = point
    sys.exit(main(argv))
