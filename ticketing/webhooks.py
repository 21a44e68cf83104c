"""Webhooks to the upstream work-order centre and to departments, from the transactional
delivery queue (:mod:`ticketing.deliveries`).

Every committed change queues a delivery per receiver in the same transaction as the
change (when the store is built with ``webhooks=DeliveryTargets.from_settings(settings)``,
or ``webhooks=True`` for the centre alone), so no change is lost between "saved" and
"sent". Which receivers a change goes to: :mod:`ticketing.deliveries`. One
:class:`WebhookDispatcher` per receiver (:func:`dispatchers_from_settings`) claims that
receiver's due rows (a lease, so two replicas do not send the same row at once), POSTs
each as JSON and records the outcome: delivered, retry later with exponential backoff, or
given up after ``max_attempts``. Each dispatcher runs in its own loop, so a slow or
failing department endpoint holds up neither the centre nor the other departments.

Each request carries:

* ``Idempotency-Key``: ``<ticket_id>:<version>:<type>`` (a department's:
  ``...:<department>``), the same on every retry; the receiver drops a key it has seen (a
  retry after a lost response is delivered twice).
* ``X-GridWatch-Timestamp``: Unix seconds when sent.
* ``X-GridWatch-Signature``: ``sha256=`` HMAC-SHA256 over ``<timestamp>.<body>`` with the
  key from the environment variable named by ``webhook.secret_env``
  (``GRIDWATCH_WEBHOOK_SECRET`` by default), or for a department by its
  ``webhook_secret_env`` if set. Check it with :func:`verify_signature`.

Retries can reorder events of one ticket; the payload's ``ticket.version`` orders them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from ticketing.config import TicketingSettings, WebhookSettings
from ticketing.deliveries import CENTRE, DeliveryTargets, department_destination
from ticketing.store import Delivery, SqlTicketStore

log = logging.getLogger(__name__)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-GridWatch-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is ours for ``body`` and ``timestamp`` (constant time)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff_s(attempt: int, *, base_s: float, max_s: float, key: str) -> float:
    """Delay before retry number ``attempt`` (1-based): ``base * 2**(attempt-1)``, capped,
    plus up to 10 % jitter derived from ``key`` (deterministic, spreads a burst)."""
    delay = min(max_s, base_s * 2 ** (attempt - 1))
    jitter = int(hashlib.sha256(f"{key}:{attempt}".encode()).hexdigest()[:4], 16) / 0xFFFF
    return delay * (1 + 0.1 * jitter)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    event_key: str
    delivered: bool
    attempt: int
    status_code: int | None
    error: str | None
    retry_at: datetime | None


class WebhookDispatcher:
    """Delivers one receiver's queued deliveries to ``url``.

    Args:
        store: the store whose deliveries to drain (built with ``webhooks=...``).
        url: the receiver.
        secret: the HMAC key (from the environment).
        destination: whose rows: ``"centre"`` or ``"department/<id>"``
            (:mod:`ticketing.deliveries`).
        client: an ``httpx.Client`` (tests may pass one); made from ``timeout_s`` if None.
    """

    def __init__(self, *, store: SqlTicketStore, url: str, secret: bytes,
                 destination: str = CENTRE,
                 timeout_s: float = 10.0, max_attempts: int = 10,
                 backoff_base_s: float = 5.0, backoff_max_s: float = 3600.0,
                 lease_s: float | None = None, worker: str | None = None,
                 client: httpx.Client | None = None) -> None:
        if not secret:
            raise ValueError("expected a non-empty webhook secret, got an empty one")
        self.store = store
        self.url = url
        self.destination = destination
        self.secret = secret
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.lease_s = lease_s if lease_s is not None else 3 * timeout_s + 5
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.client = client or httpx.Client(timeout=timeout_s)

    @classmethod
    def from_settings(cls, *, store: SqlTicketStore, settings: WebhookSettings,
                      environ: dict[str, str] | None = None) -> WebhookDispatcher:
        """From ``ticketing.webhook``; the key from ``os.environ[settings.secret_env]``.

        Raises:
            ValueError: no URL configured, or the secret's variable unset/empty.
        """
        if not settings.url:
            raise ValueError("expected ticketing.webhook.url to be set, got none")
        env = os.environ if environ is None else environ
        secret = env.get(settings.secret_env, "")
        if not secret:
            raise ValueError(f"expected the webhook HMAC key in ${settings.secret_env}, "
                             f"but it is unset or empty")
        return cls(store=store, url=settings.url, secret=secret.encode(),
                   timeout_s=settings.timeout_s, max_attempts=settings.max_attempts,
                   backoff_base_s=settings.backoff_base_s,
                   backoff_max_s=settings.backoff_max_s)

    def run_once(self, *, now: datetime, limit: int = 50) -> list[DeliveryResult]:
        """Claim this receiver's due items at ``now`` and try them in order, once each,
        until one fails: the rest are released untried (no attempt counted) for the next
        round, so an endpoint that is down costs a round one timeout, not one per item,
        and no lease runs out while its items wait behind a dead endpoint (another
        replica would then send them too)."""
        items = self.store.claim_deliveries(now=now, lease_s=self.lease_s, worker=self.worker,
                                        limit=limit, destination=self.destination)
        results = []
        for n, item in enumerate(items):
            result = self._deliver(item, now=now)
            results.append(result)
            if not result.delivered:
                self.store.release_deliveries([i.id for i in items[n + 1:]],
                                          worker=self.worker)
                break
        return results

    def _deliver(self, item: Delivery, *, now: datetime) -> DeliveryResult:
        body = item.payload.encode()
        timestamp = str(int(now.timestamp()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": item.event_key,
            "X-GridWatch-Event": item.event_type,
            "X-GridWatch-Timestamp": timestamp,
            "X-GridWatch-Signature": sign(self.secret, timestamp, body),
        }
        attempt = item.attempts + 1
        status_code: int | None = None
        try:
            response = self.client.post(self.url, content=body, headers=headers)
            status_code = response.status_code
            error = None if response.is_success else f"HTTP {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            self.store.finish_delivery(item.id, at=now, delivered=True)
            return DeliveryResult(item.event_key, True, attempt, status_code, None, None)
        retry_at = None
        if attempt < self.max_attempts:
            retry_at = now + timedelta(seconds=backoff_s(
                attempt, base_s=self.backoff_base_s, max_s=self.backoff_max_s,
                key=item.event_key))
            log.warning("webhook %s to %s attempt %d failed (%s); retry at %s",
                        item.event_key, self.destination, attempt, error,
                        retry_at.isoformat())
        else:
            log.error("webhook %s to %s gave up after %d attempts (%s)", item.event_key,
                      self.destination, attempt, error)
        self.store.finish_delivery(item.id, at=now, delivered=False, error=error,
                                 retry_at=retry_at)
        return DeliveryResult(item.event_key, False, attempt, status_code, error, retry_at)


def dispatchers_from_settings(*, store: SqlTicketStore, settings: TicketingSettings,
                              environ: dict[str, str] | None = None,
                              ) -> list[WebhookDispatcher]:
    """One dispatcher per configured receiver: the centre (``webhook.url``) and each
    department with a ``webhook_url``, all with ``webhook``'s timeout, retries and
    backoff. A department's key is read from its ``webhook_secret_env``, else from
    ``webhook.secret_env``.

    Raises:
        ValueError: a key's variable is unset or empty (every one missing is named, with
            the receiver that needs it), or ``store`` does not queue the deliveries of a
            receiver configured here (build it with
            ``webhooks=DeliveryTargets.from_settings(settings)``).
    """
    env = os.environ if environ is None else environ
    hook = settings.webhook
    wanted: list[tuple[str, str, str, str]] = []  # destination, url, variable, whose
    if hook.url is not None:
        wanted.append((CENTRE, hook.url, hook.secret_env, "ticketing.webhook"))
    for department_id, department in sorted(settings.departments.items()):
        if department.webhook_url is not None:
            wanted.append((department_destination(department_id), department.webhook_url,
                           department.webhook_secret_env or hook.secret_env,
                           f"department {department_id!r}"))
    missing = [f"${variable} (the HMAC key of {whose})"
               for _, _, variable, whose in wanted if not env.get(variable)]
    if missing:
        raise ValueError("expected the webhook HMAC key in " + ", ".join(missing)
                         + ", but it is unset or empty")
    writes = store.webhooks or DeliveryTargets(centre=False)
    needed = DeliveryTargets.from_settings(settings)
    unwritten = ([CENTRE] if needed.centre and not writes.centre else []) + [
        department_destination(d) for d in sorted(needed.departments - writes.departments)]
    if unwritten:
        raise ValueError(f"expected a store that queues webhook deliveries for "
                         f"{', '.join(unwritten)}, got one that does not (build it with "
                         f"webhooks=DeliveryTargets.from_settings(settings))")
    return [WebhookDispatcher(store=store, url=url, secret=env[variable].encode(),
                              destination=destination, timeout_s=hook.timeout_s,
                              max_attempts=hook.max_attempts,
                              backoff_base_s=hook.backoff_base_s,
                              backoff_max_s=hook.backoff_max_s)
            for destination, url, variable, _ in wanted]
