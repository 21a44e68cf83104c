"""Named accounts in the ticket database (SQLite and PostgreSQL): hashing, validation,
API tokens, disabling, password resets."""

from __future__ import annotations

from typing import Any

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import text

from tests.ticketing.builders import T0
from ticketing.auth import Role
from ticketing.store import SqlTicketStore
from ticketing.users import TOKEN_PREFIX, UnknownUser, UserExists, UserStore

PASSWORD = "correct horse battery"


def cheap_hasher() -> PasswordHash:
    """argon2id at a test's cost (the default takes ~80 ms a hash)."""
    return PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))


@pytest.fixture
def users(store: SqlTicketStore) -> UserStore:
    return UserStore(store, hasher=cheap_hasher())


def add(users: UserStore, username: str = "wang.li", **kw: Any) -> Any:
    values: dict[str, Any] = {"password": PASSWORD, "role": Role.OPERATOR,
                              "display_name": "Wang Li", "now": T0, **kw}
    return users.add(username=username, **values)


def rows(store: SqlTicketStore, table: str) -> list[dict[str, Any]]:
    with store.connection() as conn:
        return [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table}"))]


def test_the_password_is_stored_only_as_an_argon2id_hash(store: SqlTicketStore) -> None:
    users = UserStore(store)  # the default hasher, as the CLI uses it
    user = add(users)
    [row] = rows(store, "users")
    assert row["password_hash"].startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert all(PASSWORD not in str(value) for value in row.values())
    assert users.verify("wang.li", PASSWORD) == user
    assert users.verify("wang.li", PASSWORD + "x") is None
    assert users.verify("nobody", PASSWORD) is None


def test_a_hash_of_older_parameters_is_upgraded_at_login(store: SqlTicketStore) -> None:
    add(UserStore(store, hasher=cheap_hasher()))
    assert "m=1024,t=1,p=1" in rows(store, "users")[0]["password_hash"]
    assert UserStore(store).verify("wang.li", PASSWORD) is not None
    assert rows(store, "users")[0]["password_hash"].startswith("$argon2id$v=19$m=65536,t=3")


def test_add_and_list(users: UserStore) -> None:
    add(users, "wang.li")
    fire = add(users, "chen.fs", role="department", department="fire_rescue",
               display_name="陈消防")
    assert [u.username for u in users.list()] == ["chen.fs", "wang.li"]
    principal = fire.principal()
    assert (principal.name, principal.role, principal.department, principal.display_name,
            principal.user_id) == ("chen.fs", Role.DEPARTMENT, "fire_rescue", "陈消防",
                                   fire.user_id)
    plain = users.add(username="plain", password=PASSWORD, role="admin", now=T0)
    assert plain.display_name == "plain"  # the display name defaults to the username
    with pytest.raises(UserExists, match="exists already"):
        add(users, "wang.li")


@pytest.mark.parametrize(("overrides", "error", "message"), [
    ({"username": "Wang"}, ValueError, "lowercase letter"),
    ({"username": "w"}, ValueError, "2-64 characters"),
    ({"username": "ops/x"}, ValueError, "lowercase letter"),
    ({"username": "operator"}, ValueError, "audit log uses those"),
    ({"username": "anonymous"}, ValueError, "audit log uses those"),
    ({"password": "short"}, ValueError, "at least 10 characters"),
    ({"password": "x" * 1025}, ValueError, "at most 1024"),
    ({"password": "Wang.Li"}, ValueError, "at least 10"),
    ({"username": "longername", "password": "LongerName"}, ValueError, "other than the "
                                                                        "username"),
    ({"role": "ingest"}, ValueError, "is for machines"),
    ({"role": "boss"}, ValueError, "expected a role in ['operator', 'supervisor', "
                                   "'department', 'admin']"),
    ({"role": "department"}, ValueError, "expected a department"),
    ({"role": "department", "department": "fire rescue"}, ValueError, "department name"),
    ({"role": "operator", "department": "fire_rescue"}, ValueError, "no department"),
    ({"display_name": " "}, ValueError, "display name of 1-120"),
    ({"display_name": "a\nb"}, ValueError, "control characters"),
])
def test_add_refuses(users: UserStore, overrides: dict[str, Any], error: type[Exception],
                     message: str) -> None:
    values: dict[str, Any] = {"username": "wang.li", "password": PASSWORD,
                              "role": "operator", "now": T0, **overrides}
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        users.add(**values)
    assert users.list() == []


def test_api_tokens_are_stored_hashed_and_revocable(store: SqlTicketStore,
                                                    users: UserStore) -> None:
    add(users)
    record, token = users.issue_token("wang.li", label="review script", now=T0)
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    assert all(token not in str(v) for row in rows(store, "user_tokens") for v in row.values())
    principal = users.principal_for_token(token)
    assert principal is not None and (principal.name, principal.role) == ("wang.li",
                                                                          Role.OPERATOR)
    assert users.principal_for_token(token + "x") is None
    assert users.principal_for_token("not-a-person-token") is None
    other, second = users.issue_token("wang.li", label="cron", now=T0)
    revoked = users.revoke_token("wang.li", record.token_id, now=T0)
    assert revoked.revoked_at == T0
    assert users.principal_for_token(token) is None
    assert users.principal_for_token(second) is not None  # the other token still works
    assert [(t.token_id, t.label, t.revoked_at) for t in users.tokens("wang.li")] == [
        (record.token_id, "review script", T0), (other.token_id, "cron", None)]
    with pytest.raises(ValueError, match="revoked already"):
        users.revoke_token("wang.li", record.token_id, now=T0)
    with pytest.raises(UnknownUser, match="has no token 999"):
        users.revoke_token("wang.li", 999, now=T0)
    with pytest.raises(UnknownUser, match="no user 'nobody'"):
        users.issue_token("nobody", label="x", now=T0)


def test_a_disabled_account_cannot_log_in_and_its_tokens_stop(users: UserStore) -> None:
    add(users)
    _record, token = users.issue_token("wang.li", label="script", now=T0)
    disabled = users.set_disabled("wang.li", True, now=T0)
    assert not disabled.active and disabled.disabled_at == T0
    assert users.verify("wang.li", PASSWORD) is None
    assert users.principal_for_token(token) is None
    with pytest.raises(ValueError, match="is disabled"):
        users.issue_token("wang.li", label="again", now=T0)
    enabled = users.set_disabled("wang.li", False, now=T0)
    assert enabled.active and enabled.auth_epoch == disabled.auth_epoch  # sessions stay ended
    assert users.principal_for_token(token) is not None
    with pytest.raises(UnknownUser):
        users.set_disabled("nobody", True, now=T0)


def test_reset_password(users: UserStore) -> None:
    before = add(users)
    after = users.set_password("wang.li", "another long secret", now=T0)
    assert after.auth_epoch == before.auth_epoch + 1
    assert users.verify("wang.li", PASSWORD) is None
    assert users.verify("wang.li", "another long secret") is not None
    with pytest.raises(ValueError, match="at least 10"):
        users.set_password("wang.li", "short", now=T0)
    with pytest.raises(UnknownUser):
        users.set_password("nobody", "another long secret", now=T0)


def test_display_names(users: UserStore) -> None:
    add(users, "wang.li", display_name="Wang Li")
    assert users.display_names(["wang.li", "ops", "department/fire_rescue",
                                "system:escalator"]) == {"wang.li": "Wang Li"}
    assert users.display_names([]) == {}


def test_department_staff_belong_to_a_registered_department(store) -> None:  # type: ignore[no-untyped-def]
    from ticketing.config import TicketingSettings

    users = UserStore(store, departments=TicketingSettings().departments)
    with pytest.raises(ValueError, match=r"unknown department 'no_such_dept' \(valid: "
                                         r"command_centre, .*fire_rescue"):
        users.add(username="li.x", password="long enough pw", role="department",
                  department="no_such_dept", now=T0)
    added = users.add(username="li.y", password="long enough pw", role="department",
                      department="fire_rescue", now=T0)
    assert added.department == "fire_rescue"
