"""``gridwatch users add|list|disable|enable|reset-password|token``: named accounts.

People (operators, supervisors, department staff, admins) log in to the console with a
username and password and are named in every ticket's audit log. Accounts live in the
ticket database that ``gridwatch serve`` uses: ``--tickets-url``, else
``$GRIDWATCH_TICKETS_URL``, else the config's ``ticketing.storage_url``, else
``gridwatch-data/tickets.db``. Passwords are read from a prompt or, with
``--password-stdin``, from the first line of standard input; never from the command line.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from gridwatch.commands._common import load_gridwatch_config
from gridwatch.errors import UserError

DEFAULT_DB = "gridwatch-data/tickets.db"  # what ``gridwatch serve`` uses without --db
ROLES = ("operator", "supervisor", "department", "admin")

EPILOG = """\
examples:
  gridwatch users add wang.li --role operator --display-name "Wang Li"
  gridwatch users add chen.fs --role department --department fire_rescue
  echo "$PASSWORD" | gridwatch users add ops.lead --role supervisor --password-stdin
  gridwatch users list
  gridwatch users token issue wang.li --label "review script"
  gridwatch users token revoke wang.li 3
  gridwatch users disable wang.li

Disabling an account ends its sessions and stops its API tokens at once; resetting a
password ends its sessions (its tokens keep working until revoked).
"""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tickets-url", metavar="URL",
                        help="the ticket database: sqlite:///path, postgresql://user@host/db "
                             "or a SQLite file path (default: $GRIDWATCH_TICKETS_URL, else "
                             f"the config's ticketing.storage_url, else {DEFAULT_DB})")
    common.add_argument("--config", help="YAML merged over configs/default.yaml "
                                         "(for ticketing.storage_url)")
    return common


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input "
                             "instead of prompting (for scripts)")


def register(subparsers: Any) -> None:
    common = _common()
    parser = subparsers.add_parser(
        "users", help="named accounts: add, list, disable, reset passwords, API tokens",
        description="Named accounts for the console (POST /auth/login) and the API "
                    "(per-person tokens). Every change a person makes is recorded in the "
                    "audit log under their username. Accounts are kept in the ticket "
                    "database gridwatch serve uses: --tickets-url, else "
                    "$GRIDWATCH_TICKETS_URL, else the config's ticketing.storage_url, "
                    f"else {DEFAULT_DB}.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    add = sub.add_parser("add", parents=[common], help="create an account (asks for its "
                                                       "password)")
    add.add_argument("username", help="login name: lowercase letters, digits, '.', '_', '-' "
                                      "(2-64, starting with a letter)")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="operator: reviews and dispatches; supervisor: an operator who "
                          "also leads the shift (reports, supervision); department: "
                          "handles its department's tickets only; admin: everything")
    add.add_argument("--department", help="the department (required for --role department)")
    add.add_argument("--display-name", help="the person's name as shown in the console and "
                                            "the audit (default: the username)")
    _password_option(add)
    add.set_defaults(func=run_add)

    lst = sub.add_parser("list", parents=[common], help="list accounts")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    lst.set_defaults(func=run_list)

    disable = sub.add_parser("disable", parents=[common],
                             help="disable an account (its sessions and tokens stop working)")
    disable.add_argument("username")
    disable.set_defaults(func=run_disable, disabled=True)

    enable = sub.add_parser("enable", parents=[common],
                            help="enable a disabled account again (it must log in again)")
    enable.add_argument("username")
    enable.set_defaults(func=run_disable, disabled=False)

    reset = sub.add_parser("reset-password", parents=[common],
                           help="set a new password (asks for it); ends the account's "
                                "sessions")
    reset.add_argument("username")
    _password_option(reset)
    reset.set_defaults(func=run_reset_password)

    token = sub.add_parser("token", help="a person's API tokens for scripts: issue, list, "
                                         "revoke")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_sub.add_parser(
        "issue", parents=[common],
        help="issue a token (printed once on standard output; only its hash is kept)")
    issue.add_argument("username")
    issue.add_argument("--label", default="api token",
                       help="what the token is for (default: %(default)s)")
    issue.set_defaults(func=run_token_issue)
    tokens = token_sub.add_parser("list", parents=[common], help="list an account's tokens")
    tokens.add_argument("username")
    tokens.set_defaults(func=run_token_list)
    revoke = token_sub.add_parser("revoke", parents=[common],
                                  help="revoke a token (it stops working at once)")
    revoke.add_argument("username")
    revoke.add_argument("token_id", type=int, help="the token's id (see token list)")
    revoke.set_defaults(func=run_token_revoke)


@contextmanager
def _users(args: argparse.Namespace) -> Iterator[Any]:
    from ticketing.store import configured_url, open_store
    from ticketing.users import UserStore

    config = load_gridwatch_config(args.config)  # also the department registry
    url = args.tickets_url or configured_url(config.ticketing.storage_url, default=DEFAULT_DB)
    try:
        store = open_store(url)
    except ValueError as exc:
        raise UserError(f"--tickets-url: {exc}") from None
    try:
        yield UserStore(store, departments=config.ticketing.departments)
    except (ValueError, LookupError) as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _password(args: argparse.Namespace, username: str) -> str:
    from ticketing.users import check_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UserError("--password-stdin: expected the password on the first line of "
                            "standard input, got an empty line")
    else:
        if not sys.stdin.isatty():
            raise UserError("no terminal to ask for the password; pipe it in with "
                            "--password-stdin")
        password = getpass.getpass(f"New password for {username}: ")
        try:
            check_password(password, username=username)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if getpass.getpass("Repeat it: ") != password:
            raise UserError("the two passwords differ; nothing was changed")
    try:
        check_password(password, username=username)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return password


def _describe(user: Any) -> str:
    where = f" of {user.department}" if user.department else ""
    return f"{user.username} ({user.display_name}), {user.role.value}{where}"


def run_add(args: argparse.Namespace) -> int:
    from ticketing.users import check_role, check_username

    try:  # before asking for a password
        check_username(args.username)
        check_role(args.role, args.department,
                   departments=load_gridwatch_config(args.config).ticketing.departments)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    with _users(args) as users:
        if users.get(args.username) is not None:
            raise UserError(f"user {args.username!r} exists already")
        password = _password(args, args.username)
        user = users.add(username=args.username, password=password, role=args.role,
                         department=args.department, display_name=args.display_name,
                         now=_now())
    print(f"added {_describe(user)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with _users(args) as users:
        accounts = users.list()
        active = {u.username: sum(t.revoked_at is None for t in users.tokens(u.username))
                  for u in accounts}
    if args.json:
        for u in accounts:
            print(json.dumps({
                "username": u.username, "display_name": u.display_name,
                "role": u.role.value, "department": u.department,
                "disabled": not u.active, "created_at": u.created_at.isoformat(),
                "active_tokens": active[u.username]}, ensure_ascii=False))
        return 0
    if not accounts:
        print("no accounts (add one with: gridwatch users add USERNAME --role ROLE)")
        return 0
    print(f"{'USERNAME':<20} {'ROLE':<11} {'DEPARTMENT':<20} {'STATUS':<9} "
          f"{'TOKENS':>6}  DISPLAY NAME")
    for u in accounts:
        print(f"{u.username:<20} {u.role.value:<11} {u.department or '-':<20} "
              f"{'active' if u.active else 'disabled':<9} {active[u.username]:>6}  "
              f"{u.display_name}")
    return 0


def run_disable(args: argparse.Namespace) -> int:
    with _users(args) as users:
        user = users.set_disabled(args.username, args.disabled, now=_now())
    if args.disabled:
        print(f"disabled {_describe(user)}: its sessions and API tokens no longer work")
    else:
        print(f"enabled {_describe(user)}: it can log in again")
    return 0


def run_reset_password(args: argparse.Namespace) -> int:
    with _users(args) as users:
        users.require(args.username)
        password = _password(args, args.username)
        user = users.set_password(args.username, password, now=_now())
    print(f"new password for {_describe(user)}; its sessions have ended")
    return 0


def run_token_issue(args: argparse.Namespace) -> int:
    with _users(args) as users:
        record, token = users.issue_token(args.username, label=args.label, now=_now())
    print(token)
    print(f"token {record.token_id} for {args.username} ({record.label}): shown only now, "
          f"keep it secret; send it as 'Authorization: Bearer <token>'. Revoke it with: "
          f"gridwatch users token revoke {args.username} {record.token_id}", file=sys.stderr)
    return 0


def run_token_list(args: argparse.Namespace) -> int:
    with _users(args) as users:
        tokens = users.tokens(args.username)
    if not tokens:
        print(f"{args.username} has no API tokens")
        return 0
    print(f"{'ID':>5}  {'CREATED':<20} {'STATUS':<28} LABEL")
    for t in tokens:
        state = (f"revoked {t.revoked_at:%Y-%m-%d %H:%M}Z" if t.revoked_at is not None
                 else "active")
        print(f"{t.token_id:>5}  {t.created_at:%Y-%m-%d %H:%M}Z{'':<3} {state:<28} {t.label}")
    return 0


def run_token_revoke(args: argparse.Namespace) -> int:
    with _users(args) as users:
        token = users.revoke_token(args.username, args.token_id, now=_now())
    print(f"revoked token {token.token_id} of {args.username} ({token.label})")
    return 0
