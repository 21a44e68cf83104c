"""Alarm semantics as pure state machines: fed with ``(event, time)``, they return signals.

No clock is read here. The agent feeds each machine the readings of one source with the
time they arrived and calls :meth:`tick` once a second with the current time, so tests
drive the same code with an injected clock:

>>> m = SmokeAlarm(AlarmSettings(reaffirm_s=300, debounce_s=30), started_at=0.0)
>>> [s.reason for s in m.on_reading(SmokeReading(alarm=True), at=10.0)]
['rising']
>>> [s.reason for s in m.tick(310.0)]
['reaffirm']

Rules (smoke):
- the rising edge of an alarm is reported at once; while it stays active it is re-affirmed
  every ``reaffirm_s``;
- an alarm that clears and returns within ``debounce_s`` is the same alarm (flapping is
  not a new detection), so its re-affirm schedule carries on;
- a self-test (``test: true``) is reported once per test, flagged ``test``, and never
  touches the real alarm state;
- in alarm for ``stuck_after_s`` without clearing: one ``sensor_stuck``;
- no reading at all for ``silent_after_s``: one ``sensor_silent`` (re-armed by a reading).

Doors: ``door_forced`` at once (repeats within ``debounce_s`` are one), ``door_held_open``
when open longer than the limit (re-affirmed every ``reaffirm_s`` while open), and
``invalid_card_burst`` when ``count`` invalid cards fall within ``window_s``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from edge.config import AlarmSettings, InvalidCardBurst

# Kinds this module emits beyond the built-in ones (the centre's default policy sends
# unknown kinds to operator review).
KIND_SMOKE = "smoke"
KIND_STUCK = "sensor_stuck"
KIND_SILENT = "sensor_silent"
KIND_DOOR_FORCED = "door_forced"
KIND_DOOR_HELD_OPEN = "door_held_open"
KIND_INVALID_CARD_BURST = "invalid_card_burst"


@dataclass(frozen=True, slots=True)
class Signal:
    """Something worth a detection.

    Attributes:
        kind: the detection kind (``smoke``, ``door_forced``, ``sensor_silent`` ...).
        reason: ``rising``, ``reaffirm``, ``self_test``, ``stuck``, ``silent``, ``burst``.
        at: the event time (seconds since the epoch, the clock the machine was fed).
        test: a sensor self-test (``attributes.test``).
        active_since: when the alarm episode began (for re-affirmations and stuck reports).
        details: extra attributes for the detection (battery, tamper, counts).
    """

    kind: str
    reason: str
    at: float
    test: bool = False
    active_since: float | None = None
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SmokeReading:
    """One decoded message of a smoke sensor; ``None`` means "not in this message"."""

    alarm: bool | None = None
    test: bool = False
    battery_low: bool | None = None
    tamper: bool | None = None
    linkquality: int | None = None


class SmokeAlarm:
    """Rising edge, re-affirm, debounce, self-test, stuck and silent for one smoke sensor."""

    def __init__(self, settings: AlarmSettings, *, started_at: float) -> None:
        self.settings = settings
        self.active = False
        self.active_since: float | None = None
        self.cleared_at: float | None = None
        self.last_seen = started_at
        self._next_reaffirm: float | None = None
        self._testing = False
        self._last_test_at: float | None = None
        self._stuck_reported = False
        self._silent_reported = False
        self.last_reading: SmokeReading | None = None

    def _details(self) -> dict[str, object]:
        r = self.last_reading
        if r is None:
            return {}
        out: dict[str, object] = {}
        if r.battery_low is not None:
            out["battery_low"] = r.battery_low
        if r.tamper is not None:
            out["tamper"] = r.tamper
        if r.linkquality is not None:
            out["linkquality"] = r.linkquality
        return out

    def on_reading(self, reading: SmokeReading, *, at: float) -> list[Signal]:
        """Feed one reading that arrived at ``at``; returns the signals it causes."""
        self.last_seen = at
        self._silent_reported = False
        self.last_reading = reading
        out: list[Signal] = []
        if reading.test:
            recent = (self._last_test_at is not None
                      and at - self._last_test_at < self.settings.debounce_s)
            if not self._testing and not recent:
                out.append(Signal(KIND_SMOKE, "self_test", at, test=True, details=self._details()))
            self._testing = True
            self._last_test_at = at
            return out + self.tick(at)
        self._testing = False
        if reading.alarm is True and not self.active:
            flapping = (self.cleared_at is not None
                        and at - self.cleared_at < self.settings.debounce_s
                        and self.active_since is not None)
            self.active = True
            self.cleared_at = None
            if not flapping:
                self.active_since = at
                self._next_reaffirm = at + self.settings.reaffirm_s
                self._stuck_reported = False
                out.append(Signal(KIND_SMOKE, "rising", at, active_since=at,
                                  details=self._details()))
        elif reading.alarm is False and self.active:
            self.active = False
            self.cleared_at = at
        return out + self.tick(at)

    def tick(self, now: float) -> list[Signal]:
        """Advance time to ``now``: re-affirmations, stuck and silent reports."""
        out: list[Signal] = []
        s = self.settings
        if (not self.active and self.cleared_at is not None
                and now - self.cleared_at >= s.debounce_s):
            # the episode is over: the next alarm is a new rising edge
            self.active_since = None
            self._next_reaffirm = None
        if self.active and self._next_reaffirm is not None and now >= self._next_reaffirm:
            out.append(Signal(KIND_SMOKE, "reaffirm", now, active_since=self.active_since,
                              details=self._details()))
            self._next_reaffirm = now + s.reaffirm_s
        if (self.active and s.stuck_after_s is not None and not self._stuck_reported
                and self.active_since is not None and now - self.active_since >= s.stuck_after_s):
            self._stuck_reported = True
            out.append(Signal(KIND_STUCK, "stuck", now, active_since=self.active_since,
                              details={"in_alarm_s": round(now - self.active_since, 3)}))
        if (s.silent_after_s is not None and not self._silent_reported
                and now - self.last_seen >= s.silent_after_s):
            self._silent_reported = True
            out.append(Signal(KIND_SILENT, "silent", now,
                              details={"silent_s": round(now - self.last_seen, 3)}))
        return out


class DoorEvent(str, Enum):
    FORCED = "forced"
    OPENED = "opened"
    CLOSED = "closed"
    INVALID_CARD = "invalid_card"


class DoorMonitor:
    """Door forced, held open past a limit, and bursts of invalid cards for one door."""

    def __init__(
        self,
        *,
        held_open_limit_s: float,
        burst: InvalidCardBurst,
        reaffirm_s: float,
        debounce_s: float,
        silent_after_s: float | None,
        started_at: float,
    ) -> None:
        self.held_open_limit_s = held_open_limit_s
        self.burst = burst
        self.reaffirm_s = reaffirm_s
        self.debounce_s = debounce_s
        self.silent_after_s = silent_after_s
        self.last_seen = started_at
        self.open_since: float | None = None
        self._held_next: float | None = None
        self._last_forced: float | None = None
        self._invalid: deque[float] = deque()
        self._silent_reported = False

    def on_event(self, event: DoorEvent, *, at: float, test: bool = False) -> list[Signal]:
        """Feed one controller event that happened at ``at``."""
        self.last_seen = at
        self._silent_reported = False
        out: list[Signal] = []
        if test:
            # a controller self-test is reported, flagged, and changes no state
            kind = {DoorEvent.FORCED: KIND_DOOR_FORCED, DoorEvent.OPENED: KIND_DOOR_HELD_OPEN,
                    DoorEvent.INVALID_CARD: KIND_INVALID_CARD_BURST}.get(event)
            if kind is not None:
                out.append(Signal(kind, "self_test", at, test=True))
            return out
        if event is DoorEvent.FORCED:
            if self._last_forced is None or at - self._last_forced >= self.debounce_s:
                out.append(Signal(KIND_DOOR_FORCED, "rising", at, active_since=at))
            self._last_forced = at
            if self.open_since is None:
                self.open_since = at
                self._held_next = at + self.held_open_limit_s
        elif event is DoorEvent.OPENED:
            if self.open_since is None:
                self.open_since = at
                self._held_next = at + self.held_open_limit_s
        elif event is DoorEvent.CLOSED:
            self.open_since = None
            self._held_next = None
        elif event is DoorEvent.INVALID_CARD:
            self._invalid.append(at)
            while self._invalid and at - self._invalid[0] > self.burst.window_s:
                self._invalid.popleft()
            if len(self._invalid) >= self.burst.count:
                out.append(Signal(KIND_INVALID_CARD_BURST, "burst", at,
                                  active_since=self._invalid[0],
                                  details={"invalid_cards": len(self._invalid),
                                           "window_s": self.burst.window_s}))
                self._invalid.clear()
        return out + self.tick(at)

    def tick(self, now: float) -> list[Signal]:
        """Advance time to ``now``: held-open reports and silence."""
        out: list[Signal] = []
        if self.open_since is not None and self._held_next is not None and now >= self._held_next:
            first = self._held_next - self.open_since <= self.held_open_limit_s
            out.append(Signal(KIND_DOOR_HELD_OPEN, "rising" if first else "reaffirm", now,
                              active_since=self.open_since,
                              details={"open_s": round(now - self.open_since, 3),
                                       "limit_s": self.held_open_limit_s}))
            self._held_next = now + self.reaffirm_s
        if (self.silent_after_s is not None and not self._silent_reported
                and now - self.last_seen >= self.silent_after_s):
            self._silent_reported = True
            out.append(Signal(KIND_SILENT, "silent", now,
                              details={"silent_s": round(now - self.last_seen, 3)}))
        return out
