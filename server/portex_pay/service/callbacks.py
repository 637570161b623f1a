"""Delivers signed order callbacks from the durable outbox, at least once, off the payment path.

`CallbackDispatcher.step()` is one batch for `PeriodicWorker`: it claims due deliveries (leased in
the database, so any number of replicas can run it), POSTs each to its order's `callback_url`
concurrently with its own timeout, signed as `portex_pay.domain.callbacks` documents, and records
the outcome. A 2xx answer is a delivery; anything else (another status, redirects included since
they are not followed, a timeout, a connection error) is a failed attempt, retried after an
exponential backoff (domain/retry.py: over three days and more by default) until `max_attempts`,
when the delivery is given up (state 'failed'; an operator can replay it). Payments
only insert outbox rows, so a slow or failing receiver can never delay them; it only slows its own
deliveries. A crash mid-delivery leaves the row leased, and it is sent again when the lease ends:
receivers de-duplicate on the event id.

Callback URLs are chosen by API clients, so unless the operator allows it
(`PORTEX_CALLBACK_ALLOW_PRIVATE`) the poster refuses to connect to loopback, private, link-local,
multicast and other non-global addresses (the HttpPoster port, adapters/http_guard.py), judged on
the address actually connected to after DNS resolution. A refused delivery is a failed attempt
like any other, recorded with its reason ("callback address not allowed: 127.0.0.1 is
loopback"): it backs off and is given up after `max_attempts`, so DNS that is fixed, or an
operator who allows private addresses, lets pending callbacks through without a manual retry.

`CallbackAdmin` is the operators' side: the given-up deliveries, newest first, and a replay that
makes one due again with a fresh schedule. A replay is idempotent: replaying a delivery that is
already pending (replayed a moment ago, or still retrying) changes nothing and says so. A
delivered one is refused, not re-sent: its receiver answered 2xx and de-duplicates on the event
id, so a second copy would only be dropped.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from urllib.parse import urlsplit
from uuid import UUID

import structlog

from portex_pay.domain.callbacks import (
    DueCallback,
    FailedCallback,
    callback_body,
    callback_headers,
)
from portex_pay.domain.retry import (
    CALLBACK_BACKOFF_BASE,
    CALLBACK_BACKOFF_CAP,
    CALLBACK_JITTER,
    CALLBACK_MAX_ATTEMPTS,
    retry_in,
)
from portex_pay.service.applications import AdminError, InvalidAdminInput
from portex_pay.service.ports import CallbackOutbox, FailedCallbacks, HttpPoster, PostFailed

log = structlog.get_logger(__name__)

# Added to the longest a batch can take, so that a live dispatcher is never overtaken by another
# replica re-claiming its rows (which would only mean a duplicate, but needlessly).
_LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Outcome:
    delivered: bool
    status: int | None
    error: str | None = None


class CallbackDispatcher:
    def __init__(
        self,
        repository: CallbackOutbox,
        poster: HttpPoster,
        *,
        timeout: float = 5.0,
        concurrency: int = 16,
        max_attempts: int = CALLBACK_MAX_ATTEMPTS,
        base_backoff: float = CALLBACK_BACKOFF_BASE,
        max_backoff: float = CALLBACK_BACKOFF_CAP,
        batch_size: int | None = None,
    ) -> None:
        if timeout <= 0 or concurrency < 1 or max_attempts < 1:
            raise ValueError("timeout must be positive, concurrency and max_attempts at least 1")
        self._repository = repository
        self._poster = poster
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._batch_size = batch_size or concurrency
        self._slots = asyncio.Semaphore(concurrency)
        # A claimed row waits at most for the batch's earlier rounds of `concurrency` deliveries.
        rounds = math.ceil(self._batch_size / concurrency)
        self.lease_seconds = rounds * timeout + _LEASE_MARGIN_SECONDS

    async def step(self) -> int:
        """Claims and delivers one batch; returns how many deliveries it attempted."""
        due = await self._repository.claim_due(self._batch_size, self.lease_seconds)
        if not due:
            return 0
        results = await asyncio.gather(
            *(self._deliver(callback) for callback in due), return_exceptions=True
        )
        # Delivery problems are recorded per row; what is left is the database failing to record
        # an outcome. The row keeps its lease and is retried; the worker logs and backs off.
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(due)

    async def _deliver(self, callback: DueCallback) -> None:
        async with self._slots:
            outcome = await self._post(callback)
        if outcome.delivered:
            assert outcome.status is not None
            await self._repository.mark_delivered(callback.event_id, outcome.status)
            return
        failures = callback.attempts + 1
        delay = retry_in(
            failures, self._max_attempts, base=self._base_backoff, cap=self._max_backoff
        )
        # Jitter, so that a receiver coming back from an outage is not hit by every queued
        # retry in the same second.
        retry_after = None if delay is None else delay * random.uniform(CALLBACK_JITTER, 1.0)
        error = outcome.error or "failed"
        await self._repository.mark_failed_attempt(
            callback.event_id, error=error, status=outcome.status, retry_in=retry_after
        )
        # Only the host: a callback URL may carry the receiver's own credentials in its path or
        # query string.
        log.warning(
            "callback delivery failed",
            event_id=callback.event_id,
            event_type=callback.event_type,
            application_id=str(callback.application_id),
            host=urlsplit(callback.url).hostname,
            attempt=failures,
            status=outcome.status,
            error=error,
            retry_in_seconds=None if retry_after is None else round(retry_after, 3),
            gave_up=retry_after is None,
        )

    async def _post(self, callback: DueCallback) -> _Outcome:
        try:
            body = callback_body(
                event_id=callback.event_id,
                event_type=callback.event_type,
                occurred_at=callback.occurred_at,
                tg_payment_id=callback.tg_payment_id,
                order=callback.data.get("order"),
            )
        except (KeyError, ValueError, TypeError) as error:
            # An event this version cannot describe; retrying lets a fixed release send it.
            return _Outcome(False, None, f"unrepresentable event: {type(error).__name__}")
        headers = callback_headers(
            callback.signing_secrets, callback.event_id, int(time.time()), body
        )
        try:
            answer = await self._poster.post(callback.url, body, headers, timeout=self._timeout)
        except PostFailed as failure:
            return _Outcome(False, None, failure.reason)
        status = answer.status
        if 200 <= status < 300:
            return _Outcome(True, status)
        return _Outcome(False, status, f"HTTP {status}")


# A page of `admin callbacks --failed`: one short query each.
FAILED_PAGE_MAX = 1000


class CallbackAdmin:
    def __init__(self, deliveries: FailedCallbacks) -> None:
        self._deliveries = deliveries

    async def failed(
        self, application_id: UUID | None, *, before: int | None = None, limit: int = 100
    ) -> list[FailedCallback]:
        """Given-up deliveries (of one application, or every one), newest first; the next page
        starts `before` the last one's event id."""
        if not 1 <= limit <= FAILED_PAGE_MAX:
            raise InvalidAdminInput(f"--limit must be from 1 to {FAILED_PAGE_MAX}")
        return await self._deliveries.failed(application_id, before=before, limit=limit)

    async def replay(self, event_id: int, application_id: UUID | None) -> bool:
        """Makes a given-up delivery due now, with a fresh retry schedule; False when it was
        pending already (nothing to do). AdminError when there is no such delivery (another
        application's is no such delivery) or it was delivered."""
        found = await self._deliveries.requeue_failed(event_id, application_id)
        if found is None:
            owner = "" if application_id is None else f" of application {application_id}"
            raise AdminError(f"no callback delivery for event {event_id}{owner}")
        state, delivered_at = found
        if state == "delivered":
            raise AdminError(
                f"the callback of event {event_id} was delivered at {delivered_at}: receivers "
                "de-duplicate on the event id, so it is not sent again"
            )
        return state == "failed"


__all__ = ["FAILED_PAGE_MAX", "CallbackAdmin", "CallbackDispatcher"]
