"""``lottery demo``: serve the demo notebook (shipped inside the package) as a local web page with Voilà."""
from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lottery.drivers.registry import register_driver
from lottery.errors import ConfigError

NOTEBOOK = Path(__file__).with_name("demo.ipynb")  # notebooks/demo.ipynb is the same file (a test keeps them equal)


@dataclass(frozen=True)
class DemoOptions:
    """demo: the port to serve on (its one argument is written by hand: it reads no --config file)."""

    command: ClassVar[str] = "demo"
    port: int = 8866

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--port", type=int, default=8866, help="port on localhost to serve it on (default 8866)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DemoOptions":
        return cls(args.port)


@register_driver("demo", "the interactive init/ticket playground as a local web page (needs lottery[demo])",
                 options=DemoOptions)
def demo_command(_, opts: DemoOptions) -> None:
    try:
        serve(opts.port)  # its optional dependencies (lottery[demo]) load here
    except KeyboardInterrupt:  # Ctrl-C is how a user stops the server: not an error
        pass


def serve(port: int = 8866) -> int:
    """Run Voilà on http://localhost:``port``/ until interrupted; the notebook's code runs in a fresh kernel."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"--port must be a TCP port number between 1 and 65535, got {port!r}")
    check_port_free(port)
    try:
        import ipywidgets  # noqa: F401
        from voila.app import Voila
    except ImportError:
        raise ConfigError("lottery demo needs Voilà and ipywidgets: pip install 'lottery[demo]'") from None
    print(f"lottery demo: serving at http://localhost:{port}/  (Ctrl-C to stop)", flush=True)
    # port_retries=0: fail on a busy port rather than serve on another one than the URL just printed
    Voila.launch_instance(argv=[str(NOTEBOOK), f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1",
                                "--Voila.port_retries=0"])
    return 0


def check_port_free(port: int) -> None:
    """Fail before printing the URL when something already listens on ``port`` (Voilà would exit after it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is free
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            raise ConfigError(f"--port {port} is not free on localhost ({e.strerror}); pass another --port") from None
