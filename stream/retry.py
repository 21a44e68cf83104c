"""The retry-until-stored back-off, one policy for every runtime.

A ticket store that cannot write (disk full, database restarting) is retried with the same
work until it can, waiting ``first_s``, then twice as long each time up to ``max_s``. The
embedded service (``gridwatch.pipeline``) and the scale-out agents (``stream.faust_app``)
both take their waits from :class:`Backoff`; which errors count as "cannot write right now"
is the ticket side's business (``gridwatch.pipeline.STORE_UNAVAILABLE``).

Example:
    >>> waits = Backoff(first_s=0.5, max_s=2.0).delays()
    >>> [next(waits) for _ in range(4)]
    [0.5, 1.0, 2.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off: ``first_s``, doubling, capped at ``max_s`` (seconds)."""

    first_s: float = 0.5
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError(f"expected 0 < first_s <= max_s, got first_s={self.first_s}, "
                             f"max_s={self.max_s}")

    def delays(self) -> Iterator[float]:
        """The waits before each retry, without end."""
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)
