"""``gridwatch users ...`` as an administrator runs it, on SQLite and on PostgreSQL: the
account's whole life, refusals with one clear line, and which database it works on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gridwatch.cli import main
from ticketing.store import SqlTicketStore, open_store
from ticketing.users import UserStore

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgres"])
def tickets_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tickets.db"
    url, schema = request.getfixturevalue("pg_schema")
    SqlTicketStore(url, schema=schema).close()  # the schema, so the URL can point into it
    return f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture
def users(tickets_url: str) -> Iterator[UserStore]:
    """The accounts as the API would see them (opened after the CLI has run)."""
    opened: list[SqlTicketStore] = []

    def factory() -> UserStore:
        store = open_store(tickets_url)
        opened.append(store)
        return UserStore(store)

    yield factory  # type: ignore[misc]
    for store in opened:
        store.close()


def gw(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str,
       *args: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["users", *args, "--tickets-url", url])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_account_from_add_to_disable(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str],
                                        tickets_url: str, users) -> None:  # type: ignore[no-untyped-def]
    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        return gw(monkeypatch, capsys, tickets_url, *args, stdin=stdin)

    assert run("add", "wang.li", "--role", "operator", "--display-name", "Wang Li",
               "--password-stdin", stdin=PASSWORD + "\n") == (
        0, "added wang.li (Wang Li), operator\n", "")
    code, out, _ = run("add", "chen.fs", "--role", "department", "--department",
                       "fire_rescue", "--password-stdin", stdin=PASSWORD + "\n")
    assert (code, out) == (0, "added chen.fs (chen.fs), department of fire_rescue\n")
    store = users()
    assert store.verify("wang.li", PASSWORD) is not None
    assert store.verify("chen.fs", PASSWORD).department == "fire_rescue"

    code, out, err = run("token", "issue", "wang.li", "--label", "review script")
    assert code == 0
    token = out.strip()
    assert "shown only now" in err and "token revoke wang.li 1" in err
    assert store.principal_for_token(token).name == "wang.li"  # type: ignore[union-attr]
    code, out, _ = run("list", "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(u["username"], u["role"], u["department"], u["disabled"], u["active_tokens"])
            for u in listed] == [("chen.fs", "department", "fire_rescue", False, 0),
                                 ("wang.li", "operator", None, False, 1)]
    code, out, _ = run("list")
    assert code == 0 and "wang.li" in out and "Wang Li" in out and "active" in out

    assert run("disable", "wang.li")[0] == 0
    assert store.verify("wang.li", PASSWORD) is None
    assert store.principal_for_token(token) is None
    assert "disabled" in run("list")[1]
    assert run("enable", "wang.li")[0] == 0
    assert store.principal_for_token(token) is not None

    assert run("reset-password", "wang.li", "--password-stdin",
               stdin="a brand new secret\n")[0] == 0
    assert store.verify("wang.li", PASSWORD) is None
    assert store.verify("wang.li", "a brand new secret") is not None

    assert run("token", "revoke", "wang.li", "1") == (
        0, "revoked token 1 of wang.li (review script)\n", "")
    assert store.principal_for_token(token) is None
    code, out, _ = run("token", "list", "wang.li")
    assert code == 0 and "revoked" in out and "review script" in out


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("add", "chen.fs", "--role", "department", "--password-stdin"), PASSWORD,
     "expected a department for role department"),
    (("add", "ops", "--role", "admin", "--department", "x", "--password-stdin"), PASSWORD,
     "expected no department for role admin"),
    # department staff belong to a registered department (ticketing.departments)
    (("add", "li.x", "--role", "department", "--department", "no_such_dept",
      "--password-stdin"), PASSWORD,
     "unknown department 'no_such_dept' (valid: command_centre, community_security"),
    (("add", "Wang", "--role", "operator", "--password-stdin"), PASSWORD,
     "lowercase letter"),
    (("add", "wang.li", "--role", "operator", "--password-stdin"), "short\n",
     "at least 10 characters"),
    (("add", "wang.li", "--role", "operator", "--password-stdin"), "\n",
     "got an empty line"),
    (("add", "wang.li", "--role", "operator"), "", "pipe it in with --password-stdin"),
    (("add", "taken", "--role", "operator", "--password-stdin"), PASSWORD, "exists already"),
    (("disable", "nobody"), "", "no user 'nobody'"),
    (("reset-password", "nobody", "--password-stdin"), PASSWORD, "no user 'nobody'"),
    (("token", "issue", "nobody"), "", "no user 'nobody'"),
    (("token", "revoke", "taken", "7"), "", "has no token 7"),
])
def test_refusals_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], tickets_url: str,
                                    users, args: tuple[str, ...], stdin: str,  # type: ignore[no-untyped-def]
                                    message: str) -> None:
    users().add(username="taken", password=PASSWORD, role="operator", now=datetime.now(UTC))
    code, out, err = gw(monkeypatch, capsys, tickets_url, *args, stdin=stdin)
    assert code == 2
    assert err.startswith("gridwatch users: error: ") and message in err
    assert [u.username for u in users().list()] == ["taken"]  # nothing else was written


@pytest.mark.parametrize(("args", "message"), [
    (("add", "wang.li", "--role", "boss"), "invalid choice: 'boss'"),
    (("add", "wang.li", "--role", "operator", "--password", "x"), "unrecognized arguments"),
])
def test_argument_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                         args: tuple[str, ...], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["users", *args, "--tickets-url", str(tmp_path / "t.db")])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_which_database(tmp_path: Path) -> None:
    """--tickets-url, else $GRIDWATCH_TICKETS_URL, else the config's storage_url, else
    gridwatch-data/tickets.db (serve's default), in a real process."""
    env = {k: v for k, v in os.environ.items() if k != "GRIDWATCH_TICKETS_URL"}
    env["PYTHONPATH"] = str(ROOT)

    def gridwatch(*args: str, stdin: str = "", **extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "gridwatch.cli", "users", *args],
                              input=stdin, capture_output=True, text=True, cwd=tmp_path,
                              env={**env, **extra}, timeout=120, check=True)
        return done.stdout

    from_env = f"sqlite:///{tmp_path}/from_env.db"
    gridwatch("add", "env.user", "--role", "operator", "--password-stdin",
              stdin=PASSWORD + "\n", GRIDWATCH_TICKETS_URL=from_env)
    config = tmp_path / "site.yaml"
    config.write_text(f"ticketing:\n  storage_url: sqlite:///{tmp_path}/from_config.db\n")
    gridwatch("add", "cfg.user", "--role", "admin", "--config", str(config),
              "--password-stdin", stdin=PASSWORD + "\n")
    gridwatch("add", "plain.user", "--role", "supervisor", "--password-stdin",
              stdin=PASSWORD + "\n")
    assert (tmp_path / "gridwatch-data" / "tickets.db").exists()
    names = {
        "env": gridwatch("list", GRIDWATCH_TICKETS_URL=from_env),
        "env over config": gridwatch("list", "--config", str(config),
                                     GRIDWATCH_TICKETS_URL=from_env),
        "config": gridwatch("list", "--config", str(config)),
        "default": gridwatch("list"),
        "flag": gridwatch("list", "--tickets-url", str(tmp_path / "from_env.db")),
    }
    found = {k: [line.split()[0] for line in v.splitlines()[1:]] for k, v in names.items()}
    assert found == {"env": ["env.user"], "env over config": ["env.user"],
                     "config": ["cfg.user"], "default": ["plain.user"],
                     "flag": ["env.user"]}
