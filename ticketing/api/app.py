"""The API factory.

>>> from ticketing.store import SqliteTicketStore
>>> from ticketing.auth import TokenAuth, Principal, Role
>>> app = create_app(store=SqliteTicketStore(":memory:"),
...                  auth=TokenAuth.from_mapping({"s3cret": Principal("ops", Role.OPERATOR)}))
>>> app.title
'GridWatch ticketing'
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from geo.grid import Grid
from stream.policy import PolicyBook
from ticketing.api.deps import AppState, reject_unknown_query
from ticketing.api.docs_pages import install_redoc
from ticketing.api.pagecache import PageCache
from ticketing.api.routes import auth as auth_routes
from ticketing.api.routes import console as console_routes
from ticketing.api.routes import (
    departments,
    events,
    health,
    open311,
    reports,
    review,
    tickets,
)
from ticketing.api.routes import evidence as evidence_routes
from ticketing.auth import TokenAuth
from ticketing.config import TicketingSettings
from ticketing.escalation import Escalator
from ticketing.events import EventBus, LocalBus, RedisBus, change_message
from ticketing.evidence import EvidenceStore
from ticketing.login import Logins
from ticketing.routing import Rules
from ticketing.store import Change, SqlTicketStore
from ticketing.users import UserStore
from ticketing.webhooks import WebhookDispatcher, dispatchers_from_settings

log = logging.getLogger(__name__)


EVIDENCE_SWEEP_S = 3600.0  # retention is in days: an hourly look is plenty


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(*, store: SqlTicketStore, settings: TicketingSettings | None = None,
               policies: PolicyBook | None = None, grid: Grid | None = None,
               auth: TokenAuth | None = None, bus: EventBus | None = None,
               clock: Callable[[], datetime] = utc_now,
               run_workers: bool = False, users: UserStore | None = None,
               evidence: EvidenceStore | None = None) -> FastAPI:
    """Build the ticketing API over ``store``.

    Args:
        store: a :class:`~ticketing.store.SqlTicketStore` (``SqliteTicketStore(path)`` for
            the embedded box, ``SqlTicketStore("postgresql://...")`` in production).
            The in-memory replay store is not accepted: the API needs transactions.
        settings: the ``ticketing:`` section of the root config (defaults if None).
        policies: the per-kind policies (``GridWatchConfig.policies``); needed to route
            and list Open311 services. Defaults to an empty book (everything → review).
        grid: the cell grid; needed to place reports (``POST /tickets``, Open311 POST).
            Without it those routes answer 422.
        auth: who may do what. None reads ``GRIDWATCH_ADMIN_TOKEN`` /
            ``GRIDWATCH_API_TOKENS``; if neither is set, a random admin token is made for
            this process and logged once at WARNING (the local demo's default). Every
            route except ``/healthz`` and the Open311 discovery needs a token (or a
            named account's session, see ``users``), unless
            ``TokenAuth(..., anonymous_read=True)`` is passed explicitly (GETs only).
        bus: live-update fan-out. None: Redis if ``settings.redis_url`` is set, else
            in-process.
        clock: "now" for changes made through the API (tests pass a fixed clock).
            Deadline clocks of reports and actions start at this time.
        users: the named accounts people log in with (``/auth/login``) and whose API
            tokens are accepted; None: those of ``store``'s database
            (``gridwatch users ...`` manages them).
        run_workers: also run the escalation worker, the change-log pruner and one
            webhook dispatcher per receiver (``settings.webhook.url`` and each
            department's ``webhook_url``; each in its own loop) inside this process, in
            background threads. Any
            number of replicas may do so on one database: each escalation and delivery
            still happens once.
        evidence: camera snapshots served at ``/evidence/<event_id>`` (the links in the
            tickets' ``snapshot_urls``); None: that route answers 404. With
            ``run_workers`` its retention is also applied hourly.

    Returns:
        The FastAPI application (serve it with uvicorn).

    Raises:
        ValueError: a kind, ``default_kind`` or routing override names a department
            that is not in ``settings.departments``; with ``run_workers``, a webhook's
            HMAC key is missing from the environment (the variable and the department
            are named) or ``store`` does not queue deliveries for a configured webhook.

    Example (what ``gridwatch demo`` / ``serve`` do)::

        store = SqliteTicketStore(data_dir / "tickets.db",
                                  webhooks=DeliveryTargets.from_settings(cfg.ticketing))
        app = create_app(store=store, settings=cfg.ticketing, policies=cfg.policies,
                         grid=grid, run_workers=True)
        uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    if not isinstance(store, SqlTicketStore):
        raise TypeError(f"expected a SqlTicketStore (e.g. SqliteTicketStore(':memory:')), "
                        f"got {type(store).__name__}")
    settings = settings or TicketingSettings()
    if auth is None:
        auth = TokenAuth.from_env()
    auth.ensure_admin_token()
    if bus is None:
        bus = RedisBus(settings.redis_url) if settings.redis_url else LocalBus()
    policies = policies or PolicyBook()
    rules = Rules(policies, settings)  # ValueError: a kind's department is not registered
    users = users or UserStore(store, departments=settings.departments)
    state = AppState(store=store, settings=settings, auth=auth, policies=policies,
                     grid=grid, bus=bus, clock=clock, rules=rules, users=users,
                     logins=Logins(users, settings.auth), evidence=evidence,
                     pages=PageCache(settings.list_cache_entries))

    # start-up checks the keys: a missing one stops the process here, not at first send
    dispatchers = (dispatchers_from_settings(store=store, settings=settings)
                   if run_workers else [])

    def publish(change: Change) -> None:
        state.bus.publish(change_message(change))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await state.bus.start()
        store.add_listener(publish)
        workers: list[_Loop] = []
        if run_workers:
            escalator = Escalator(store=store, settings=settings.escalation)
            workers.append(_Loop("escalator", settings.escalation.interval_s,
                                 lambda: escalator.run_once(now=clock())))
            if evidence is not None:
                workers.append(_Loop("evidence-retention", EVIDENCE_SWEEP_S,
                                     lambda: evidence.evict(now=clock())))
            log_settings = settings.change_log
            workers.append(_Loop("change-log", log_settings.prune_interval_s,
                                 lambda: store.prune_changes(
                                     now=clock(), retention_s=log_settings.retention_s,
                                     max_rows=log_settings.max_rows)))
            for dispatcher in dispatchers:  # one loop each: a dead endpoint waits alone
                workers.append(_Loop(f"webhooks:{dispatcher.destination}",
                                     settings.webhook.interval_s,
                                     functools.partial(_deliver, dispatcher, clock)))
        for worker in workers:
            worker.start()
        try:
            yield
        finally:
            for worker in workers:
                await worker.stop()
            store.remove_listener(publish)
            await state.bus.stop()

    # /docs and /redoc load Swagger UI and ReDoc from the fastapi-offline package (served
    # under /static-offline-docs), not from a CDN: they work on a network with no internet
    app = FastAPIOffline(
        redoc_url=None,  # install_redoc below: the same bundle without its one remote logo
        title="GridWatch ticketing", version="1.0.0", lifespan=lifespan,
        description="Work orders from sensors and cameras: lifecycle, deadlines, review, "
                    "assessment (考核), Open311 GeoReport v2, live updates.",
        dependencies=[Depends(reject_unknown_query)],
        swagger_ui_parameters={"validatorUrl": None})  # no badge from validator.swagger.io
    app.state.gridwatch = state
    for module in (health, auth_routes, tickets, review, reports, departments, events,
                   open311, evidence_routes):
        app.include_router(module.router)
    install_redoc(app)
    open311.install_error_shape(app)
    console_routes.mount(app)  # the console page at / and its assets
    return app


def _deliver(dispatcher: WebhookDispatcher, clock: Callable[[], datetime]) -> None:
    dispatcher.run_once(now=clock())


class _Loop:
    """Runs ``step`` every ``interval_s`` seconds in a thread until stopped."""

    def __init__(self, name: str, interval_s: float, step: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.step = step
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.step)
            except Exception:  # a worker outlives one failed round
                log.exception("%s round failed; retrying in %.0f s", self.name,
                              self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
