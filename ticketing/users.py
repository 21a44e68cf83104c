"""Named user accounts: people, their passwords and their API tokens.

Accounts live in the ticket database (SQLite or PostgreSQL; the tables of migration 5),
next to the tickets whose audit log names them. Manage them with ``gridwatch users ...``
(see ``docs/api.md``); the API signs people in with :mod:`ticketing.login`.

* A password is kept only as its argon2id hash (pwdlib); a login with a password hashed
  under older parameters is re-hashed with the current ones.
* An API token (for a person's scripts) is random, shown once and kept only as its
  SHA-256; it works as ``Authorization: Bearer <token>`` with its owner's role until it
  is revoked or its owner is disabled.
* Roles of people: ``operator``, ``supervisor``, ``department`` (tied to one department)
  and ``admin``. Machines (``ingest``, ``integrator``) keep their environment tokens
  (:mod:`ticketing.auth`).

>>> from ticketing.store import SqliteTicketStore
>>> from datetime import UTC, datetime
>>> users = UserStore(SqliteTicketStore(":memory:"))
>>> alice = users.add(username="alice", password="correct horse battery",
...                   role=Role.OPERATOR, display_name="Alice Wong",
...                   now=datetime(2026, 5, 4, tzinfo=UTC))
>>> users.verify("alice", "correct horse battery").display_name
'Alice Wong'
>>> users.verify("alice", "wrong password") is None
True
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import bindparam, text
from sqlalchemy.exc import IntegrityError

from ticketing.auth import PERSON_ROLES, Principal, Role
from ticketing.departments import Department, check_department
from ticketing.engine import from_sortable, sortable
from ticketing.store import SqlTicketStore

USERNAME_RE = re.compile(r"[a-z][a-z0-9._-]{1,63}")
DEPARTMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# names the audit log already uses for machines and environment tokens
RESERVED_USERNAMES = frozenset({r.value for r in Role} | {"anonymous", "system", "pipeline"})
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
MAX_DISPLAY_NAME_LENGTH = 120
TOKEN_PREFIX = "gwu_"  # tells a person's token from an environment token without a lookup

USER_COLUMNS = ("u.id, u.username, u.display_name, u.role, u.department, u.created_at,"
                " u.disabled_at, u.auth_epoch")
_USER = text(f"SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = :name")
_TOKEN_USER = text(
    f"SELECT {USER_COLUMNS} FROM user_tokens t JOIN users u ON u.id = t.user_id"
    " WHERE t.token_sha256 = :digest AND t.revoked_at IS NULL AND u.disabled_at IS NULL")
_DISPLAY_NAMES = text("SELECT username, display_name FROM users WHERE username IN :names"
                      ).bindparams(bindparam("names", expanding=True))


class UnknownUser(LookupError):
    """No account has this username (or no such token of this user)."""

    def __str__(self) -> str:
        return str(self.args[0])


class UserExists(ValueError):
    """An account with this username exists already."""


def digest(secret: str) -> str:
    """How a random secret (API token, session cookie) is stored: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class User:
    """An account as callers see it (never with its password hash)."""

    user_id: int
    username: str
    display_name: str
    role: Role
    department: str | None
    created_at: datetime
    disabled_at: datetime | None
    auth_epoch: int

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def principal(self) -> Principal:
        """The caller this person is in the API (the audit log records ``username``)."""
        return Principal(self.username, self.role, self.department,
                         display_name=self.display_name, user_id=self.user_id)


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A person's API token as listed (the token itself is shown only when issued)."""

    token_id: int
    username: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


def user_from_row(row: Any) -> User:
    """A :class:`User` from a row selected with :data:`USER_COLUMNS`."""
    return User(user_id=int(row.id), username=row.username, display_name=row.display_name,
                role=Role(row.role), department=row.department,
                created_at=from_sortable(row.created_at),
                disabled_at=from_sortable(row.disabled_at) if row.disabled_at else None,
                auth_epoch=int(row.auth_epoch))


def check_username(username: str) -> str:
    """``username`` if it is a valid new account name.

    Raises:
        ValueError: saying what a username must look like.
    """
    if not USERNAME_RE.fullmatch(username):
        raise ValueError(f"expected a username of 2-64 characters: a lowercase letter, "
                         f"then lowercase letters, digits, '.', '_' or '-'; got {username!r}")
    if username in RESERVED_USERNAMES:
        raise ValueError(f"expected a username other than {sorted(RESERVED_USERNAMES)} "
                         f"(the audit log uses those for machines), got {username!r}")
    return username


def check_password(password: str, *, username: str) -> None:
    """Raises ValueError for a password that is too short, too long or the username."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"expected a password of at least {MIN_PASSWORD_LENGTH} "
                         f"characters, got {len(password)}")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"expected a password of at most {MAX_PASSWORD_LENGTH} "
                         f"characters, got {len(password)}")
    if password.strip().lower() == username:
        raise ValueError("expected a password other than the username")


def check_role(role: Role | str, department: str | None, *,
               departments: Mapping[str, Department] | None = None
               ) -> tuple[Role, str | None]:
    """The role and department of a person's account.

    Args:
        departments: the registry (``ticketing.departments``); when given, a department
            must be one of its ids.

    Raises:
        ValueError: a role people may not have, or a department missing (role
            ``department``), given for another role, malformed or not registered.
    """
    valid = [r.value for r in PERSON_ROLES]
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"expected a role in {valid}, got {role!r}") from None
    if role not in PERSON_ROLES:
        raise ValueError(f"expected a role in {valid} (role {role.value} is for machines: "
                         f"an environment token, see GRIDWATCH_API_TOKENS), got {role.value!r}")
    if role is Role.DEPARTMENT:
        if not department:
            raise ValueError("expected a department for role department "
                             "(the department whose tickets this person handles)")
        if not DEPARTMENT_RE.fullmatch(department):
            raise ValueError(f"expected a department name of letters, digits, '_', '.' or "
                             f"'-', got {department!r}")
        if departments is not None:
            check_department(department, departments)  # names the valid ids
    elif department is not None:
        raise ValueError(f"expected no department for role {role.value} (it sees every "
                         f"department), got {department!r}")
    return role, department


def check_display_name(display_name: str) -> str:
    name = display_name.strip()
    if not name or len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise ValueError(f"expected a display name of 1-{MAX_DISPLAY_NAME_LENGTH} "
                         f"characters, got {len(name)}")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ValueError("expected a display name without control characters")
    return name


def default_hasher() -> PasswordHash:
    """argon2id with argon2-cffi's default cost (about 60-90 ms per hash on one core)."""
    return PasswordHash((Argon2Hasher(),))


class UserStore:
    """Accounts in the database of ``store`` (the same engine and transactions).

    Args:
        store: the ticket store whose database holds the accounts.
        hasher: password hashing (default: :func:`default_hasher`).
        departments: the department registry; department staff must belong to one of
            its departments (None: any well-formed id).
    """

    def __init__(self, store: SqlTicketStore, *, hasher: PasswordHash | None = None,
                 departments: Mapping[str, Department] | None = None) -> None:
        self.db = store
        self.departments = departments
        self.hasher = hasher or default_hasher()
        self._unknown_hash: str | None = None

    # -- accounts -------------------------------------------------------------------
    def add(self, *, username: str, password: str, role: Role | str,
            department: str | None = None, display_name: str | None = None,
            now: datetime) -> User:
        """Create an account.

        Raises:
            ValueError: an invalid username, password, role, department or display name.
            UserExists: the username is taken.
        """
        username = check_username(username)
        role, department = check_role(role, department, departments=self.departments)
        check_password(password, username=username)
        display = check_display_name(display_name if display_name is not None else username)
        hashed = self.hasher.hash(password)
        at = sortable(now)
        try:
            with self.db.transaction() as conn:
                conn.execute(text(
                    "INSERT INTO users (username, display_name, role, department,"
                    " password_hash, auth_epoch, created_at, updated_at)"
                    " VALUES (:u, :d, :r, :dep, :h, 1, :at, :at)"),
                    {"u": username, "d": display, "r": role.value, "dep": department,
                     "h": hashed, "at": at})
        except IntegrityError:
            raise UserExists(f"user {username!r} exists already") from None
        return self.require(username)

    def get(self, username: str) -> User | None:
        with self.db.connection() as conn:
            row = conn.execute(_USER, {"name": username}).first()
        return user_from_row(row) if row is not None else None

    def require(self, username: str) -> User:
        """The account, or :class:`UnknownUser`."""
        user = self.get(username)
        if user is None:
            raise UnknownUser(f"no user {username!r}")
        return user

    def list(self) -> builtins.list[User]:
        """Every account, by username."""
        with self.db.connection() as conn:
            rows = conn.execute(text(f"SELECT {USER_COLUMNS} FROM users u"
                                     " ORDER BY u.username")).fetchall()
        return [user_from_row(r) for r in rows]

    def set_disabled(self, username: str, disabled: bool, *, now: datetime) -> User:
        """Disable (its sessions and tokens stop working at once) or enable an account.
        Enabling does not bring back the sessions it had."""
        with self.db.transaction() as conn:
            found = conn.execute(text(
                "UPDATE users SET disabled_at = :off, updated_at = :at,"
                " auth_epoch = auth_epoch + :bump WHERE username = :u"),
                {"off": sortable(now) if disabled else None, "at": sortable(now),
                 "bump": 1 if disabled else 0, "u": username}).rowcount
        if not found:
            raise UnknownUser(f"no user {username!r}")
        return self.require(username)

    def set_password(self, username: str, password: str, *, now: datetime) -> User:
        """A new password; the account's sessions end (its API tokens keep working)."""
        check_password(password, username=username)
        hashed = self.hasher.hash(password)
        with self.db.transaction() as conn:
            found = conn.execute(text(
                "UPDATE users SET password_hash = :h, updated_at = :at,"
                " auth_epoch = auth_epoch + 1 WHERE username = :u"),
                {"h": hashed, "at": sortable(now), "u": username}).rowcount
        if not found:
            raise UnknownUser(f"no user {username!r}")
        return self.require(username)

    def verify(self, username: str, password: str) -> User | None:
        """The active account with this username and password, else None.

        An unknown username costs one hash too, so timing does not tell which names
        exist.
        """
        with self.db.connection() as conn:
            row = conn.execute(_USER, {"name": username}).first()
        if row is None:
            if self._unknown_hash is None:
                self._unknown_hash = self.hasher.hash(secrets.token_urlsafe(16))
            self.hasher.verify(password, self._unknown_hash)
            return None
        valid, updated = self.hasher.verify_and_update(password, row.password_hash)
        if not valid or row.disabled_at is not None:
            return None
        if updated is not None:  # hashed with older parameters: store the current kind
            with self.db.transaction() as conn:
                conn.execute(text("UPDATE users SET password_hash = :h WHERE id = :id"
                                  " AND password_hash = :old"),
                             {"h": updated, "id": row.id, "old": row.password_hash})
        return user_from_row(row)

    def display_names(self, usernames: Iterable[str]) -> dict[str, str]:
        """username → display name, for those of ``usernames`` that are accounts."""
        names = sorted({n for n in usernames if USERNAME_RE.fullmatch(n)})
        if not names:
            return {}
        with self.db.connection() as conn:
            return {r.username: r.display_name
                    for r in conn.execute(_DISPLAY_NAMES, {"names": names})}

    # -- API tokens -----------------------------------------------------------------
    def issue_token(self, username: str, *, label: str, now: datetime) -> tuple[ApiToken, str]:
        """A new API token for an active account: ``(its record, the token)``. The
        token is not stored (only its SHA-256): show it to the person once.

        Raises:
            UnknownUser: no such account.
            ValueError: the account is disabled, or the label is empty or too long.
        """
        label = label.strip()
        if not label or len(label) > 120:
            raise ValueError(f"expected a token label of 1-120 characters, got {len(label)}")
        user = self.require(username)
        if not user.active:
            raise ValueError(f"user {username!r} is disabled; enable it before issuing "
                             f"tokens")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.transaction() as conn:
            token_id = conn.execute(text(
                "INSERT INTO user_tokens (user_id, token_sha256, label, created_at)"
                " VALUES (:uid, :digest, :label, :at) RETURNING id"),
                {"uid": user.user_id, "digest": digest(token), "label": label,
                 "at": sortable(now)}).scalar_one()
        return ApiToken(int(token_id), username, label, now, None), token

    def tokens(self, username: str) -> builtins.list[ApiToken]:
        """The account's tokens (revoked ones too), oldest first."""
        user = self.require(username)
        with self.db.connection() as conn:
            rows = conn.execute(text(
                "SELECT id, label, created_at, revoked_at FROM user_tokens"
                " WHERE user_id = :uid ORDER BY id"), {"uid": user.user_id}).fetchall()
        return [ApiToken(int(r.id), username, r.label, from_sortable(r.created_at),
                         from_sortable(r.revoked_at) if r.revoked_at else None) for r in rows]

    def revoke_token(self, username: str, token_id: int, *, now: datetime) -> ApiToken:
        """Revoke one of the account's tokens (it stops working at once).

        Raises:
            UnknownUser: no such account, or no token ``token_id`` of it.
            ValueError: revoked already.
        """
        for token in self.tokens(username):
            if token.token_id == token_id:
                break
        else:
            raise UnknownUser(f"user {username!r} has no token {token_id}")
        if token.revoked_at is not None:
            raise ValueError(f"token {token_id} of {username!r} was revoked already")
        with self.db.transaction() as conn:
            conn.execute(text("UPDATE user_tokens SET revoked_at = :at WHERE id = :id"
                              " AND revoked_at IS NULL"), {"at": sortable(now), "id": token_id})
        return ApiToken(token.token_id, username, token.label, token.created_at, now)

    def principal_for_token(self, token: str) -> Principal | None:
        """The caller for a person's API token; None for an unknown or revoked token or a
        disabled account (and, without a lookup, for a token that is not a person's)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self.db.connection() as conn:
            row = conn.execute(_TOKEN_USER, {"digest": digest(token)}).first()
        return user_from_row(row).principal() if row is not None else None

