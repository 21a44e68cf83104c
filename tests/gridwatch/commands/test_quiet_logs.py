"""The repeated-broker-error filter of ``gridwatch worker`` and ``gridwatch bridge``."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from gridwatch.commands.quiet_logs import RepeatedErrors, install


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def logged(clock: FakeClock) -> Iterator[tuple[io.StringIO, logging.Handler]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RepeatedErrors(30.0, clock=clock))
    loggers = [logging.getLogger(n) for n in ("aiokafka.conn", "aiokafka.consumer.fetcher",
                                              "stream.faust_app")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    try:
        yield out, handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.propagate = True
            logger.setLevel(level)


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_reconnect_loop_logs_once_then_one_summary_per_period(
        logged: tuple[io.StringIO, logging.Handler], clock: FakeClock) -> None:
    out, _ = logged
    conn = logging.getLogger("aiokafka.conn")
    # ~70 a second for 10 s, the node id and errno varying as in aiokafka's loop
    for n in range(700):
        clock.now += 1 / 70
        conn.error("Unable connect to node with id %s: %s", n % 3, "[Errno 111]")
    assert lines(out) == ["ERROR aiokafka.conn Unable connect to node with id 0: [Errno 111]"]
    for _ in range(400):  # on to 40 s in all
        clock.now += 30 / 400
        conn.error("Unable connect to node with id %s: %s", 1, "[Errno 111]")
    assert len(lines(out)) == 2
    assert lines(out)[1].startswith("ERROR aiokafka.conn Unable connect to node with id 1: "
                                    "[Errno 111] [repeated ")
    assert lines(out)[1].endswith(" times in the last 30 s]")
    held = int(lines(out)[1].split("[repeated ")[1].split()[0])
    assert 1 + held + 1 <= 1100  # the first, the held back, the summary's own


def test_each_message_has_its_own_count_and_other_loggers_pass(
        logged: tuple[io.StringIO, logging.Handler], clock: FakeClock) -> None:
    out, _ = logged
    for _ in range(50):
        clock.now += 0.01
        logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s", 1)
        logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch messages from %s",
                                                              1)
        logging.getLogger("aiokafka.conn").info("Closing connection %s", 1)  # below WARNING
        logging.getLogger("stream.faust_app").error("ours: %s", "never held back")
    text = lines(out)
    assert text.count("ERROR aiokafka.conn Unable connect to node with id 1") == 1
    assert text.count("ERROR aiokafka.consumer.fetcher Failed fetch messages from 1") == 1
    assert text.count("ERROR stream.faust_app ours: never held back") == 50
    assert text.count("INFO aiokafka.conn Closing connection 1") == 50


def test_one_filter_on_two_handlers_judges_each_record_once(clock: FakeClock) -> None:
    outs = [io.StringIO(), io.StringIO()]
    root = logging.getLogger("quiet-test-root")
    root.propagate = False
    quiet = install(30.0, root)  # no handlers yet: nothing to install on
    assert quiet.suppressed == 0
    handlers = [logging.StreamHandler(o) for o in outs]
    for handler in handlers:
        root.addHandler(handler)
    quiet = install(30.0, root)
    quiet.clock = clock
    quiet.loggers = ("quiet-test-root",)
    try:
        for _ in range(10):
            root.warning("Heartbeat failed for group %s", "g")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
    assert [o.getvalue() for o in outs] == ["Heartbeat failed for group g\n"] * 2
    assert quiet.suppressed == 9


def test_the_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="expected every_s > 0, got 0"):
        RepeatedErrors(0)
