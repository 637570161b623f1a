"""The ports: what the use cases need from the world, as `typing.Protocol`s.

`service/` and `api/` depend on these and on `domain/` only; the adapters (PostgreSQL, the Bot
API client, the HTTP client) satisfy them structurally, and `app.py` alone wires one to the
other. A test can hand a use case an in-memory fake of a port instead (tests/unit/fakes.py).

Atomicity. A change of state and the event announcing it always commit together. Who makes them
atomic follows from who decides:

1. A use case that reads, decides, and then writes more than one thing owns its unit of work: it
   opens the port's `transaction()` and changes what it decided through the parts handed to it,
   one per aggregate (`Payments.transaction()`: service/ledger.py). The branching is the
   service's; the parts only read and write, and what is judged is locked first.
2. A change that decides nothing beyond its guard is one port method and, in PostgreSQL, one
   statement that also inserts its event (a data-modifying CTE; adapters/postgres/events_writer),
   with no transaction around it: a compare-and-set whose guard is a domain transition table
   (`state = ANY(sources(...))`), or an insert made idempotent by a unique key. Its answer (None,
   False) tells the use case whether it applied. Orders, `Payments.claim_due_refunds` and
   `refund_attempt_failed`, `DeadLetters.record` are such methods.
3. An adapter opens a transaction of its own only to make one method of the second kind atomic
   where one statement cannot: a row lock, then several statements on one aggregate, nothing in
   between that a use case would branch on. `RelayStore.start_poll`, `set_webhook` and
   `delivered` are these (one bot's relay row and the updates it keeps; getUpdates' offset rule
   is Telegram's, written once in SQL and mirrored by the fake).

A decision an adapter would otherwise take belongs to a use case, with a unit of work (1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from uuid import UUID

from portex_pay.domain.application import Application, ApplicationListing, Bot
from portex_pay.domain.callbacks import DueCallback, FailedCallback
from portex_pay.domain.catalog import CatalogItem, PricingMode, SeenUser
from portex_pay.domain.checkout import Disposition, PaymentOutcome, PaymentRecord
from portex_pay.domain.events import Cursor, Event, EventType
from portex_pay.domain.fulfilment import UnfulfilledOrder
from portex_pay.domain.init_data import TelegramUser
from portex_pay.domain.order import Claim, Order
from portex_pay.domain.order_filter import OrderListQuery
from portex_pay.domain.pay import PayCommand
from portex_pay.domain.refunds import DueRefund, Refund, RefundCause, RefundFilter, RefundPosition
from portex_pay.domain.relay import Kept, RelayBot, RelayedUpdate
from portex_pay.domain.star_ledger import (
    LedgerClaim,
    LedgerEntry,
    LedgerFigures,
    StarAmount,
    StarTransaction,
    StarTransactionQuery,
)
from portex_pay.domain.subscription import SubscriptionCharge, SubscriptionState
from portex_pay.domain.telegram import BotProfile, ForwardRequest, ForwardResponse, InvoiceRequest
from portex_pay.domain.updates import DeadLetter

# ---------------------------------------------------------------------------- PostgreSQL


class Applications(Protocol):
    async def create(
        self,
        name: str,
        *,
        webhook_secret: str,
        signing_secret: str,
        bot_token: str | None = None,
        bot_id: int | None = None,
        bot_username: str | None = None,
    ) -> Application: ...

    async def get(self, application_id: UUID) -> Application | None: ...

    async def get_by_name(self, name: str) -> Application | None: ...

    async def get_by_bot_id(self, bot_id: int) -> Application | None: ...

    async def set_bot_messages(
        self, application_id: UUID, changes: dict[str, str | bool | None]
    ) -> Application | None: ...

    async def relay_allowed_updates(self, application_id: UUID) -> tuple[str, ...] | None:
        """The kinds the app's own bot asked the relay for (() for Telegram's default set), or
        None when it does not use the relay."""
        ...

    async def set_bot(
        self, application_id: UUID, bot_token: str, bot_id: int, bot_username: str | None
    ) -> bool: ...

    async def signing_secret(self, application_id: UUID) -> str | None: ...

    async def rotate_signing_secret(
        self, application_id: UUID, new_secret: str, overlap: timedelta
    ) -> datetime | None:
        """Makes `new_secret` current, the replaced one signing too until the returned time;
        None when there is no such application."""
        ...

    async def with_bots(self) -> list[Application]: ...

    async def set_updates_mode(self, application_id: UUID, mode: str | None) -> bool: ...

    async def set_edge(
        self,
        application_id: UUID,
        *,
        pricing_mode: PricingMode | None = None,
        allowed_origins: list[str] | None = None,
        callback_prefixes: list[str] | None = None,
    ) -> Application | None: ...

    async def origin_allowed_anywhere(self, origin: str) -> bool: ...

    async def set_unfulfilled_refund(
        self, application_id: UUID, after: timedelta | None
    ) -> Application | None:
        """Switches the unfulfilled-order policy on with this deadline (keeping when it was
        switched on), or off (None); None when there is no such application."""
        ...

    async def add_key(self, application_id: UUID, key_id: str, key_hash: bytes) -> None: ...

    async def revoke_key(self, application_id: UUID, key_id: str) -> bool: ...

    async def find_by_key_hash(self, key_hash: bytes) -> tuple[bytes, Application] | None: ...

    async def list(self) -> list[ApplicationListing]: ...


class Orders(Protocol):
    async def create(
        self,
        application_id: UUID,
        command: PayCommand,
        *,
        ttl_seconds: float,
        lease_seconds: float,
    ) -> Order: ...

    async def create_idempotent(
        self,
        application_id: UUID,
        request_id: str,
        command: PayCommand,
        *,
        ttl_seconds: float,
        lease_seconds: float,
    ) -> Claim: ...

    async def find_by_request_id(self, application_id: UUID, request_id: str) -> Claim | None: ...

    async def get(self, application_id: UUID, tg_payment_id: int) -> Order | None: ...

    async def find_resumable(self, application_id: UUID, tg_use_id: int) -> Order | None: ...

    async def take_invoice_lease(
        self, application_id: UUID, tg_payment_id: int, lease_seconds: float
    ) -> Order | None: ...

    async def release_invoice_lease(self, tg_payment_id: int) -> None: ...

    async def record_invoice_link(self, tg_payment_id: int, link: str) -> Order | None: ...

    async def record_invoice_failure(
        self, tg_payment_id: int, code: str, reason: str, retry_after: int | None
    ) -> Order | None: ...

    async def cancel(self, application_id: UUID, tg_payment_id: int) -> Order | None: ...

    async def record_client_report(
        self, application_id: UUID, tg_payment_id: int, status: str
    ) -> Order | None: ...

    async def expire_due(self, limit: int) -> int:
        """Marks up to `limit` unpaid orders past their expiry time expired, with their events;
        how many it marked."""
        ...

    async def acknowledge(
        self, application_id: UUID, tg_payment_id: int, request_id: str | None
    ) -> Order | None:
        """Records the delivery of the goods of a paid order (domain/fulfilment.FULFILLABLE) not
        acknowledged before, with its `order.fulfilled` event (a compare-and-set); None when it
        did not apply."""
        ...

    # Reads (issue 18: ListOrders, QueryOrder by charge id).

    async def find_by_charge(self, application_id: UUID, charge_id: str) -> Order | None:
        """The application's order a charge was recorded for: the charge that paid it, a
        duplicate charge of it, or one refunded since; None for another application's charge."""
        ...

    async def list(self, application_id: UUID, query: OrderListQuery) -> list[Order]:
        """One page of ListOrders (domain/order_filter.py), in one short statement."""
        ...


class UnfulfilledOrders(Protocol):
    """What the unfulfilled-order policy reads (service/fulfilment.py)."""

    async def unfulfilled_past_deadline(self, now: datetime, limit: int) -> list[UnfulfilledOrder]:
        """Up to `limit` paid orders, oldest payment first, that nobody acknowledged within their
        application's deadline as of `now`, paid since its policy was switched on, whose charge
        has no refund yet."""
        ...


class SubscriptionReads(Protocol):
    """What QueryOrder and the subscription RPCs read of a subscription beside its order."""

    async def get(self, application_id: UUID, tg_payment_id: int) -> Order | None: ...

    async def subscription_charges(
        self, application_id: UUID, tg_payment_id: int
    ) -> list[SubscriptionCharge]:
        """The charges that paid the order's periods, oldest period first."""
        ...


class OrderSweeps(Protocol):
    """What the housekeeping does to orders (service/housekeeping.py). The PostgreSQL adapter of
    Orders has both; a separate port because no other use case needs them."""

    async def expire_due(self, limit: int) -> int:
        """Marks up to `limit` unpaid orders past their expiry time expired, with their events;
        returns how many."""
        ...

    async def prune_idempotency_keys(self, older_than_seconds: float) -> int:
        """Forgets the request ids older than that; returns how many."""
        ...

    async def expire_subscriptions(self, limit: int) -> int:
        """Marks up to `limit` subscriptions whose period ended (plus the grace,
        domain/subscription.GRACE) without a renewal EXPIRED, with `subscription.expired`;
        returns how many."""
        ...


class ProcessedUpdates(Protocol):
    """Telegram updates processed (by bot and update id): a redelivery changes nothing."""

    async def claim(self, bot_id: int, update_id: int, kind: str) -> bool:
        """Marks the update processed; False when it already was (a redelivery)."""
        ...


class PaidOrders(Protocol):
    """Orders as money changes them: locked before they are judged, paid and refunded only as
    the transition table (domain/order.py) allows."""

    async def lock(self, application_id: UUID, tg_payment_id: int) -> Order | None:
        """The application's order, locked until the unit of work ends: a concurrent charge,
        refund or cancel waits."""
        ...

    async def lock_charged(self, application_id: UUID, charge_id: str) -> Order | None:
        """The application's order this charge was recorded against, locked like `lock` (None
        when the charge has no order). Taken before the charge's or its refund's rows, so every
        unit of work locks an order first and two of them never wait on each other."""
        ...

    async def claim_and_lock(
        self, update: tuple[int, int, str], application_id: UUID, tg_payment_id: int | None
    ) -> tuple[bool, Order | None]:
        """The update (bot id, update id, kind) marked processed, and the application's order
        locked like `lock`, in one step: (False when the update was processed already, the
        order; None when there is no such order or `tg_payment_id` is None)."""
        ...

    async def pay(self, record: PaymentRecord) -> Order | None:
        """The record's charge recorded as the one that pays its order (exactly once, by its
        charge id) and the order, locked in this unit of work, paid by it with its event, in
        one step. None, with nothing recorded, when the charge id is known already or the
        table does not allow paying the order. A subscription's order starts its subscription:
        ACTIVE, its period ending at the record's subscription_expiration_date (one period from
        now when None)."""
        ...

    async def renew(self, tg_payment_id: int, charge_id: str, period_end: datetime) -> Order:
        """A started subscription renewed by the charge, with `subscription.renewed`: a later
        period extends it and makes it ACTIVE; an earlier one leaves the current period."""
        ...

    async def set_subscription_state(
        self,
        tg_payment_id: int,
        target: SubscriptionState,
        event: EventType,
        extra: dict[str, Any],
    ) -> Order | None:
        """The started subscription becomes `target`, with `event` (its data merged with
        `extra`); None when it is `target` already."""
        ...

    async def mark_refunded(self, tg_payment_id: int, charge_id: str) -> Order | None:
        """The order the charge paid becomes refunded, with its event; None when it is not (any
        more) in a state the table lets become refunded, or another charge paid it."""
        ...

    async def paid_by(self, application_id: UUID, charge_id: str) -> Order | None: ...


class Charges(Protocol):
    """The charges Telegram reported, each counted once by its charge id."""

    async def add(
        self, record: PaymentRecord, tg_payment_id: int | None, outcome: PaymentOutcome
    ) -> bool:
        """Records the charge; False when its charge id is known already."""
        ...

    async def owner(self, charge_id: str) -> UUID | None: ...

    async def paying_amount(self, tg_payment_id: int, charge_id: str) -> int | None:
        """The amount of the order's charge `charge_id` when it paid the order or one of its
        periods (accepted or renewal), else None."""
        ...

    async def period_paid(self, tg_payment_id: int, period_end: datetime) -> bool:
        """Whether the order has a paying charge (accepted or renewal) for the period ending at
        `period_end`."""
        ...

    async def mark_refunded(
        self, application_id: UUID, charge_id: str
    ) -> tuple[int | None, Disposition] | None:
        """Marks the application's charge refunded (once): its order id and disposition, or None
        when the application has no such charge."""
        ...


class RefundIntents(Protocol):
    """Refunds asked for, one per charge (domain/refunds.py)."""

    async def add(
        self,
        charge_id: str,
        bot_id: int,
        application_id: UUID,
        tg_payment_id: int | None,
        tg_use_id: int,
        amount: int,
        cause: RefundCause,
    ) -> bool:
        """The intent to refund a charge, for `cause`, with its event; False when there is one
        already (its cause stands)."""
        ...

    async def of_order(self, tg_payment_id: int) -> Refund | None:
        """The refund of the charge that paid this order, if one was asked for."""
        ...

    async def complete(self, application_id: UUID, charge_id: str) -> None:
        """The refund of the application's charge, if one was asked for, succeeded (as the
        table allows)."""
        ...


class EventWriter(Protocol):
    async def add(
        self,
        application_id: UUID,
        tg_payment_id: int | None,
        event_type: EventType,
        data: dict[str, Any],
    ) -> None:
        """An event, with the order's snapshot when there is an order."""
        ...


class PaymentTransaction(Protocol):
    """One unit of work of the money use cases (service/ledger.py), in parts by aggregate: all
    they do commits together when the `transaction()` block ends, none of it if it raises."""

    @property
    def updates(self) -> ProcessedUpdates: ...

    @property
    def orders(self) -> PaidOrders: ...

    @property
    def charges(self) -> Charges: ...

    @property
    def refunds(self) -> RefundIntents: ...

    @property
    def events(self) -> EventWriter: ...


class Payments(Protocol):
    """Telegram's updates about money: pre-checkouts, charges, refunds."""

    def transaction(self) -> AbstractAsyncContextManager[PaymentTransaction]:
        """A unit of work for one atomic use case (rule 1 above)."""
        ...

    async def claim(self, bot_id: int, update_id: int, kind: str) -> bool:
        """Claims an update for work done outside the database; False when claimed before."""
        ...

    async def claim_with_event(
        self,
        update: tuple[int, int, str],
        application_id: UUID,
        tg_payment_id: int | None,
        event_type: EventType,
        data: dict[str, Any],
    ) -> bool:
        """Claims the update (bot id, update id, kind) and adds the event announcing what it
        did, atomically, in one round trip; False (and no event) when it was claimed before."""
        ...

    async def checkout_context(
        self, bot_id: int, update_id: int, application_id: UUID, tg_payment_id: int
    ) -> tuple[bool, Order | None]:
        """(was this update processed already, the application's order) in one round trip."""
        ...

    async def claim_due_refunds(self, limit: int, lease_seconds: float) -> list[DueRefund]:
        """Leases due refunds to this caller (no connection is held while Telegram is
        called)."""
        ...

    async def refund_attempt_failed(
        self, charge_id: str, error: str, retry_in: float | None
    ) -> None:
        """Backs off, or (retry_in None) gives up: the refund fails, with its event. Nothing
        when the refund is unknown or the table does not allow the change (domain/refunds.py)."""
        ...


class Refunds(Protocol):
    """Refunds as objects (ListRefunds, RetryRefund), scoped to an application: another's refund
    is not found."""

    async def get(self, application_id: UUID, charge_id: str) -> Refund | None: ...

    async def retry(self, application_id: UUID, charge_id: str) -> Refund | None:
        """A failed refund (domain/refunds.RETRYABLE) is pending again, due now, with no attempts
        and one more retry, announced as `refund.retried`; None when it did not apply."""
        ...

    async def list(
        self,
        application_id: UUID,
        refund_filter: RefundFilter,
        after: RefundPosition | None,
        limit: int,
    ) -> list[Refund]:
        """Up to `limit` refunds that pass the filter, newest first (creation time, then charge
        id in code point order, both descending), after `after` when given."""
        ...


class EventStore(Protocol):
    """The event log, read in commit order (domain/events.py: cursors)."""

    async def read_after(
        self,
        cursor: Cursor,
        *,
        limit: int,
        application_id: UUID | None = None,
        tg_payment_id: int | None = None,
    ) -> list[Event]: ...

    async def now(self) -> Cursor: ...

    async def pruned_up_to(self) -> Cursor | None: ...

    async def prune(self, older_than_seconds: float) -> int:
        """Deletes a batch of the events older than that; returns how many (0: none left)."""
        ...


class CallbackOutbox(Protocol):
    async def claim_due(self, limit: int, lease_seconds: float) -> list[DueCallback]: ...

    async def mark_delivered(self, event_id: int, status: int) -> None: ...

    async def mark_failed_attempt(
        self, event_id: int, *, error: str, status: int | None, retry_in: float | None
    ) -> None: ...


class FailedCallbacks(Protocol):
    """The given-up callback deliveries, for operators."""

    async def failed(
        self, application_id: UUID | None, *, before: int | None, limit: int
    ) -> list[FailedCallback]: ...

    async def requeue_failed(
        self, event_id: int, application_id: UUID | None
    ) -> tuple[str, datetime | None] | None:
        """Makes a given-up delivery due now with a fresh schedule; its state and delivered_at
        before (None: no such delivery, for this application when given)."""
        ...


class Catalog(Protocol):
    async def get(self, application_id: UUID, key: str) -> CatalogItem | None: ...

    async def list(self, application_id: UUID) -> list[CatalogItem]: ...

    async def put(self, application_id: UUID, item: CatalogItem) -> bool: ...

    async def delete(self, application_id: UUID, key: str) -> bool: ...


class TelegramUsers(Protocol):
    async def record(self, application_id: UUID, user: TelegramUser, seen_at: datetime) -> None: ...

    async def get(self, application_id: UUID, user_id: int) -> SeenUser | None: ...


@dataclass(frozen=True, slots=True)
class ExportedOrder:
    """An order as the accounting export reads it: the order, and the times of its ends that
    the Order itself does not carry."""

    order: Order
    refunded_at: datetime | None
    cancelled_at: datetime | None


class AccountingRecords(Protocol):
    """The rows the accounting export writes (service/export.py), read in keyset batches: each
    call is one short query, and `after` is the sort key of the previous batch's last row (None:
    from `start`)."""

    async def orders(
        self,
        application_id: UUID,
        start: datetime,
        end: datetime,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ExportedOrder]:
        """The application's orders created in [start, end), by (created_at, tg_payment_id),
        the first `limit` after `after`."""
        ...

    async def transactions(
        self,
        application_id: UUID,
        start: datetime,
        end: datetime,
        after: tuple[datetime, str, str] | None,
        limit: int,
    ) -> list[LedgerEntry]:
        """The Star transactions of the application's bots made in [start, end), by (date, id,
        direction), the first `limit` after `after`."""
        ...


class DeadLetters(Protocol):
    async def record(self, letter: DeadLetter, announce: Sequence[EventType]) -> int | None:
        """Keeps the letter with an event of each type in `announce`, atomically; None when it
        was kept (or the update processed) before."""
        ...


class PollLeases(Protocol):
    owner: str

    async def acquire(self, bot_id: int) -> tuple[int, tuple[str, ...] | None] | None:
        """Takes or renews the bot's lease: the next offset and the relay's kinds, or None
        when another live replica holds it."""
        ...

    async def advance(self, bot_id: int, next_offset: int) -> bool: ...

    async def release(self, bot_id: int) -> None: ...


class RelayStore(Protocol):
    """The app's own bot's updates, kept for it (service/relay.py)."""

    async def enable(self, bot_id: int, application_id: UUID) -> RelayBot: ...

    async def get(self, bot_id: int) -> RelayBot | None: ...

    async def keep(self, bot_id: int, update_id: int, kind: str | None, raw: bytes) -> Kept: ...

    async def start_poll(self, bot_id: int, offset: int | None) -> tuple[int, RelayBot]: ...

    async def poll(
        self, bot_id: int, generation: int, limit: int
    ) -> tuple[bool, RelayBot | None, list[RelayedUpdate]]: ...

    async def set_allowed_updates(
        self, bot_id: int, allowed: Sequence[str]
    ) -> tuple[bool, RelayBot]: ...

    async def set_webhook(
        self, bot_id: int, url: str | None, secret: str | None, *, drop_pending: bool
    ) -> None:
        """Sets or deletes the webhook; voids any delivery lease on the bot, so that the new
        setting is delivered to at once and a delivery still in flight confirms nothing."""
        ...

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[RelayBot]:
        """Leases bots with updates due; each RelayBot carries its lease (`lease`)."""
        ...

    async def due_updates(self, bot: RelayBot, limit: int) -> list[RelayedUpdate]: ...

    async def delivered(self, bot: RelayBot, update_id: int) -> bool:
        """Confirms the update when `bot.lease` still holds and the webhook is the one it was
        POSTed to; False otherwise (confirms nothing)."""
        ...

    async def delivery_failed(self, bot: RelayBot, error: str, retry_in: float) -> None: ...

    async def release(self, bot: RelayBot) -> None:
        """Ends `bot.lease` (nothing when it is no longer the bot's lease)."""
        ...

    async def release_all(self) -> None:
        """Releases every delivery lease this replica holds (shutdown, or a release that
        failed earlier)."""
        ...

    async def prune(self, max_age_seconds: float) -> int: ...


# ---------------------------------------------------------------------------- the Star ledger


class StarTransactionRows(Protocol):
    """A bot's Star transactions and its reader's checkpoint, inside a unit of work
    (service/star_ledger.py). The reader is the store's `owner`."""

    async def advance(self, bot_id: int, expected: int, checkpoint: int, *, release: bool) -> bool:
        """Moves the bot's checkpoint from `expected` to `checkpoint`, notes the read and renews
        (or, `release`, ends) the owner's lease; False, changing nothing, when the owner no
        longer holds the lease or the checkpoint moved (another reader)."""
        ...

    async def add(
        self, application_id: UUID, bot_id: int, position: int, entry: LedgerEntry
    ) -> bool:
        """Stores the transaction; False when the bot's transaction of that key is stored
        already (a page read again)."""
        ...

    async def record_outside_refund(
        self, application_id: UUID, bot_id: int, charge_id: str
    ) -> bool:
        """Records a refund, made outside portex-pay, of the application's charge as succeeded;
        False when the charge is not the application's or a refund of it exists already."""
        ...


class StarLedgerTransaction(PaymentTransaction, Protocol):
    """A unit of work of the money use cases that also stores Star transactions."""

    @property
    def star_transactions(self) -> StarTransactionRows: ...


class StarLedgerStore(Protocol):
    """The Star ledger in PostgreSQL: transactions, checkpoints and the readers' leases (one
    reader per bot across replicas; this store reads as `owner`)."""

    owner: str

    def transaction(self) -> AbstractAsyncContextManager[StarLedgerTransaction]:
        """A unit of work storing a page with what it settles (service/ports.py, rule 1)."""
        ...

    async def claim(self, bot_id: int, *, min_age: float) -> LedgerClaim | None:
        """Takes the bot's lease for a run, unless another live reader holds it or the bot was
        read less than `min_age` seconds ago; the checkpoint to read from."""
        ...

    async def advance(self, bot_id: int, expected: int, checkpoint: int, *, release: bool) -> bool:
        """StarTransactionRows.advance as one statement of its own (a page with nothing to
        store)."""
        ...

    async def refresh_withdrawals(self, bot_id: int, transactions: list[StarTransaction]) -> int:
        """Updates the stored withdrawals' states to those read again and ends the owner's
        lease; how many changed."""
        ...

    async def release(self, bot_id: int) -> None:
        """Ends the owner's lease on the bot (nothing when it holds none)."""
        ...

    async def page(
        self,
        application_id: UUID,
        bot_id: int,
        query: StarTransactionQuery,
        after: tuple[int, str, str] | None,
        limit: int,
    ) -> list[LedgerEntry]:
        """The application's bot's transactions, newest first (date, id, direction), after the
        key `after` (unix date, id, direction), at most `limit`: one short query."""
        ...

    async def figures(self, application_id: UUID, bot_id: int, now: datetime) -> LedgerFigures:
        """Received, refunded, withdrawn and held Stars as of `now`, and the last read."""
        ...


# ---------------------------------------------------------------------------- Telegram


class TelegramBot(Protocol):
    """The Bot API, one typed method per call the service makes. Failures raise the errors of
    domain/telegram.py (TelegramApiError and its kinds, TelegramNetworkError)."""

    async def get_me(self, token: str) -> BotProfile: ...

    async def create_invoice_link(
        self, bot: Bot, invoice: InvoiceRequest, *, timeout: float | None = None
    ) -> str: ...

    async def answer_pre_checkout_query(
        self,
        bot: Bot,
        query_id: str,
        *,
        ok: bool,
        error_message: str | None = None,
        timeout: float | None = None,
    ) -> None: ...

    async def refund_star_payment(self, token: str, user_id: int, charge_id: str) -> None:
        """Raises ChargeAlreadyRefunded when the charge was refunded before."""
        ...

    async def edit_user_star_subscription(
        self, token: str, user_id: int, charge_id: str, *, is_canceled: bool
    ) -> None:
        """Cancels (`is_canceled`) or re-enables the renewals of the user's subscription whose
        first payment was `charge_id`."""
        ...

    async def send_message(
        self, bot: Bot, chat_id: int, text: str, *, timeout: float | None = None
    ) -> None: ...

    async def get_updates(
        self, bot: Bot, *, offset: int, timeout: int, allowed_updates: Sequence[str]
    ) -> list[Any]: ...

    async def set_webhook(
        self, bot: Bot, url: str, *, secret_token: str, allowed_updates: Sequence[str]
    ) -> None: ...

    async def delete_webhook(self, bot: Bot) -> None: ...

    async def webhook_url(self, bot: Bot) -> str | None: ...

    async def get_star_transactions(self, bot: Bot, *, offset: int, limit: int) -> list[Any]:
        """The listed transactions as Telegram sent them (each item unread: the ledger reads
        them, domain/star_ledger.py), in chronological order."""
        ...

    async def get_my_star_balance(self, bot: Bot) -> StarAmount: ...

    async def run_webhook_reply(
        self, bot: Bot, method: str, body: bytes, content_type: str, *, timeout: float
    ) -> None:
        """Runs a method call a webhook answered with, its body sent on as it came; the
        result is discarded (as Telegram does)."""
        ...


class BotApiForwarder(Protocol):
    """The Bot API for the proxy that forwards the app's own bot's requests as they are
    (api/http/botapi_proxy.py)."""

    def forward(
        self, request: ForwardRequest, *, read_timeout: float
    ) -> AbstractAsyncContextManager[ForwardResponse]:
        """Sends the request (its body streamed) and yields Telegram's answer once its status
        and headers are in; the connection is held until the block ends. Raises
        ForwardRefused when the request would go elsewhere than its checked path (nothing is
        sent), TelegramNetworkError when Telegram does not answer (`read_timeout` seconds
        between reads at most); never an error carrying the URL (it holds the token)."""
        ...


# ---------------------------------------------------------------------------- outgoing HTTP


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    content_type: str
    body: bytes  # at most the `read_limit` bytes asked for


class PostFailed(Exception):
    """No answer: `kind` says why (a timeout, an address the rule refused, a connection
    error); `reason` is safe to log and store (never the URL, which may hold credentials)."""

    def __init__(self, kind: Literal["timeout", "refused", "connection"], reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class HttpPoster(Protocol):
    """POSTs to URLs our clients chose (order callbacks, the app's own bot's webhook): no
    redirects followed, the address rule applied (adapters/http_guard.py)."""

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,
        read_limit: int = 0,
    ) -> HttpAnswer: ...


# ---------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class OutboxSample:
    """One outbox's backlog: rows waiting, and the age of the oldest (0 when none waits)."""

    outbox: str  # refunds, callbacks, relay
    depth: int
    oldest_age_seconds: float


class OutboxBacklog(Protocol):
    """The outboxes' backlogs, read together in one cheap query (the metrics job's)."""

    async def sample(self) -> list[OutboxSample]: ...


class Metrics(Protocol):
    """What the use cases count and time (Prometheus: portex_pay/metrics.py). Each call is an
    increment, an observe or a set: cheap enough for the payment path."""

    def payment_recorded(self, outcome: str) -> None: ...

    def pre_checkout_answered(self, ok: bool, seconds: float) -> None: ...

    def refund_attempted(self, outcome: str) -> None: ...

    def telegram_called(self, method: str, result: str) -> None: ...

    def outbox_sampled(self, outbox: str, depth: int, oldest_age_seconds: float) -> None: ...

    def stream_sampled(
        self, subscribers: int, queue_sizes: Sequence[int], overflowed: int
    ) -> None: ...

    def pool_sampled(self, size: int, in_use: int) -> None: ...


class NoMetrics:
    """A Metrics port that records nothing: for a use case whose counts nobody reads (the CLI's,
    unit tests')."""

    def payment_recorded(self, outcome: str) -> None:
        pass

    def pre_checkout_answered(self, ok: bool, seconds: float) -> None:
        pass

    def refund_attempted(self, outcome: str) -> None:
        pass

    def telegram_called(self, method: str, result: str) -> None:
        pass

    def outbox_sampled(self, outbox: str, depth: int, oldest_age_seconds: float) -> None:
        pass

    def stream_sampled(self, subscribers: int, queue_sizes: Sequence[int], overflowed: int) -> None:
        pass

    def pool_sampled(self, size: int, in_use: int) -> None:
        pass


NO_METRICS: Metrics = NoMetrics()
