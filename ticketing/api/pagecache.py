"""Encoded ``GET /tickets`` pages, reused while no ticket has changed.

Every ticket write appends to the change log in its own transaction (see
:mod:`ticketing.changelog`), so the log's newest ``seq`` is a version of the whole ticket
table that every replica reads alike. A page is cached under the version read *before*
the page was read: a write that commits in between makes the version move on, so the
entry is never served again (it may hold newer data than its version, never older).
Pages that depend on the clock (``overdue=``) are not cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class PageCache:
    """A small LRU of ``key -> (version, body)``; ``max_entries=0`` turns it off."""

    def __init__(self, max_entries: int = 256) -> None:
        if max_entries < 0:
            raise ValueError(f"expected max_entries >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, version: int) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, version: int, body: bytes) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._entries[key] = (version, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
