"""Quiet retries: one line per repeated broker-connection error, then a summary per period.

While the Kafka broker is down, aiokafka's reconnect loops log the same few errors about
a hundred times a second ("Unable connect to node with id 1: ...", "Failed fetch
messages from 1: ..."). :class:`RepeatedErrors` passes the first occurrence of each such
message and then at most one line per ``every_s`` seconds, carrying how many were held
back::

    ... Unable connect to node with id 1: ... [repeated 412 times in the last 30 s]

``gridwatch worker`` and ``gridwatch bridge`` install it on the root logger's handlers
(:func:`install`); the period is ``log_repeat_s`` (``$GRIDWATCH_KAFKA_LOG_REPEAT_S``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

# the Kafka client's loggers: their repeated warnings and errors are the reconnect loops
BROKER_LOGGERS = ("aiokafka", "kafka")
_DECIDED = "_gridwatch_repeat_pass"  # the verdict on a record, shared by every handler


class RepeatedErrors(logging.Filter):
    """A handler filter that holds back repeats of a broker-connection message.

    A message is "the same" when it comes from the same logger at the same level with
    the same format string (its arguments — node id, errno — may differ). Records below
    ``level`` or from loggers outside ``loggers`` pass untouched. One instance may sit on
    several handlers: each record is judged once.

    Args:
        every_s: at most one line per message per this many seconds after the first.
        loggers: logger names (and their children) whose records are filtered.
        level: records below it pass untouched.
        clock: monotonic seconds (tests pass a fake).

    Example:
        >>> quiet = RepeatedErrors(every_s=30)
        >>> for handler in logging.getLogger().handlers:
        ...     handler.addFilter(quiet)
    """

    def __init__(self, every_s: float = 30.0, *, loggers: Iterable[str] = BROKER_LOGGERS,
                 level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if every_s <= 0:
            raise ValueError(f"expected every_s > 0, got {every_s}")
        self.every_s = every_s
        self.loggers = tuple(loggers)
        self.level = level
        self.clock = clock
        # per message: when a line last passed, and how many were held back since
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}
        self.suppressed = 0  # held back in all (for metrics and tests)

    def _watched(self, record: logging.LogRecord) -> bool:
        name = record.name
        return record.levelno >= self.level and any(
            name == prefix or name.startswith(prefix + ".") for prefix in self.loggers)

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, _DECIDED, None)
        if decided is not None:
            return bool(decided)
        verdict = self._judge(record)
        setattr(record, _DECIDED, verdict)
        return verdict

    def _judge(self, record: logging.LogRecord) -> bool:
        if not self._watched(record):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._last.get(key)
        if seen is None:
            self._last[key] = (now, 0)
            return True
        since, held = seen
        if now - since < self.every_s:
            self._last[key] = (since, held + 1)
            self.suppressed += 1
            return False
        self._last[key] = (now, 0)
        if held:
            # fold the arguments in first: the suffix must not be read as a format
            record.msg = (f"{record.getMessage()} [repeated {held} times in the last "
                          f"{now - since:.0f} s]")
            record.args = ()
        return True


def install(every_s: float, logger: logging.Logger | None = None) -> RepeatedErrors:
    """Put one :class:`RepeatedErrors` on every handler of ``logger`` (the root logger);
    returns it. Call after logging is configured."""
    quiet = RepeatedErrors(every_s)
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(quiet)
    return quiet
