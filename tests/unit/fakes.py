"""In-memory fakes of the service's ports (portex_pay/service/ports.py), for unit tests of the
use cases without PostgreSQL or Telegram.

They keep the ports' contracts, not their SQL, and the contract tests (tests/contract) hold them
to it beside the PostgreSQL adapters. The money ports share one `MemoryDatabase`, as the adapters
share the tables: an order the Orders fake creates is the one the Payments fake pays, and every
event lands in one log that the EventStore fake reads. A `transaction()` commits everything done
through it or, when its block raises, undoes it; unique keys (an update, a charge, a refund per
charge) refuse a second insert; the state guards come from the same transition tables the
PostgreSQL adapter derives its `state = ANY($n)` guards from. Time is `MemoryDatabase.now`, moved
by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from portex_pay.domain.application import Bot
from portex_pay.domain.checkout import Disposition, PaymentOutcome, PaymentRecord
from portex_pay.domain.events import Cursor, Event, EventType
from portex_pay.domain.fulfilment import FULFILLABLE, UnfulfilledOrder
from portex_pay.domain.order import Claim, Order, OrderState, sources
from portex_pay.domain.order_filter import OrderListQuery, sort_key
from portex_pay.domain.pay import PayCommand
from portex_pay.domain.refunds import (
    DUE,
    RETRYABLE,
    DueRefund,
    Refund,
    RefundCause,
    RefundFilter,
    RefundPosition,
    RefundState,
    attempt_sources,
)
from portex_pay.domain.refunds import sources as refund_sources
from portex_pay.domain.relay import Kept, RelayBot, RelayedUpdate, wants
from portex_pay.domain.star_ledger import StarAmount
from portex_pay.domain.subscription import (
    GRACE,
    RENEWING,
    SubscriptionCharge,
    SubscriptionState,
    period_of,
)
from portex_pay.domain.telegram import BotProfile, InvoiceRequest
from portex_pay.domain.updates import DeadLetter

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def make_order(
    tg_payment_id: int,
    application_id: UUID,
    state: OrderState = OrderState.PENDING,
    *,
    amount: int = 50,
    tg_use_id: int = 42,
    charge_id: str | None = None,
) -> Order:
    return Order(
        tg_payment_id=tg_payment_id, application_id=application_id, tg_use_id=tg_use_id,
        amount=amount, label="Gems", title="100 gems", description="d", payload=None,
        photo_url=None, photo_size=None, photo_width=None, photo_height=None, callback_url=None,
        state=state, invoice_link="https://t.me/$x", failure_code=None, failure_reason=None,
        retry_after=None, telegram_payment_charge_id=charge_id, created_at=NOW, updated_at=NOW,
        paid_at=None, expires_at=NOW + timedelta(minutes=15), invoice_lease_until=None,
    )  # fmt: skip


@dataclass(frozen=True)
class StoredPayment:
    application_id: UUID
    tg_payment_id: int | None
    disposition: Disposition
    refunded: bool = False
    amount: int = 0
    period_end: datetime | None = None  # a subscription's charge: the period it paid
    received_at: datetime = NOW


@dataclass
class StoredRefund:
    refund: Refund
    application_id: UUID
    bot_id: int
    tg_use_id: int
    next_attempt_at: datetime = NOW  # leased or backed off while in the future


class StoredEvent(NamedTuple):
    """An events row: (application, order, type, data) first, as tests index it."""

    application_id: UUID
    tg_payment_id: int | None
    type: str
    data: dict[str, Any]
    cursor: Cursor
    occurred_at: datetime


_MISSING = object()


def order_snapshot(order: Order) -> dict[str, Any]:
    """The order as an event carries it: JSON values, as PostgreSQL's `to_jsonb` of the row
    (timestamps in ISO 8601, the application id as text), the invoice lease left out."""
    snapshot: dict[str, Any] = {}
    for name in (each.name for each in fields(Order)):
        value = getattr(order, name)
        if name == "invoice_lease_until":
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, UUID | OrderState | SubscriptionState):
            value = str(value)
        snapshot[name] = value
    return snapshot


def refund_snapshot(refund: Refund) -> dict[str, Any]:
    """The refund as its events carry it (`data.refund`): JSON values, as `to_jsonb` of the
    row."""
    snapshot: dict[str, Any] = {}
    for name in (each.name for each in fields(Refund)):
        value = getattr(refund, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, enum.Enum):
            value = str(value)
        snapshot[name] = value
    return snapshot


def refund_event_data(refund: Refund, **extra: Any) -> dict[str, Any]:
    """A refund event's data beside its order's snapshot, as adapters/postgres/events_writer
    writes it."""
    return {
        "refund": refund_snapshot(refund),
        "telegram_payment_charge_id": refund.telegram_payment_charge_id,
        "reason": refund.reason,
        **extra,
    }


class ConstraintViolation(Exception):
    """A write PostgreSQL would refuse (a foreign key): a bug in the use case, not an outcome."""


class _Session:
    """One transaction: it takes a transaction id at its first write (as PostgreSQL does), and
    keeps what undoes each write until it ends."""

    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db
        self.xid: int | None = None
        self._undo: list[Callable[[], None]] = []

    def _write(self) -> int:
        if self.xid is None:
            self.xid = self._db.next_xid
            self._db.next_xid += 1
            self._db.open_xids.add(self.xid)
        return self.xid

    def put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        self._write()
        old = table.get(key, _MISSING)
        table[key] = value

        def undo() -> None:
            if old is _MISSING:
                del table[key]
            else:
                table[key] = old

        self._undo.append(undo)

    def claim(self, keys: set[Any], key: Any) -> bool:
        """Inserts a unique key; False when it is taken."""
        if key in keys:
            return False
        self._write()
        keys.add(key)
        self._undo.append(lambda: keys.discard(key))
        return True

    def emit(
        self,
        application_id: UUID,
        tg_payment_id: int | None,
        event_type: EventType,
        data: dict[str, Any],
    ) -> None:
        xid = self._write()
        order = None if tg_payment_id is None else self._db.orders.get(tg_payment_id)
        snapshot = {} if order is None else {"order": order_snapshot(order)}
        event = StoredEvent(
            application_id,
            tg_payment_id,
            str(event_type),
            snapshot | data,
            Cursor(xid, next(self._db._event_ids)),
            self._db.now,
        )
        self._db.events.append(event)
        self._undo.append(lambda: self._db.events.remove(event))

    def end(self, *, commit: bool) -> None:
        if not commit:
            for undo in reversed(self._undo):
                undo()
        self._undo.clear()
        if self.xid is not None:
            self._db.open_xids.discard(self.xid)


@dataclass
class MemoryDatabase:
    """The tables the money ports share, in memory: orders and their idempotency keys, processed
    updates, payments, refunds and the event log."""

    now: datetime = NOW
    orders: dict[int, Order] = field(default_factory=dict)
    keys: dict[tuple[UUID, str], tuple[int, bytes]] = field(default_factory=dict)
    updates: set[tuple[int, int]] = field(default_factory=set)
    payments: dict[str, StoredPayment] = field(default_factory=dict)
    refunds: dict[str, StoredRefund] = field(default_factory=dict)
    events: list[StoredEvent] = field(default_factory=list)
    bot_tokens: dict[UUID, str] = field(default_factory=dict)
    # The unfulfilled-order policies: (deadline, switched on at), by application.
    unfulfilled_policies: dict[UUID, tuple[timedelta, datetime]] = field(default_factory=dict)
    open_xids: set[int] = field(default_factory=set)
    pruned: Cursor | None = None
    next_xid: int = 1
    _event_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _order_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @contextlib.contextmanager
    def session(self) -> Iterator[_Session]:
        """A transaction: committed when the block ends, undone when it raises."""
        session = _Session(self)
        try:
            yield session
        except BaseException:
            session.end(commit=False)
            raise
        session.end(commit=True)

    def next_order_id(self) -> int:
        while True:
            order_id = next(self._order_ids)
            if order_id not in self.orders:
                return order_id

    def horizon(self) -> int:
        """The oldest transaction still open (or the next one): every event of an older one is
        committed, and no event can appear below it later."""
        return min(self.open_xids, default=self.next_xid)

    def record_event(
        self,
        application_id: UUID,
        event_type: EventType,
        data: dict[str, Any] | None = None,
        *,
        tg_payment_id: int | None = None,
    ) -> None:
        """An event of its own, committed at once (a test's writer)."""
        with self.session() as session:
            session.emit(application_id, tg_payment_id, event_type, data or {})

    def event_types(self) -> list[str]:
        return [event.type for event in self.events]


# ---------------------------------------------------------------------------- Payments


class _ProcessedUpdates:
    def __init__(self, db: MemoryDatabase, session: _Session) -> None:
        self._db, self._session = db, session

    async def claim(self, bot_id: int, update_id: int, kind: str) -> bool:
        return self._session.claim(self._db.updates, (bot_id, update_id))


class _EventWriter:
    def __init__(self, db: MemoryDatabase, session: _Session) -> None:
        self._db, self._session = db, session

    async def add(
        self,
        application_id: UUID,
        tg_payment_id: int | None,
        event_type: EventType,
        data: dict[str, Any],
    ) -> None:
        self._session.emit(application_id, tg_payment_id, event_type, data)


class _PaidOrders:
    def __init__(self, db: MemoryDatabase, session: _Session) -> None:
        self._db, self._session = db, session

    async def lock(self, application_id: UUID, tg_payment_id: int) -> Order | None:
        order = self._db.orders.get(tg_payment_id)
        return order if order is not None and order.application_id == application_id else None

    async def lock_charged(self, application_id: UUID, charge_id: str) -> Order | None:
        payment = self._db.payments.get(charge_id)
        if payment is None or payment.tg_payment_id is None:
            return None
        return await self.lock(application_id, payment.tg_payment_id)

    async def claim_and_lock(
        self, update: tuple[int, int, str], application_id: UUID, tg_payment_id: int | None
    ) -> tuple[bool, Order | None]:
        bot_id, update_id, _ = update
        fresh = self._session.claim(self._db.updates, (bot_id, update_id))
        order = None if tg_payment_id is None else await self.lock(application_id, tg_payment_id)
        return fresh, order

    async def pay(self, record: PaymentRecord) -> Order | None:
        order = self._db.orders.get(record.tg_payment_id) if record.tg_payment_id else None
        if order is None or order.state.value not in sources(OrderState.PAID):
            return None
        accepted = PaymentOutcome(Disposition.ACCEPTED)
        if not await _Charges(self._db, self._session).add(record, order.tg_payment_id, accepted):
            return None
        return self._mark_paid(
            order.tg_payment_id,
            record.telegram_payment_charge_id,
            record.subscription_expiration_date,
        )

    def _mark_paid(
        self, tg_payment_id: int, charge_id: str, period_end: datetime | None
    ) -> Order | None:
        order = self._db.orders.get(tg_payment_id)
        subscription: dict[str, Any] = {}
        if order is not None and order.subscription_period is not None:
            end = period_end or self._db.now + timedelta(seconds=order.subscription_period)
            period = period_of(end, order.subscription_period)
            subscription = {
                "subscription_state": SubscriptionState.ACTIVE,
                "current_period_start": period.start,
                "current_period_end": period.end,
            }
        return self._change(
            tg_payment_id,
            OrderState.PAID,
            EventType.ORDER_PAID,
            charge_id,
            telegram_payment_charge_id=charge_id,
            paid_at=self._db.now,
            invoice_lease_until=None,
            **subscription,
        )

    async def renew(self, tg_payment_id: int, charge_id: str, period_end: datetime) -> Order:
        order = self._db.orders[tg_payment_id]
        assert order.subscription_period is not None and order.current_period_end is not None
        changes: dict[str, Any] = {"updated_at": self._db.now}
        if period_end >= order.current_period_end:
            period = period_of(period_end, order.subscription_period)
            changes |= {
                "subscription_state": SubscriptionState.ACTIVE,
                "current_period_start": period.start,
                "current_period_end": period.end,
            }
        renewed = replace(order, **changes)
        self._session.put(self._db.orders, tg_payment_id, renewed)
        self._session.emit(
            order.application_id,
            tg_payment_id,
            EventType.SUBSCRIPTION_RENEWED,
            {"telegram_payment_charge_id": charge_id, "period_end": period_end.isoformat()},
        )
        return renewed

    async def set_subscription_state(
        self,
        tg_payment_id: int,
        target: SubscriptionState,
        event: EventType,
        extra: dict[str, Any],
    ) -> Order | None:
        order = self._db.orders[tg_payment_id]
        if order.subscription_state in (None, target):
            return None
        changed = replace(order, subscription_state=target, updated_at=self._db.now)
        self._session.put(self._db.orders, tg_payment_id, changed)
        self._session.emit(order.application_id, tg_payment_id, event, extra)
        return changed

    async def mark_refunded(self, tg_payment_id: int, charge_id: str) -> Order | None:
        order = self._db.orders.get(tg_payment_id)
        if order is None or order.telegram_payment_charge_id != charge_id:
            return None
        return self._change(tg_payment_id, OrderState.REFUNDED, EventType.ORDER_REFUNDED, charge_id)

    async def paid_by(self, application_id: UUID, charge_id: str) -> Order | None:
        for order in self._db.orders.values():
            if order.application_id == application_id and (
                order.telegram_payment_charge_id == charge_id
            ):
                return order
        return None

    def _change(
        self,
        tg_payment_id: int,
        target: OrderState,
        event: EventType,
        charge_id: str,
        **changes: Any,
    ) -> Order | None:
        order = self._db.orders.get(tg_payment_id)
        if order is None or order.state.value not in sources(target):
            return None
        changed = replace(order, state=target, updated_at=self._db.now, **changes)
        self._session.put(self._db.orders, tg_payment_id, changed)
        self._session.emit(
            order.application_id, tg_payment_id, event, {"telegram_payment_charge_id": charge_id}
        )
        return changed


class _Charges:
    def __init__(self, db: MemoryDatabase, session: _Session) -> None:
        self._db, self._session = db, session

    async def add(
        self, record: PaymentRecord, tg_payment_id: int | None, outcome: PaymentOutcome
    ) -> bool:
        if record.telegram_payment_charge_id in self._db.payments:
            return False
        self._session.put(
            self._db.payments,
            record.telegram_payment_charge_id,
            StoredPayment(
                record.application_id,
                tg_payment_id,
                outcome.disposition,
                amount=record.charge.total_amount,
                period_end=record.subscription_expiration_date,
                received_at=self._db.now,
            ),
        )
        return True

    def _paying(self, tg_payment_id: int) -> Iterator[tuple[str, StoredPayment]]:
        for charge_id, payment in self._db.payments.items():
            if payment.tg_payment_id == tg_payment_id and payment.disposition in (
                Disposition.ACCEPTED,
                Disposition.RENEWAL,
            ):
                yield charge_id, payment

    async def period_paid(self, tg_payment_id: int, period_end: datetime) -> bool:
        return any(p.period_end == period_end for _, p in self._paying(tg_payment_id))

    async def paying_amount(self, tg_payment_id: int, charge_id: str) -> int | None:
        for paying_id, payment in self._paying(tg_payment_id):
            if paying_id == charge_id:
                return payment.amount
        return None

    async def owner(self, charge_id: str) -> UUID | None:
        payment = self._db.payments.get(charge_id)
        return None if payment is None else payment.application_id

    async def mark_refunded(
        self, application_id: UUID, charge_id: str
    ) -> tuple[int | None, Disposition] | None:
        payment = self._db.payments.get(charge_id)
        if payment is None or payment.application_id != application_id:
            return None
        self._session.put(self._db.payments, charge_id, replace(payment, refunded=True))
        return payment.tg_payment_id, payment.disposition


class _RefundIntents:
    def __init__(self, db: MemoryDatabase, session: _Session) -> None:
        self._db, self._session = db, session

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
        if charge_id in self._db.refunds:
            return False
        if charge_id not in self._db.payments:
            raise ConstraintViolation(f"no charge {charge_id} to refund")
        refund = Refund(
            telegram_payment_charge_id=charge_id, tg_payment_id=tg_payment_id,
            tg_use_id=tg_use_id, amount=amount, state=RefundState.PENDING,
            reason=cause.reason.value, reason_code=cause.code, reason_text=cause.text,
            attempts=0, retries=0, last_error=None, created_at=self._db.now, completed_at=None,
        )  # fmt: skip
        self._session.put(
            self._db.refunds,
            charge_id,
            StoredRefund(refund, application_id, bot_id, tg_use_id, self._db.now),
        )
        self._session.emit(
            application_id, tg_payment_id, EventType.REFUND_REQUESTED, refund_event_data(refund)
        )
        return True

    async def of_order(self, tg_payment_id: int) -> Refund | None:
        order = self._db.orders.get(tg_payment_id)
        if order is None or order.telegram_payment_charge_id is None:
            return None
        stored = self._db.refunds.get(order.telegram_payment_charge_id)
        return None if stored is None else stored.refund

    async def complete(self, application_id: UUID, charge_id: str) -> None:
        stored = self._db.refunds.get(charge_id)
        if (
            stored is not None
            and stored.application_id == application_id
            and stored.refund.state.value in refund_sources(RefundState.SUCCEEDED)
        ):
            completed = replace(
                stored.refund,
                state=RefundState.SUCCEEDED,
                attempts=stored.refund.attempts + 1,
                completed_at=self._db.now,
            )
            self._session.put(self._db.refunds, charge_id, replace(stored, refund=completed))


class _Transaction:
    def __init__(self, db: MemoryDatabase, session: _Session) -> None:
        self.updates = _ProcessedUpdates(db, session)
        self.orders = _PaidOrders(db, session)
        self.charges = _Charges(db, session)
        self.refunds = _RefundIntents(db, session)
        self.events = _EventWriter(db, session)


class InMemoryPayments:
    """The Payments port in memory (`state` is the database it shares)."""

    def __init__(
        self, bot_tokens: dict[UUID, str] | None = None, *, db: MemoryDatabase | None = None
    ) -> None:
        self.state = db if db is not None else MemoryDatabase()
        self.state.bot_tokens.update(bot_tokens or {})

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Transaction]:
        with self.state.session() as session:
            yield _Transaction(self.state, session)

    async def claim(self, bot_id: int, update_id: int, kind: str) -> bool:
        async with self.transaction() as tx:
            return await tx.updates.claim(bot_id, update_id, kind)

    async def claim_with_event(
        self,
        update: tuple[int, int, str],
        application_id: UUID,
        tg_payment_id: int | None,
        event_type: EventType,
        data: dict[str, Any],
    ) -> bool:
        async with self.transaction() as tx:
            if not await tx.updates.claim(*update):
                return False
            await tx.events.add(application_id, tg_payment_id, event_type, data)
            return True

    async def checkout_context(
        self, bot_id: int, update_id: int, application_id: UUID, tg_payment_id: int
    ) -> tuple[bool, Order | None]:
        order = self.state.orders.get(tg_payment_id)
        if order is not None and order.application_id != application_id:
            order = None
        return (bot_id, update_id) in self.state.updates, order

    async def claim_due_refunds(self, limit: int, lease_seconds: float) -> list[DueRefund]:
        db = self.state
        due: list[DueRefund] = []
        by_due_time = sorted(db.refunds.items(), key=lambda item: item[1].next_attempt_at)
        for charge_id, stored in by_due_time:
            if len(due) == limit:
                break
            if stored.refund.state in DUE and stored.next_attempt_at <= db.now:
                stored.next_attempt_at = db.now + timedelta(seconds=lease_seconds)
                due.append(
                    DueRefund(
                        telegram_payment_charge_id=charge_id,
                        application_id=stored.application_id,
                        tg_payment_id=stored.refund.tg_payment_id,
                        tg_use_id=stored.tg_use_id,
                        attempts=stored.refund.attempts,
                        bot_token=db.bot_tokens.get(stored.application_id),
                    )
                )
        return due

    async def refund_attempt_failed(
        self, charge_id: str, error: str, retry_in: float | None
    ) -> None:
        db = self.state
        stored = db.refunds.get(charge_id)
        failed = retry_in is None
        target = RefundState.FAILED if failed else RefundState.PENDING
        if stored is None or stored.refund.state.value not in attempt_sources(target):
            return
        with db.session() as session:
            changed = replace(
                stored,
                refund=replace(
                    stored.refund,
                    attempts=stored.refund.attempts + 1,
                    last_error=error,
                    state=target,
                ),
                next_attempt_at=db.now + timedelta(seconds=retry_in or 0.0),
            )
            session.put(db.refunds, charge_id, changed)
            if failed:
                session.emit(
                    stored.application_id,
                    stored.refund.tg_payment_id,
                    EventType.REFUND_FAILED,
                    refund_event_data(changed.refund, error=error),
                )

    def due_now(self) -> None:
        """Time passes: every leased or backed-off refund is due again."""
        for stored in self.state.refunds.values():
            stored.next_attempt_at = self.state.now

    def event_types(self) -> list[str]:
        return self.state.event_types()


# ---------------------------------------------------------------------------- Orders


class InMemoryOrders:
    """The Orders port in memory, on the database's clock (`now`, moved by the test): leases and
    expiry are judged against it, state guards come from the transition table. Each change is
    one statement: it commits at once, with its event."""

    def __init__(self, db: MemoryDatabase | None = None) -> None:
        self.db = db if db is not None else MemoryDatabase()

    @property
    def now(self) -> datetime:
        return self.db.now

    @now.setter
    def now(self, value: datetime) -> None:
        self.db.now = value

    @property
    def orders(self) -> dict[int, Order]:
        return self.db.orders

    @property
    def keys(self) -> dict[tuple[UUID, str], tuple[int, bytes]]:
        return self.db.keys

    @property
    def events(self) -> list[tuple[int | None, str]]:
        """(order, event type) of every event, in the order written."""
        return [(event.tg_payment_id, event.type) for event in self.db.events]

    def _insert(
        self,
        session: _Session,
        application_id: UUID,
        command: PayCommand,
        ttl_seconds: float,
        lease_seconds: float,
    ) -> Order:
        order = replace(
            make_order(self.db.next_order_id(), application_id),
            tg_use_id=command.tg_use_id, amount=command.amount, label=command.label,
            title=command.title, description=command.description, payload=command.payload,
            photo_url=command.photo_url, photo_size=command.photo_size,
            photo_width=command.photo_width, photo_height=command.photo_height,
            callback_url=command.callback_url, invoice_link=None, created_at=self.now,
            updated_at=self.now, expires_at=self.now + timedelta(seconds=ttl_seconds),
            invoice_lease_until=self.now + timedelta(seconds=lease_seconds),
            metadata=dict(command.metadata),
            subscription_period=command.subscription_period,
        )  # fmt: skip
        session.put(self.db.orders, order.tg_payment_id, order)
        session.emit(application_id, order.tg_payment_id, EventType.ORDER_CREATED, {})
        return order

    def _change(
        self, order: Order, event: EventType, data: dict[str, Any] | None = None, **changes: Any
    ) -> Order:
        changed = replace(order, updated_at=self.now, **changes)
        with self.db.session() as session:
            session.put(self.db.orders, order.tg_payment_id, changed)
            session.emit(order.application_id, order.tg_payment_id, event, data or {})
        return changed

    async def create(
        self,
        application_id: UUID,
        command: PayCommand,
        *,
        ttl_seconds: float,
        lease_seconds: float,
    ) -> Order:
        with self.db.session() as session:
            return self._insert(session, application_id, command, ttl_seconds, lease_seconds)

    async def create_idempotent(
        self,
        application_id: UUID,
        request_id: str,
        command: PayCommand,
        *,
        ttl_seconds: float,
        lease_seconds: float,
    ) -> Claim:
        existing = await self.find_by_request_id(application_id, request_id)
        if existing is not None:
            return existing
        with self.db.session() as session:
            order = self._insert(session, application_id, command, ttl_seconds, lease_seconds)
            session.put(
                self.db.keys,
                (application_id, request_id),
                (order.tg_payment_id, command.fingerprint()),
            )
        return Claim(order, created=True, request_hash=command.fingerprint())

    async def find_by_request_id(self, application_id: UUID, request_id: str) -> Claim | None:
        key = self.keys.get((application_id, request_id))
        if key is None:
            return None
        return Claim(self.orders[key[0]], created=False, request_hash=key[1])

    async def get(self, application_id: UUID, tg_payment_id: int) -> Order | None:
        order = self.orders.get(tg_payment_id)
        return order if order is not None and order.application_id == application_id else None

    async def find_resumable(self, application_id: UUID, tg_use_id: int) -> Order | None:
        payable = [
            order
            for order in self.orders.values()
            if order.application_id == application_id
            and order.tg_use_id == tg_use_id
            and order.is_payable(self.now)
        ]
        return max(payable, key=lambda order: order.tg_payment_id, default=None)

    async def take_invoice_lease(
        self, application_id: UUID, tg_payment_id: int, lease_seconds: float
    ) -> Order | None:
        order = await self.get(application_id, tg_payment_id)
        if (
            order is None
            or order.invoice_link is not None
            or order.state.value not in sources(OrderState.PENDING)
            or (order.invoice_lease_until is not None and order.invoice_lease_until > self.now)
        ):
            return None
        leased = replace(order, invoice_lease_until=self.now + timedelta(seconds=lease_seconds))
        self.orders[tg_payment_id] = leased
        return leased

    async def release_invoice_lease(self, tg_payment_id: int) -> None:
        order = self.orders.get(tg_payment_id)
        if order is not None and order.invoice_link is None:
            self.orders[tg_payment_id] = replace(order, invoice_lease_until=None)

    async def record_invoice_link(self, tg_payment_id: int, link: str) -> Order | None:
        order = self.orders.get(tg_payment_id)
        if order is None or order.invoice_link is not None:
            return None
        if order.state.value not in sources(OrderState.PENDING):
            return None
        return self._change(
            order, EventType.ORDER_INVOICE_CREATED, state=OrderState.PENDING,
            invoice_link=link, invoice_lease_until=None, failure_code=None,
            failure_reason=None, retry_after=None,
        )  # fmt: skip

    async def record_invoice_failure(
        self, tg_payment_id: int, code: str, reason: str, retry_after: int | None
    ) -> Order | None:
        order = self.orders.get(tg_payment_id)
        if order is None or order.invoice_link is not None:
            return None
        if order.state.value not in sources(OrderState.FAILED):
            return None
        return self._change(
            order, EventType.ORDER_FAILED, state=OrderState.FAILED, invoice_lease_until=None,
            failure_code=code, failure_reason=reason, retry_after=retry_after,
        )  # fmt: skip

    async def cancel(self, application_id: UUID, tg_payment_id: int) -> Order | None:
        order = await self.get(application_id, tg_payment_id)
        if order is None or order.state.value not in sources(OrderState.CANCELLED):
            return None
        if order.expires_at <= self.now:
            return None
        return self._change(
            order, EventType.ORDER_CANCELLED, state=OrderState.CANCELLED, invoice_lease_until=None
        )

    async def record_client_report(
        self, application_id: UUID, tg_payment_id: int, status: str
    ) -> Order | None:
        order = await self.get(application_id, tg_payment_id)
        if order is None:
            return None
        return self._change(
            order, EventType.ORDER_CLIENT_REPORT, {"status": status}, client_report=status
        )

    async def expire_due(self, limit: int) -> int:
        due = sorted(
            (
                order
                for order in self.orders.values()
                if order.state.value in sources(OrderState.EXPIRED) and order.expires_at <= self.now
            ),
            key=lambda order: order.expires_at,
        )[:limit]
        for order in due:
            self._change(
                order, EventType.ORDER_EXPIRED, state=OrderState.EXPIRED, invoice_lease_until=None
            )
        return len(due)

    async def expire_subscriptions(self, limit: int) -> int:
        due = sorted(
            (
                order
                for order in self.orders.values()
                if order.subscription_state in RENEWING
                and order.current_period_end is not None
                and order.current_period_end + GRACE <= self.now
            ),
            key=lambda order: order.current_period_end or self.now,
        )[:limit]
        for order in due:
            self._change(
                order,
                EventType.SUBSCRIPTION_EXPIRED,
                subscription_state=SubscriptionState.EXPIRED,
            )
        return len(due)

    async def subscription_charges(
        self, application_id: UUID, tg_payment_id: int
    ) -> list[SubscriptionCharge]:
        order = await self.get(application_id, tg_payment_id)
        if order is None or order.subscription_period is None:
            return []
        period = order.subscription_period
        charges = [
            SubscriptionCharge(
                charge_id,
                payment.amount,
                None if payment.period_end is None else period_of(payment.period_end, period),
                payment.received_at,
                NOW if payment.refunded else None,
            )
            for charge_id, payment in self.db.payments.items()
            if payment.tg_payment_id == tg_payment_id
            and payment.disposition in (Disposition.ACCEPTED, Disposition.RENEWAL)
        ]
        return sorted(charges, key=lambda c: c.period.end if c.period else NOW - timedelta(days=1))

    async def acknowledge(
        self, application_id: UUID, tg_payment_id: int, request_id: str | None
    ) -> Order | None:
        order = await self.get(application_id, tg_payment_id)
        if order is None or order.state not in FULFILLABLE or order.fulfilled_at is not None:
            return None
        return self._change(
            order,
            EventType.ORDER_FULFILLED,
            fulfilled_at=self.now,
            fulfilment_request_id=request_id,
        )

    async def unfulfilled_past_deadline(self, now: datetime, limit: int) -> list[UnfulfilledOrder]:
        due = []
        for order in self.orders.values():
            policy = self.db.unfulfilled_policies.get(order.application_id)
            token = self.db.bot_tokens.get(order.application_id)
            if (
                policy is None
                or token is None
                or order.state is not OrderState.PAID
                or order.fulfilled_at is not None
                or order.paid_at is None
                or not policy[1] <= order.paid_at <= now - policy[0]
                or order.telegram_payment_charge_id in self.db.refunds
            ):
                continue
            due.append(order)
        due.sort(key=lambda order: (order.paid_at, order.tg_payment_id))
        return [
            UnfulfilledOrder(
                order.application_id,
                order.tg_payment_id,
                int(self.db.bot_tokens[order.application_id].partition(":")[0]),
            )
            for order in due[:limit]
        ]

    # ---------------------------------------------------------------------------- Refunds

    async def find_by_charge(self, application_id: UUID, charge_id: str) -> Order | None:
        payment = self.db.payments.get(charge_id)
        if payment is None or payment.application_id != application_id:
            return None
        if payment.tg_payment_id is None:
            return None
        return await self.get(application_id, payment.tg_payment_id)

    async def list(self, application_id: UUID, query: OrderListQuery) -> list[Order]:
        """The page by the filter's own meaning (`OrderFilter.matches`): what the SQL of the
        adapter must answer too (tests/contract/test_order_listing.py)."""
        selected = sorted(
            (
                order
                for order in self.orders.values()
                if order.application_id == application_id
                and (query.after is None or sort_key(order) < query.after)
                and query.filter.matches(order, query.as_of)
            ),
            key=sort_key,
            reverse=True,
        )
        return selected[: query.limit]


# ---------------------------------------------------------------------------- Refunds


class InMemoryRefunds:
    """The Refunds port over the shared database's refunds."""

    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db

    def _stored(self, application_id: UUID, charge_id: str) -> StoredRefund | None:
        stored = self.db.refunds.get(charge_id)
        return stored if stored is not None and stored.application_id == application_id else None

    async def get(self, application_id: UUID, charge_id: str) -> Refund | None:
        stored = self._stored(application_id, charge_id)
        return None if stored is None else stored.refund

    async def retry(self, application_id: UUID, charge_id: str) -> Refund | None:
        stored = self._stored(application_id, charge_id)
        if stored is None or stored.refund.state not in RETRYABLE:
            return None
        retried = replace(
            stored.refund,
            state=RefundState.PENDING,
            attempts=0,
            retries=stored.refund.retries + 1,
        )
        with self.db.session() as session:
            session.put(
                self.db.refunds,
                charge_id,
                replace(stored, refund=retried, next_attempt_at=self.db.now),
            )
            session.emit(
                application_id,
                retried.tg_payment_id,
                EventType.REFUND_RETRIED,
                refund_event_data(retried),
            )
        return retried

    async def list(
        self,
        application_id: UUID,
        refund_filter: RefundFilter,
        after: RefundPosition | None,
        limit: int,
    ) -> list[Refund]:
        def passes(refund: Refund) -> bool:
            key = (refund.created_at, refund.telegram_payment_charge_id)
            return (
                refund_filter.tg_payment_id in (None, refund.tg_payment_id)
                and refund_filter.state in (None, refund.state)
                and (
                    refund_filter.created_from is None
                    or refund.created_at >= refund_filter.created_from
                )
                and (
                    refund_filter.created_before is None
                    or refund.created_at < refund_filter.created_before
                )
                and (after is None or key < (after.created_at, after.telegram_payment_charge_id))
            )

        found = [
            stored.refund
            for stored in self.db.refunds.values()
            if stored.application_id == application_id and passes(stored.refund)
        ]
        found.sort(key=lambda r: (r.created_at, r.telegram_payment_charge_id), reverse=True)
        return found[:limit]

    # Reads (issue 18).


# ---------------------------------------------------------------------------- Events


class InMemoryEventLog:
    """The EventStore port over the shared database's events: read in (transaction, id) order,
    only below the horizon (the oldest open transaction), as adapters/postgres/events.py reads.
    `read_errors` are raised by the next reads (the database away); `reads` counts them (and
    `application_reads` those of one application: a stream's, not the hub's), `nows` the NOW
    positions asked for, and `touched` is set by every call (a test waits on it for its
    reader's next step)."""

    def __init__(self, db: MemoryDatabase | None = None) -> None:
        self.db = db if db is not None else MemoryDatabase()
        self.read_errors: list[Exception] = []
        self.reads = 0
        self.application_reads = 0
        self.nows = 0
        self.touched = asyncio.Event()

    async def read_after(
        self,
        cursor: Cursor,
        *,
        limit: int,
        application_id: UUID | None = None,
        tg_payment_id: int | None = None,
    ) -> list[Event]:
        self.reads += 1
        self.application_reads += application_id is not None
        self.touched.set()
        if self.read_errors:
            raise self.read_errors.pop(0)
        horizon = self.db.horizon()
        found = sorted(
            (
                stored
                for stored in self.db.events
                if stored.cursor > cursor
                and stored.cursor.xid < horizon
                and (application_id is None or stored.application_id == application_id)
                and (tg_payment_id is None or stored.tg_payment_id == tg_payment_id)
            ),
            key=lambda stored: stored.cursor,
        )[:limit]
        return [
            Event(
                cursor=stored.cursor,
                application_id=stored.application_id,
                tg_payment_id=stored.tg_payment_id,
                type=stored.type,
                data=stored.data,
                occurred_at=stored.occurred_at,
            )
            for stored in found
        ]

    async def now(self) -> Cursor:
        self.nows += 1
        self.touched.set()
        return Cursor(self.db.horizon(), 0)

    async def pruned_up_to(self) -> Cursor | None:
        return self.db.pruned

    async def prune(self, older_than_seconds: float, *, batch: int = 5000) -> int:
        cutoff = self.db.now - timedelta(seconds=older_than_seconds)
        doomed = sorted(
            (event for event in self.db.events if event.occurred_at < cutoff),
            key=lambda event: event.cursor,
        )[:batch]
        for event in doomed:
            self.db.events.remove(event)
        if doomed and (self.db.pruned is None or doomed[-1].cursor > self.db.pruned):
            self.db.pruned = doomed[-1].cursor
        return len(doomed)


# ---------------------------------------------------------------------------- the rest


class FakeDeadLetters:
    """The DeadLetters port: keeps the letters (`letters`, and the event types each was announced
    with in `announced`), claiming their updates among those the ledger processes, or, without
    an update id, once per bot and body; announces them in the database's event log."""

    def __init__(self, db: MemoryDatabase | None = None) -> None:
        self.db = db if db is not None else MemoryDatabase()
        self.letters: list[DeadLetter] = []
        self.announced: list[list[str]] = []

    async def record(self, letter: DeadLetter, announce: Sequence[EventType]) -> int | None:
        with self.db.session() as session:
            if letter.update_id is not None and not session.claim(
                self.db.updates, (letter.bot_id, letter.update_id)
            ):
                return None
            if any(
                kept.bot_id == letter.bot_id and kept.raw == letter.raw for kept in self.letters
            ):
                return None
            self.letters.append(letter)
            self.announced.append([str(event_type) for event_type in announce])
            letter_id = len(self.letters)
            data = {
                "dead_letter_id": letter_id,
                "update_id": letter.update_id,
                "kind": letter.kind,
                "error": letter.error,
                "reason": letter.reason,
            }
            for event_type in announce:
                session.emit(letter.application_id, None, event_type, data)
            return letter_id


class FakeTelegram:
    """The TelegramBot port: records the calls the use cases make (refunds, pre-checkout
    answers, messages) and raises what it is told to. Methods no unit test uses fail loudly."""

    def __init__(self) -> None:
        self.refunds: list[tuple[str, int, str]] = []
        self.refund_errors: list[Exception] = []
        self.answers: list[tuple[str, bool, str | None]] = []
        self.messages: list[tuple[int, str]] = []
        self.invoices: list[InvoiceRequest] = []
        self.invoice_errors: list[Exception] = []
        self.subscription_edits: list[tuple[int, str, bool]] = []

    async def refund_star_payment(self, token: str, user_id: int, charge_id: str) -> None:
        self.refunds.append((token, user_id, charge_id))
        if self.refund_errors:
            raise self.refund_errors.pop(0)

    async def edit_user_star_subscription(
        self, token: str, user_id: int, charge_id: str, *, is_canceled: bool
    ) -> None:
        self.subscription_edits.append((user_id, charge_id, is_canceled))

    def _unused(self, name: str) -> AssertionError:
        return AssertionError(f"FakeTelegram.{name} is not used by these tests")

    async def get_me(self, token: str) -> BotProfile:
        raise self._unused("get_me")

    async def create_invoice_link(
        self, bot: Bot, invoice: InvoiceRequest, *, timeout: float | None = None
    ) -> str:
        self.invoices.append(invoice)
        if self.invoice_errors:
            raise self.invoice_errors.pop(0)
        return f"https://t.me/$invoice{len(self.invoices)}"

    async def answer_pre_checkout_query(
        self,
        bot: Bot,
        query_id: str,
        *,
        ok: bool,
        error_message: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.answers.append((query_id, ok, error_message))

    async def send_message(
        self, bot: Bot, chat_id: int, text: str, *, timeout: float | None = None
    ) -> None:
        self.messages.append((chat_id, text))

    async def get_updates(
        self, bot: Bot, *, offset: int, timeout: int, allowed_updates: Sequence[str]
    ) -> list[Any]:
        raise self._unused("get_updates")

    async def set_webhook(
        self, bot: Bot, url: str, *, secret_token: str, allowed_updates: Sequence[str]
    ) -> None:
        raise self._unused("set_webhook")

    async def delete_webhook(self, bot: Bot) -> None:
        raise self._unused("delete_webhook")

    async def webhook_url(self, bot: Bot) -> str | None:
        raise self._unused("webhook_url")

    async def get_star_transactions(self, bot: Bot, *, offset: int, limit: int) -> list[Any]:
        raise self._unused("get_star_transactions")

    async def get_my_star_balance(self, bot: Bot) -> StarAmount:
        raise self._unused("get_my_star_balance")

    async def run_webhook_reply(
        self, bot: Bot, method: str, body: bytes, content_type: str, *, timeout: float
    ) -> None:
        raise self._unused("run_webhook_reply")


@dataclass
class _RelayRow:
    """A relay_bots row."""

    application_id: UUID
    allowed_updates: tuple[str, ...] | None = None
    confirmed_offset: int = 0
    poll_generation: int = 0
    webhook_url: str | None = None
    webhook_secret: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None


class InMemoryRelay:
    """The RelayStore port as adapters/postgres/relay.py keeps it, for one replica (`owner`):
    each claim is a lease of its own (`<owner>/<n>`), and only that lease confirms, fails or
    releases; setting the webhook voids it; `release_all` ends this replica's leases. Time is
    `now` (seconds), moved by the test. `release_errors` are raised by the next releases;
    `release_gate`, when set, holds every release until it is set."""

    def __init__(self, owner: str = "replica-1") -> None:
        self.owner = owner
        self.now = 0.0
        self.rows: dict[int, _RelayRow] = {}
        self.updates: dict[int, dict[int, bytes]] = {}
        self.release_errors: list[Exception] = []
        self.release_gate: asyncio.Event | None = None
        self.releases = 0  # release() calls that ended a lease
        self._claims = itertools.count(1)

    def _bot(self, bot_id: int) -> RelayBot:
        row = self.rows[bot_id]
        pending = sum(1 for uid in self.updates[bot_id] if uid >= row.confirmed_offset)
        return RelayBot(
            bot_id=bot_id,
            application_id=row.application_id,
            allowed_updates=row.allowed_updates,
            confirmed_offset=row.confirmed_offset,
            webhook_url=row.webhook_url,
            webhook_secret=row.webhook_secret,
            poll_generation=row.poll_generation,
            attempts=row.attempts,
            pending=pending,
            last_error=row.last_error,
            lease=row.lease_owner,
        )

    def leased(self, bot_id: int) -> bool:
        """Whether a live lease holds the bot (no one else may deliver to it)."""
        row = self.rows[bot_id]
        return row.lease_until is not None and row.lease_until >= self.now

    async def enable(self, bot_id: int, application_id: UUID) -> RelayBot:
        if bot_id in self.rows:
            self.rows[bot_id].application_id = application_id
        else:
            self.rows[bot_id] = _RelayRow(application_id)
            self.updates[bot_id] = {}
        return self._bot(bot_id)

    async def get(self, bot_id: int) -> RelayBot | None:
        return self._bot(bot_id) if bot_id in self.rows else None

    async def keep(self, bot_id: int, update_id: int, kind: str | None, raw: bytes) -> Kept:
        row = self.rows.get(bot_id)
        if row is None or not wants(row.allowed_updates, kind):
            return Kept(False, row is not None)
        if update_id >= row.confirmed_offset:
            self.updates[bot_id].setdefault(update_id, raw)
        return Kept(True, True)

    async def start_poll(self, bot_id: int, offset: int | None) -> tuple[int, RelayBot]:
        row = self.rows[bot_id]
        kept = sorted(uid for uid in self.updates[bot_id] if uid >= row.confirmed_offset)
        if offset is not None and offset < 0 and len(kept) >= -offset:
            row.confirmed_offset = max(row.confirmed_offset, kept[offset])
        elif offset is not None and offset > row.confirmed_offset and self.updates[bot_id]:
            newest = max(self.updates[bot_id])
            row.confirmed_offset = max(row.confirmed_offset, min(offset, newest + 1))
        self._forget_confirmed(bot_id)
        row.poll_generation += 1
        return row.poll_generation, self._bot(bot_id)

    def _forget_confirmed(self, bot_id: int) -> None:
        confirmed = self.rows[bot_id].confirmed_offset
        self.updates[bot_id] = {u: r for u, r in self.updates[bot_id].items() if u >= confirmed}

    async def poll(
        self, bot_id: int, generation: int, limit: int
    ) -> tuple[bool, RelayBot | None, list[RelayedUpdate]]:
        row = self.rows.get(bot_id)
        if row is None or row.poll_generation != generation:
            return False, None if row is None else self._bot(bot_id), []
        return True, self._bot(bot_id), self._due(bot_id, row.confirmed_offset, limit)

    def _due(self, bot_id: int, offset: int, limit: int) -> list[RelayedUpdate]:
        kept = self.updates[bot_id]
        return [RelayedUpdate(uid, kept[uid]) for uid in sorted(kept) if uid >= offset][:limit]

    async def set_allowed_updates(
        self, bot_id: int, allowed: Sequence[str]
    ) -> tuple[bool, RelayBot]:
        row = self.rows[bot_id]
        changed = row.allowed_updates != tuple(allowed)
        row.allowed_updates = tuple(allowed)
        return changed, self._bot(bot_id)

    async def set_webhook(
        self, bot_id: int, url: str | None, secret: str | None, *, drop_pending: bool
    ) -> None:
        row = self.rows[bot_id]
        row.webhook_url, row.webhook_secret = url, secret
        row.attempts, row.next_attempt_at, row.last_error = 0, self.now, None
        row.lease_owner = row.lease_until = None
        row.poll_generation += 1
        if drop_pending and self.updates[bot_id]:
            row.confirmed_offset = max(row.confirmed_offset, max(self.updates[bot_id]) + 1)
            self.updates[bot_id].clear()

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[RelayBot]:
        lease = f"{self.owner}/{next(self._claims)}"
        due = sorted(
            (
                (row.next_attempt_at, bot_id)
                for bot_id, row in self.rows.items()
                if row.webhook_url is not None
                and row.next_attempt_at <= self.now
                and (row.lease_until is None or row.lease_until < self.now)
                and any(uid >= row.confirmed_offset for uid in self.updates[bot_id])
            )
        )[:limit]
        for _, bot_id in due:
            row = self.rows[bot_id]
            row.lease_owner, row.lease_until = lease, self.now + lease_seconds
        return [self._bot(bot_id) for _, bot_id in due]

    async def due_updates(self, bot: RelayBot, limit: int) -> list[RelayedUpdate]:
        return self._due(bot.bot_id, bot.confirmed_offset, limit)

    async def delivered(self, bot: RelayBot, update_id: int) -> bool:
        row = self.rows[bot.bot_id]
        if row.lease_owner != bot.lease or row.webhook_url != bot.webhook_url:
            return False
        row.confirmed_offset = max(row.confirmed_offset, update_id + 1)
        row.attempts, row.last_error = 0, None
        self._forget_confirmed(bot.bot_id)
        return True

    async def delivery_failed(self, bot: RelayBot, error: str, retry_in: float) -> None:
        row = self.rows[bot.bot_id]
        if row.lease_owner == bot.lease:
            row.attempts += 1
            row.last_error = error
            row.next_attempt_at = self.now + retry_in
            row.lease_until = None

    async def release(self, bot: RelayBot) -> None:
        if self.release_gate is not None:
            await self.release_gate.wait()
        if self.release_errors:
            raise self.release_errors.pop(0)
        row = self.rows[bot.bot_id]
        if row.lease_owner == bot.lease:
            row.lease_owner = row.lease_until = None
            self.releases += 1

    async def release_all(self) -> None:
        for row in self.rows.values():
            if row.lease_owner is not None and row.lease_owner.startswith(f"{self.owner}/"):
                row.lease_owner = row.lease_until = None

    async def prune(self, max_age_seconds: float) -> int:
        return 0
