"""The edge agent's worker threads, restarted when they die (frigate ``app.py``).

Each worker is a callable ``run(stop)`` that returns only when ``stop`` is set. A worker
that raises or returns early is logged and started again after a back-off that doubles up
to ``max_backoff_s`` (reset once it has stayed up for a minute).

>>> workers = Workers()
>>> workers.add("publisher", publisher_factory)   # factory() -> run(stop) callable
>>> workers.start(); ...; workers.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Empty, Full, Queue
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

WorkerRun = Callable[[threading.Event], None]
T = TypeVar("T")


@dataclass
class _Worker:
    name: str
    factory: Callable[[], WorkerRun]
    thread: threading.Thread | None = None
    restarts: int = 0
    backoff_s: float = 0.5
    started_at: float = 0.0
    next_start_at: float = 0.0
    failed: bool = field(default=False)


class Workers:
    """Starts, watches and restarts named workers; ``stop()`` ends them all."""

    def __init__(self, *, max_backoff_s: float = 30.0,
                 on_restart: Callable[[str], None] | None = None) -> None:
        self.stop_event = threading.Event()
        self._workers: dict[str, _Worker] = {}
        self._max_backoff_s = max_backoff_s
        self._on_restart = on_restart
        self._watcher: threading.Thread | None = None

    def add(self, name: str, factory: Callable[[], WorkerRun]) -> None:
        """Register a worker; ``factory()`` builds a fresh ``run(stop)`` for every start."""
        if name in self._workers:
            raise ValueError(f"worker {name!r} is already registered")
        self._workers[name] = _Worker(name, factory)

    def _launch(self, worker: _Worker) -> None:
        run = worker.factory()

        def target() -> None:
            try:
                run(self.stop_event)
            except Exception:
                worker.failed = True
                logger.exception("worker %s died", worker.name)
            else:
                if not self.stop_event.is_set():
                    worker.failed = True
                    logger.error("worker %s returned while the agent is running", worker.name)

        worker.failed = False
        worker.started_at = time.monotonic()
        worker.thread = threading.Thread(target=target, name=f"gw-{worker.name}", daemon=True)
        worker.thread.start()

    def start(self) -> None:
        """Start every worker and the watcher thread."""
        for worker in self._workers.values():
            self._launch(worker)
        self._watcher = threading.Thread(target=self._watch, name="gw-workers", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self.stop_event.wait(0.2):
            now = time.monotonic()
            for worker in self._workers.values():
                if worker.thread is None or worker.thread.is_alive():
                    continue
                if worker.next_start_at == 0.0:
                    if now - worker.started_at > 60:
                        worker.backoff_s = 0.5
                    worker.next_start_at = now + worker.backoff_s
                    worker.backoff_s = min(worker.backoff_s * 2, self._max_backoff_s)
                if now >= worker.next_start_at:
                    worker.next_start_at = 0.0
                    worker.restarts += 1
                    logger.warning("restarting worker %s (restart #%d)", worker.name,
                                   worker.restarts)
                    if self._on_restart is not None:
                        self._on_restart(worker.name)
                    try:
                        self._launch(worker)
                    except Exception:
                        logger.exception("worker %s could not be started", worker.name)

    def restarts(self) -> dict[str, int]:
        return {name: w.restarts for name, w in self._workers.items()}

    def alive(self) -> dict[str, bool]:
        return {name: bool(w.thread and w.thread.is_alive()) for name, w in self._workers.items()}

    def stop(self, timeout_s: float = 10.0) -> None:
        """Signal every worker to stop and wait for them (up to ``timeout_s`` in total)."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        if self._watcher is not None:
            self._watcher.join(timeout=max(0.0, deadline - time.monotonic()))
        for worker in self._workers.values():
            if worker.thread is not None:
                worker.thread.join(timeout=max(0.0, deadline - time.monotonic()))
                if worker.thread.is_alive():
                    logger.warning("worker %s did not stop in time", worker.name)


class DropOldestQueue(Generic[T]):
    """A bounded queue that makes room by discarding the oldest item (camera frames).

    A live camera must not fall behind: when the detector is slower than the camera, the
    frames waiting longest are the least useful, so ``put`` discards them and never blocks.
    ``put_wait`` is for sources that cannot go stale (a video file read as fast as the
    detector takes it): it waits for room instead and loses nothing.

    >>> q = DropOldestQueue[int](2)
    >>> q.put(1), q.put(2), q.put(3)      # 1 is discarded to make room for 3
    (0, 0, 1)
    >>> q.get(0.1), q.get(0.1), q.get(0.1)
    (2, 3, None)
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize: expected >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._queue: Queue[T] = Queue(maxsize)

    def put(self, item: T) -> int:
        """Add ``item`` at once, discarding the oldest items if full; returns how many."""
        dropped = 0
        while True:
            try:
                self._queue.put_nowait(item)
                return dropped
            except Full:
                try:
                    self._queue.get_nowait()
                    dropped += 1
                except Empty:
                    pass

    def put_wait(self, item: T, stop: threading.Event, poll_s: float = 0.2) -> bool:
        """Add ``item`` once there is room; ``False`` (not added) if ``stop`` is set first."""
        while not stop.is_set():
            try:
                self._queue.put(item, timeout=poll_s)
                return True
            except Full:
                continue
        return False

    def get(self, timeout_s: float) -> T | None:
        """The oldest item, or ``None`` if none arrives within ``timeout_s``."""
        try:
            return self._queue.get(timeout=timeout_s)
        except Empty:
            return None

    def qsize(self) -> int:
        return self._queue.qsize()
