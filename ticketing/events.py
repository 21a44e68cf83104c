"""Live updates: ticket changes fanned out to server-sent-event subscribers.

:class:`LocalBus` fans out inside one process. :class:`RedisBus` publishes every change
to a Redis channel and each replica's subscriber task feeds its own local subscribers, so
a change made through replica A reaches an SSE client connected to replica B.

``publish`` may be called from any thread (store listeners run in the writer's thread);
subscribers are asyncio queues on the API's event loop. A slow subscriber whose queue is
full loses the oldest message, never blocks the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ticketing.changelog import change_message

log = logging.getLogger(__name__)

CHANNEL = "gridwatch:tickets"

__all__ = ["CHANNEL", "EventBus", "LocalBus", "RedisBus", "change_message"]


class EventBus(Protocol):
    def publish(self, message: dict[str, Any]) -> None: ...
    def subscribe(self, maxsize: int = ...) -> contextlib.AbstractAsyncContextManager[
        asyncio.Queue[dict[str, Any]]]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class LocalBus:
    """In-process fan-out."""

    def __init__(self) -> None:
        self._subscribers: set[tuple[asyncio.AbstractEventLoop,
                                     asyncio.Queue[dict[str, Any]]]] = set()
        self._lock = threading.Lock()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, message: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_offer, queue, message)

    @contextlib.asynccontextmanager
    async def subscribe(self, maxsize: int = 1000) -> AsyncIterator[
            asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        entry = (asyncio.get_running_loop(), queue)
        with self._lock:
            self._subscribers.add(entry)
        try:
            yield queue
        finally:
            with self._lock:
                self._subscribers.discard(entry)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def _offer(queue: asyncio.Queue[dict[str, Any]], message: dict[str, Any]) -> None:
    if queue.full():
        queue.get_nowait()  # drop the oldest; the client can re-read /tickets
    queue.put_nowait(message)


class RedisBus:
    """Fan-out across replicas through Redis pub/sub.

    Args:
        url: ``redis://host:port/db``.
        channel: the pub/sub channel shared by all replicas.
    """

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        import redis

        self.url = url
        self.channel = channel
        self.local = LocalBus()
        self._publisher = redis.Redis.from_url(url)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def publish(self, message: dict[str, Any]) -> None:
        try:
            self._publisher.publish(self.channel, json.dumps(message, sort_keys=True))
        except Exception:  # the change is committed; a lost live update is re-read
            log.exception("could not publish %s to Redis %s", message.get("id"), self.url)

    def subscribe(self, maxsize: int = 1000) -> contextlib.AbstractAsyncContextManager[
            asyncio.Queue[dict[str, Any]]]:
        return self.local.subscribe(maxsize)

    async def start(self) -> None:
        """Start the subscriber task; returns once it listens."""
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._publisher.close()

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        while True:
            client = aioredis.Redis.from_url(self.url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        try:
                            self.local.publish(json.loads(message["data"]))
                        except ValueError:
                            log.warning("ignored a malformed message on %s", self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Redis subscriber for %s failed; reconnecting", self.channel)
                await asyncio.sleep(1.0)
            finally:
                await client.aclose()
