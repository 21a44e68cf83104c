"""Roles, the caller (:class:`Principal`) and the machine tokens from the environment.

People sign in with named accounts (:mod:`ticketing.users`: a password for the console's
session, per-person API tokens for scripts); machines and the break-glass admin use the
tokens here. Secrets come only from the environment (CONVENTIONS 7).

``GRIDWATCH_API_TOKENS`` holds comma-separated ``ROLE[/DEPARTMENT]:TOKEN`` entries, and
``GRIDWATCH_ADMIN_TOKEN`` one admin token::

    export GRIDWATCH_ADMIN_TOKEN=$(openssl rand -hex 24)
    export GRIDWATCH_API_TOKENS="operator:9f1c...,department/fire_rescue:77ab...,ingest:c0de..."

Roles:
  * ``admin`` — everything.
  * ``operator`` — the command centre: reads every ticket, reviews (confirm, dismiss,
    merge), re-routes returned tickets, closes and reopens, sees reports and sources.
  * ``supervisor`` — the command centre's shift lead: everything an operator may (reads
    every ticket, reviews, sees the 考核 reports and the source supervision).
  * ``department`` (``department/<name>``) — only its own tickets: reads, accepts,
    returns, resolves. Another department's ticket is "not found".
  * ``ingest`` — creates tickets/reports (``POST /tickets``, Open311 ``POST``), reads none.
  * ``integrator`` — an upstream system: reads every ticket and Open311, posts reports.

>>> auth = TokenAuth.from_mapping({"t1": Principal("ops", Role.OPERATOR)})
>>> auth.authenticate("t1").role.value
'operator'
>>> auth.authenticate("nope") is None
True
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger(__name__)

TOKENS_ENV = "GRIDWATCH_API_TOKENS"
ADMIN_TOKEN_ENV = "GRIDWATCH_ADMIN_TOKEN"


class Role(str, Enum):  # noqa: UP042 (CONVENTIONS 10)
    ADMIN = "admin"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    DEPARTMENT = "department"
    INGEST = "ingest"
    INTEGRATOR = "integrator"


READ_ALL = frozenset({Role.ADMIN, Role.OPERATOR, Role.SUPERVISOR, Role.INTEGRATOR})
READ = READ_ALL | {Role.DEPARTMENT}
CREATE = frozenset({Role.ADMIN, Role.OPERATOR, Role.SUPERVISOR, Role.INGEST,
                    Role.INTEGRATOR})
SUPERVISE = frozenset({Role.ADMIN, Role.OPERATOR, Role.SUPERVISOR})
# the roles a named person's account may have (ingest and integrator are machines)
PERSON_ROLES = (Role.OPERATOR, Role.SUPERVISOR, Role.DEPARTMENT, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a name for the audit log, a role and, for departments, which.

    ``name`` is what the audit log records: a person's username, or an environment
    token's ``ROLE[/DEPARTMENT]``. ``user_id`` is set for a named account (then
    ``display_name`` is the person's name as shown to people).
    """

    name: str
    role: Role
    department: str | None = None
    display_name: str | None = None
    user_id: int | None = None

    def __post_init__(self) -> None:
        if (self.role is Role.DEPARTMENT) != (self.department is not None):
            raise ValueError(f"expected a department exactly for role department, got "
                             f"role {self.role.value} with department {self.department!r}")

    @property
    def sees_all(self) -> bool:
        return self.role in READ_ALL

    def can_see(self, department: str) -> bool:
        """Whether this caller may read a ticket of ``department``."""
        return self.sees_all or (self.role is Role.DEPARTMENT
                                 and self.department == department)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuth:
    """Looks bearer tokens up by their SHA-256 (the plain tokens are not kept).

    Args:
        principals: token digest → principal.
        anonymous_read: let requests without a token read tickets as a read-only
            operator. Off by default; only for a local demo on loopback.
    """

    def __init__(self, principals: Mapping[str, Principal], *,
                 anonymous_read: bool = False) -> None:
        self._principals = dict(principals)
        self.anonymous_read = anonymous_read

    @classmethod
    def from_mapping(cls, tokens: Mapping[str, Principal], *,
                     anonymous_read: bool = False) -> TokenAuth:
        """From plain token → principal (tests, embedding)."""
        return cls({_digest(t): p for t, p in tokens.items()}, anonymous_read=anonymous_read)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 anonymous_read: bool = False) -> TokenAuth:
        """From ``GRIDWATCH_ADMIN_TOKEN`` and ``GRIDWATCH_API_TOKENS``.

        Raises:
            ValueError: a malformed entry (the message names it, never the token).
        """
        env = os.environ if environ is None else environ
        tokens: dict[str, Principal] = {}
        admin = env.get(ADMIN_TOKEN_ENV, "").strip()
        if admin:
            tokens[admin] = Principal("admin", Role.ADMIN)
        for index, entry in enumerate(e.strip() for e in env.get(TOKENS_ENV, "").split(",")):
            if not entry:
                continue
            who, sep, token = entry.partition(":")
            if not sep or not token:
                raise ValueError(f"{TOKENS_ENV} entry {index + 1}: expected "
                                 f"ROLE[/DEPARTMENT]:TOKEN, got no ':TOKEN' part")
            role_name, _, department = who.partition("/")
            try:
                role = Role(role_name)
            except ValueError:
                raise ValueError(f"{TOKENS_ENV} entry {index + 1}: expected a role in "
                                 f"{[r.value for r in Role]}, got {role_name!r}") from None
            tokens[token] = Principal(who, role, department or None)
        return cls.from_mapping(tokens, anonymous_read=anonymous_read)

    @property
    def configured(self) -> bool:
        return bool(self._principals)

    def add(self, token: str, principal: Principal) -> None:
        self._principals[_digest(token)] = principal

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal for a token, or None for a missing or unknown one."""
        if not token:
            return None
        return self._principals.get(_digest(token))

    def ensure_admin_token(self) -> str | None:
        """With no tokens configured, make a random admin token for this process, log
        it once, and return it (the local demo's default); otherwise None."""
        if self.configured:
            return None
        token = secrets.token_urlsafe(24)
        self.add(token, Principal("admin", Role.ADMIN))
        log.warning("no API tokens configured (%s / %s); this process's admin token is %s",
                    ADMIN_TOKEN_ENV, TOKENS_ENV, token)
        return token


ANONYMOUS_READER = Principal("anonymous", Role.INTEGRATOR)
