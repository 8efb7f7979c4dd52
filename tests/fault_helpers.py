"""The target of the fault tests' forked children: the `lottery` command with a crash point armed."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli_with_crash(point: str, argv: list[str]) -> None:
    from lottery.cli import main
    from lottery.testing import ENV

    os.environ[ENV] = point
    sys.exit(main(argv))


def lottery_process(argv: list[str], out: Path, crash: str | None = None, timeout: int = 300,
                    **env: str) -> subprocess.CompletedProcess:
    """``python -m lottery ARGV --out OUT`` in a fresh process from the repository root, with the crash point
    ``crash`` armed (None: none, even if this process has one set) and extra environment ``env``."""
    from lottery.testing import ENV

    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    environ.pop(ENV, None)
    if crash:
        environ[ENV] = crash
    return subprocess.run([sys.executable, "-m", "lottery", *argv, "--out", str(out)], env=environ,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


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
