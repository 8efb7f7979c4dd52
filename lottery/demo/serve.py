"""``lottery demo``: serve the demo notebook (shipped inside the package) as a local web page with Voilà."""
from __future__ import annotations

import socket
from pathlib import Path

from lottery.errors import ConfigError

NOTEBOOK = Path(__file__).with_name("demo.ipynb")  # notebooks/demo.ipynb is the same file (a test keeps them equal)


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
