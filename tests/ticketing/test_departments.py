"""The department registry: config validation at start-up, GET /departments, and 422 for
unknown departments on dispatch / confirm / recall / reclassify (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from geo.admin import Level
from gridwatch.config import ConfigError, default_config_file, load_config
from stream.policy import KindPolicy, PolicyBook
from tests.builders import make_grid
from tests.ticketing.builders import (
    Headers,
    api_act,
    api_create,
    make_auth,
    make_rules,
    make_ticket,
)
from ticketing.api.app import create_app
from ticketing.config import RoutingOverride, TicketingSettings
from ticketing.departments import DEFAULT_DEPARTMENTS, Department
from ticketing.desk import TicketDesk
from ticketing.lifecycle import Action, ActionInvalid, ActionRequest, apply_action
from ticketing.models import TicketStatus
from ticketing.store import MemoryTicketStore

VALID = ("command_centre, community_security, fire_rescue, property_management, "
         "traffic_police, urban_management")






def test_the_default_yaml_registry_is_the_code_default_and_covers_every_kind() -> None:
    raw = yaml.safe_load(default_config_file().read_text(encoding="utf-8"))
    assert {k: Department(**v) for k, v in raw["ticketing"]["departments"].items()} == \
        DEFAULT_DEPARTMENTS
    config = load_config()
    named = {p.department for p in config.kinds.values()} | {config.default_kind.department}
    assert named <= set(config.ticketing.departments)
    assert config.ticketing.departments["fire_rescue"].name_zh == "消防救援"


@pytest.mark.parametrize(("text", "message"), [
    ("kinds:\n  smoke:\n    department: no_such_dept\n",
     f"kinds.smoke.department: unknown department 'no_such_dept' (valid: {VALID})"),
    ("default_kind:\n  department: nobody\n",
     "default_kind.department: unknown department 'nobody'"),
    ("ticketing:\n  routing_overrides:\n    - {kind: smoke, department: ghost}\n",
     "ticketing.routing_overrides.0.department: unknown department 'ghost'"),
    ("ticketing:\n  departments:\n    Bad-Id: {name_zh: x, name_en: x, level: town}\n",
     "ticketing.departments.Bad-Id.[key]: String should match pattern"),
    ("ticketing:\n  departments:\n    x: {name_zh: x, name_en: x, level: county}\n",
     "ticketing.departments.x.level: Input should be"),
])
def test_config_errors_name_the_file_the_field_and_the_valid_ids(
        tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_a_site_file_adds_a_department_and_keeps_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("ticketing:\n  departments:\n    town_office:\n      name_zh: 镇街办\n"
                    "      name_en: Town office\n      level: town\n      serves: [TownB]\n"
                    "kinds:\n  door_forced:\n    department: town_office\n",
                    encoding="utf-8")
    config = load_config(path)
    assert config.kinds["door_forced"].department == "town_office"
    assert set(config.ticketing.departments) == {*DEFAULT_DEPARTMENTS, "town_office"}


def test_the_desk_and_the_api_refuse_policies_with_unknown_departments(store) -> None:  # type: ignore[no-untyped-def]
    policies = PolicyBook(kinds={"smoke": KindPolicy(department="fire_brigade")})
    with pytest.raises(ValueError, match="kinds.smoke.department: unknown department "
                                         "'fire_brigade'"):
        create_app(store=store, policies=policies, auth=make_auth())
    settings = TicketingSettings(routing_overrides=[RoutingOverride(department="ghost")])
    with pytest.raises(ValueError, match="routing_overrides.0.department"):
        TicketDesk(policies=PolicyBook(), settings=settings, grid=make_grid(),
                   store=MemoryTicketStore())


def test_get_departments_lists_the_registry_and_the_grids_units(
        client: TestClient, as_role: Headers) -> None:
    response = client.get("/departments", headers=as_role["fire"])
    assert response.status_code == 200
    body = response.json()
    by_id = {d["id"]: d for d in body["departments"]}
    assert list(by_id) == sorted(DEFAULT_DEPARTMENTS)
    assert by_id["fire_rescue"] == {"id": "fire_rescue", "name_zh": "消防救援",
                                    "name_en": "Fire and rescue", "level": "town",
                                    "serves": [], "has_webhook": False, "kinds": ["smoke"]}
    assert by_id["community_security"]["kinds"] == ["door_forced"]
    units = {(u["level"], u["name"]): (u["parent"], u["cells"]) for u in body["admin_units"]}
    assert units == {("district", "D1"): (None, 9), ("town", "TownA"): ("D1", 6),
                     ("town", "TownB"): ("D1", 3), ("village", "V0"): ("TownA", 3),
                     ("village", "V1"): ("TownA", 3), ("village", "V2"): ("TownB", 3)}
    assert client.get("/departments").status_code == 401


@pytest.mark.parametrize(("setup", "action", "body"), [
    ("returned", "dispatch", {"department": "no_such_dept"}),
    ("pending", "confirm", {"department": "no_such_dept"}),
    ("dispatched", "recall", {"reason": "wrong unit", "department": "no_such_dept"}),
    ("dispatched", "reclassify", {"kind": "door_forced", "department": "no_such_dept"}),
])
def test_unknown_departments_are_422_naming_the_valid_ones(
        client: TestClient, as_role: Headers, setup: str, action: str,
        body: dict[str, Any]) -> None:
    ops = as_role["operator"]
    ticket = api_create(client, as_role, kind="odd_kind" if setup == "pending" else "smoke")
    if setup == "returned":
        ticket = api_act(client, as_role["fire"], ticket, "return", reason="not ours").json()
    response = api_act(client, ops, ticket, action, **body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "department"]
    assert error["msg"] == f"unknown department 'no_such_dept' (valid: {VALID})"
    after = client.get(f"/tickets/{ticket['ticket_id']}", headers=ops).json()
    assert (after["version"], after["department"]) == (ticket["version"],
                                                       ticket["department"])


def test_a_department_on_an_action_that_takes_none_is_422(client: TestClient,
                                                         as_role: Headers) -> None:
    ticket = api_create(client, as_role)
    response = api_act(client, as_role["fire"], ticket, "accept", department="fire_rescue")
    assert response.status_code == 422
    assert "accept takes no department" in response.text


def test_confirm_with_a_department_dispatches_there(client: TestClient,
                                                    as_role: Headers) -> None:
    ops = as_role["operator"]
    pending = api_create(client, as_role, kind="odd_kind")
    assert (pending["department"], pending["review_reason"]) == ("command_centre",
                                                                 "unknown_kind")
    confirmed = api_act(client, ops, pending, "confirm", department="community_security")
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    assert (body["status"], body["department"]) == ("dispatched", "community_security")
    listed = client.get("/tickets", headers=as_role["security"]).json()
    assert [t["ticket_id"] for t in listed["items"]] == [pending["ticket_id"]]


def test_reclassify_to_an_unknown_kind_is_422_naming_the_kinds(client: TestClient,
                                                               as_role: Headers) -> None:
    ticket = api_create(client, as_role)
    response = api_act(client, as_role["operator"], ticket, "reclassify", kind="parking")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "kind"]
    assert error["msg"] == "unknown kind 'parking' (valid: door_forced, smoke)"
    missing = api_act(client, as_role["operator"], ticket, "reclassify")
    assert missing.status_code == 422 and "reclassify needs a kind" in missing.text


def test_a_department_that_does_not_serve_the_cell_is_refused() -> None:
    registry = dict(DEFAULT_DEPARTMENTS)
    registry["townb_office"] = Department(name_zh="乙镇办", name_en="TownB office",
                                          level=Level.TOWN, serves=["TownB"])
    rules = make_rules(departments=registry)
    ticket = make_ticket(status=TicketStatus.RETURNED)  # in TownA / V0
    with pytest.raises(ActionInvalid, match=r"'townb_office' does not serve V0 / TownA / D1 "
                                            r"\(it serves: TownB\)"):
        apply_action(ticket, ActionRequest(Action.DISPATCH, department="townb_office"),
                     actor="ops", at=ticket.opened_at, rules=rules)
    assert ticket.department == "fire_rescue"
    there = make_ticket(status=TicketStatus.RETURNED, town="TownB", village="V2")
    apply_action(there, ActionRequest(Action.DISPATCH, department="townb_office"),
                 actor="ops", at=there.opened_at, rules=rules)
    assert there.department == "townb_office"


def test_a_department_webhook_from_a_site_file_is_shown_as_has_webhook(
        tmp_path: Path, store: Any, as_role: Headers) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("ticketing:\n  departments:\n    fire_rescue:\n      name_zh: 消防救援\n"
                    "      name_en: Fire and rescue\n      level: town\n"
                    "      webhook_url: http://127.0.0.1:9/fire\n"
                    "      webhook_secret_env: FIRE_HOOK_KEY\n", encoding="utf-8")
    config = load_config(path)
    fire = config.ticketing.departments["fire_rescue"]
    assert (fire.webhook_url, fire.webhook_secret_env) == ("http://127.0.0.1:9/fire",
                                                           "FIRE_HOOK_KEY")
    app = create_app(store=store, settings=config.ticketing, policies=config.policies,
                     auth=make_auth())
    with TestClient(app) as client:
        response = client.get("/departments", headers=as_role["fire"])
    assert response.status_code == 200
    by_id = {d["id"]: d for d in response.json()["departments"]}
    assert by_id["fire_rescue"]["has_webhook"] is True
    assert by_id["traffic_police"]["has_webhook"] is False
    assert "FIRE_HOOK_KEY" not in response.text and "127.0.0.1:9" not in response.text


def test_an_empty_webhook_secret_env_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("ticketing:\n  departments:\n    x: {name_zh: x, name_en: x, level: town,"
                    " webhook_url: 'http://x', webhook_secret_env: ''}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="ticketing.departments.x.webhook_secret_env"):
        load_config(path)
