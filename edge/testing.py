"""Helpers for tests and benchmarks that need a broker they may stop and restart.

:class:`MosquittoProcess` runs a private ``mosquitto`` on a free local port with
persistence in a temporary folder, so a persistent session (the centre's) and its queued
QoS 1 messages survive :meth:`MosquittoProcess.restart`. It is configured the way
``docs/edge.md`` asks a production broker to be: no cap on queued messages.

>>> with MosquittoProcess(tmp_path) as broker:
...     broker.stop(); broker.start()   # same port, same sessions
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoProcess:
    """A private Mosquitto broker (``/usr/sbin/mosquitto`` or ``$PATH``)."""

    def __init__(self, workdir: Path, *, port: int | None = None,
                 max_inflight_messages: int = 1000) -> None:
        binary = MOSQUITTO if Path(MOSQUITTO).exists() else shutil.which("mosquitto")
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        (self.workdir / "data").mkdir(exist_ok=True)
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # run as whoever started it: as root, mosquitto would otherwise switch to the
            # "mosquitto" user, which cannot write its persistence file here
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir / 'data'}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"
            "max_queued_bytes 0\n"
            f"max_inflight_messages {max_inflight_messages}\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n",
            encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart) on the same port; returns once it accepts connections."""
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start ({self.proc.returncode}): {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s}s")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (saves its persistence file) or, with ``kill``, SIGKILL."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
