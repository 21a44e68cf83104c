"""The encoded-page cache: an entry is served only at the version it was stored under;
least recently used entries go first; size 0 is off."""

from __future__ import annotations

import pytest

from ticketing.api.pagecache import PageCache


def test_an_entry_is_served_only_at_its_version() -> None:
    cache = PageCache(4)
    cache.put("a", 7, b"page")
    assert cache.get("a", 7) == b"page"
    assert cache.get("a", 8) is None
    assert cache.get("b", 7) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_least_recently_used_goes_first() -> None:
    cache = PageCache(2)
    cache.put("a", 1, b"A")
    cache.put("b", 1, b"B")
    assert cache.get("a", 1) == b"A"  # b is now the oldest
    cache.put("c", 1, b"C")
    assert (cache.get("a", 1), cache.get("b", 1), cache.get("c", 1)) == (b"A", None, b"C")


def test_size_zero_is_off_and_negative_is_refused() -> None:
    off = PageCache(0)
    off.put("a", 1, b"A")
    assert off.get("a", 1) is None
    with pytest.raises(ValueError, match="expected max_entries >= 0, got -1"):
        PageCache(-1)
