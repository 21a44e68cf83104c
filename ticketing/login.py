"""Console sign-in: a password login opens a server-side session; failed logins are
throttled per username and per client address.

The session's cookie value is random and kept only as its SHA-256 (``user_sessions``);
each session has its own CSRF token, which a cookie-authenticated change must send back
in the ``X-CSRF-Token`` header (the API checks it, :mod:`ticketing.api.deps`). A session
ends at ``expires_at``, at logout, when its account is disabled and when its password is
reset (the account's ``auth_epoch`` moves on).

The throttle counts every failed login in ``login_throttle``, one row per username and
per client address, in the same database (so every API replica sees the same counts):

* an attempt is counted as a failure before its password is checked (so concurrent
  guesses cannot overrun the quota) and un-counted when it succeeds;
* after ``max_failures_per_user`` failures for a username, or ``max_failures_per_address``
  from an address, within ``failure_window_s``, attempts there are refused with
  :class:`Throttled` for ``lockout_s`` (a refused attempt is not checked nor counted);
* a successful login clears its username's count (not its address's); a count starts
  again when its window or its lockout has passed.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, text

from ticketing.auth import Principal
from ticketing.config import AuthSettings
from ticketing.engine import from_sortable, sortable
from ticketing.users import USER_COLUMNS, User, UserStore, digest, user_from_row

SESSION_COOKIE = "gridwatch_session"
CSRF_HEADER = "X-CSRF-Token"

_SESSION = text(
    f"SELECT s.csrf_token, s.created_at, s.expires_at, {USER_COLUMNS}"
    " FROM user_sessions s JOIN users u ON u.id = s.user_id"
    " WHERE s.session_sha256 = :digest AND s.expires_at > :now"
    " AND u.disabled_at IS NULL AND u.auth_epoch = s.auth_epoch")
_ENSURE_COUNTER = text(
    "INSERT INTO login_throttle (throttle_key, failures, window_start, locked_until,"
    " updated_at) VALUES (:k, 0, :at, NULL, :at) ON CONFLICT (throttle_key) DO NOTHING")
_SET_COUNTER = text(
    "UPDATE login_throttle SET failures = :f, window_start = :w, locked_until = :lock,"
    " updated_at = :at WHERE throttle_key = :k")


class Throttled(Exception):
    """Too many failed logins: refused for ``retry_after_s`` more seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class LoginFailed(Exception):
    """Wrong username or password, or a disabled account (one answer for all three)."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in person's session (as found from its cookie)."""

    user: User
    csrf_token: str
    created_at: datetime
    expires_at: datetime

    @property
    def principal(self) -> Principal:
        return self.user.principal()


@dataclass(frozen=True, slots=True)
class NewSession:
    cookie: str  # the cookie's value; only its SHA-256 is stored
    session: Session


class Logins:
    """Sign-in over the accounts of ``users`` with the throttle of ``settings``."""

    def __init__(self, users: UserStore, settings: AuthSettings) -> None:
        self.users = users
        self.settings = settings
        self._for_update = " FOR UPDATE" if users.db.dialect == "postgresql" else ""

    def _limits(self, username: str, address: str) -> list[tuple[str, int]]:
        return sorted([(f"user:{username}", self.settings.max_failures_per_user),
                       (f"addr:{address}", self.settings.max_failures_per_address)])

    def login(self, *, username: str, password: str, address: str,
              now: datetime) -> NewSession:
        """Check the password and open a session.

        Args:
            username: as typed (compared in lowercase).
            address: the client's address (the throttle's second key).

        Raises:
            Throttled: too many failed logins for this username or from this address.
            LoginFailed: wrong username or password, or a disabled account.
        """
        name = username.strip().lower()[:128]
        limits = self._limits(name, address)
        with self.users.db.transaction() as conn:
            self._forget_old(conn, now)
        with self.users.db.transaction() as conn:
            retry_after = self._reserve(conn, limits, now)
        if retry_after is not None:
            raise Throttled(retry_after)
        user = self.users.verify(name, password)
        new: NewSession | None = None
        with self.users.db.transaction() as conn:
            if user is None:
                self._lock_full(conn, limits, now)
            else:
                self._succeeded(conn, limits)
                new = self._open(conn, user, now)
        if new is None:
            raise LoginFailed("wrong username or password")
        return new

    def session(self, cookie: str, *, now: datetime) -> Session | None:
        """The live session of a cookie value, else None."""
        with self.users.db.connection() as conn:
            row = conn.execute(_SESSION, {"digest": digest(cookie),
                                          "now": sortable(now)}).first()
        if row is None:
            return None
        return Session(user=user_from_row(row), csrf_token=row.csrf_token,
                       created_at=from_sortable(row.created_at),
                       expires_at=from_sortable(row.expires_at))

    def logout(self, cookie: str) -> bool:
        """End the session of a cookie value; whether there was one."""
        with self.users.db.transaction() as conn:
            return bool(conn.execute(text("DELETE FROM user_sessions"
                                          " WHERE session_sha256 = :digest"),
                                     {"digest": digest(cookie)}).rowcount)

    def failures(self, *, username: str | None = None, address: str | None = None,
                 now: datetime) -> int:
        """The failed logins counted now for a username or an address (0 once its
        window or lockout is over)."""
        if (username is None) == (address is None):
            raise ValueError("expected exactly one of username and address")
        key = f"user:{username.strip().lower()}" if username is not None else f"addr:{address}"
        with self.users.db.connection() as conn:
            row = conn.execute(text("SELECT failures, window_start, locked_until"
                                    " FROM login_throttle WHERE throttle_key = :k"),
                               {"k": key}).first()
        if row is None or self._over(row, now):
            return 0
        return int(row.failures)

    # -- the throttle ---------------------------------------------------------------
    def _over(self, row: Any, now: datetime) -> bool:
        """Whether a counter's window or lockout has passed (it starts again)."""
        if row.locked_until is not None:
            return from_sortable(row.locked_until) <= now
        start = from_sortable(row.window_start)
        return start + timedelta(seconds=self.settings.failure_window_s) <= now

    def _forget_old(self, conn: Connection, now: datetime) -> None:
        """Drop counters whose window and lockout are over (own transaction; on
        PostgreSQL it skips rows others hold, so it never waits and never deadlocks)."""
        horizon = now - timedelta(seconds=max(self.settings.failure_window_s,
                                              self.settings.lockout_s))
        old = ("SELECT throttle_key FROM login_throttle WHERE updated_at <= :h"
               " AND (locked_until IS NULL OR locked_until <= :at)")
        if self._for_update:
            old += " FOR UPDATE SKIP LOCKED"
        conn.execute(text(f"DELETE FROM login_throttle WHERE throttle_key IN ({old})"),
                     {"h": sortable(horizon), "at": sortable(now)})

    def _reserve(self, conn: Connection, limits: list[tuple[str, int]],
                 now: datetime) -> int | None:
        """Count this attempt as a failure on every key, or say how long it must wait."""
        at = sortable(now)
        for key, _limit in limits:
            conn.execute(_ENSURE_COUNTER, {"k": key, "at": at})
        rows = {r.throttle_key: r for r in conn.execute(text(
            "SELECT throttle_key, failures, window_start, locked_until FROM login_throttle"
            " WHERE throttle_key IN :keys ORDER BY throttle_key" + self._for_update
        ).bindparams(bindparam("keys", expanding=True)), {"keys": [k for k, _ in limits]})}
        waits = [math.ceil((from_sortable(r.locked_until) - now).total_seconds())
                 for r in rows.values()
                 if r.locked_until is not None and from_sortable(r.locked_until) > now]
        if waits:
            return max(waits)
        counts = {k: (0, at) if self._over(rows[k], now)
                  else (int(rows[k].failures), rows[k].window_start) for k, _ in limits}
        # a quota already full of attempts still being checked by other requests
        if any(counts[k][0] >= limit for k, limit in limits):
            until = sortable(now + timedelta(seconds=self.settings.lockout_s))
            for key, limit in limits:
                failures, start = counts[key]
                conn.execute(_SET_COUNTER, {"k": key, "f": failures, "w": start,
                                            "lock": until if failures >= limit else None,
                                            "at": at})
            return self.settings.lockout_s
        for key, _limit in limits:
            failures, start = counts[key]
            conn.execute(_SET_COUNTER, {"k": key, "f": failures + 1, "w": start,
                                        "lock": None, "at": at})
        return None

    def _lock_full(self, conn: Connection, limits: list[tuple[str, int]],
                   now: datetime) -> None:
        until = sortable(now + timedelta(seconds=self.settings.lockout_s))
        for key, limit in limits:
            conn.execute(text("UPDATE login_throttle SET locked_until = :until,"
                              " updated_at = :at WHERE throttle_key = :k"
                              " AND failures >= :limit AND locked_until IS NULL"),
                         {"until": until, "at": sortable(now), "k": key, "limit": limit})

    def _succeeded(self, conn: Connection, limits: list[tuple[str, int]]) -> None:
        for key, _limit in limits:
            if key.startswith("user:"):
                conn.execute(text("DELETE FROM login_throttle WHERE throttle_key = :k"),
                             {"k": key})
            else:
                conn.execute(text("UPDATE login_throttle SET failures = failures - 1"
                                  " WHERE throttle_key = :k AND failures > 0"), {"k": key})

    # -- sessions -------------------------------------------------------------------
    def _open(self, conn: Connection, user: User, now: datetime) -> NewSession:
        conn.execute(text("DELETE FROM user_sessions WHERE expires_at <= :at"),
                     {"at": sortable(now)})
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + timedelta(seconds=self.settings.session_ttl_s)
        conn.execute(text(
            "INSERT INTO user_sessions (session_sha256, user_id, auth_epoch, csrf_token,"
            " created_at, expires_at) VALUES (:digest, :uid, :epoch, :csrf, :at, :until)"),
            {"digest": digest(cookie), "uid": user.user_id, "epoch": user.auth_epoch,
             "csrf": csrf, "at": sortable(now), "until": sortable(expires)})
        return NewSession(cookie, Session(user=user, csrf_token=csrf, created_at=now,
                                          expires_at=expires))
