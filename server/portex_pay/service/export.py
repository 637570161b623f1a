"""The accounting export: every row of a time range, in keyset batches, as CSV or JSON lines.

`portex-pay admin export` runs it, so that finance can reconcile without SQL. What can be exported
is the `KINDS` table: each kind is one batch read of the AccountingRecords port (one short query
per batch, service/ports.py) and a fixed list of `Column`s (name, type, meaning, and how a row
gives its value); the README's column tables are these lists, and a new kind is one read and one
column list. The rows are read a batch at a time and written as they come, so memory stays the
same whatever the range holds. Orders show their state as a reader sees it when the export starts
(`Order.state_at`: an unpaid order past its expiry is EXPIRED, written down or not), as in
QueryOrder and ListOrders.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TextIO, TypeVar
from uuid import UUID

from portex_pay.domain.errors import ApplicationNotFound, FieldViolation, InvalidArgument
from portex_pay.domain.star_ledger import LedgerEntry
from portex_pay.domain.timestamps import format_rfc3339
from portex_pay.service.clock import Clock, utcnow
from portex_pay.service.ports import AccountingRecords, Applications, ExportedOrder

R = TypeVar("R")

Format = Literal["csv", "jsonl"]

BATCH_SIZE = 1000
"""Rows per query: large enough that a million rows are a thousand short queries."""


@dataclass(frozen=True, slots=True)
class Column(Generic[R]):
    """One column of an export: its stable name, its type and meaning (for the README), and how
    a row gives its value at the export's `now`: an int, a str, a datetime (written as RFC 3339
    in UTC), a mapping (a JSON object; its JSON text in CSV) or None (empty in CSV, null in
    JSON)."""

    name: str
    type: str
    meaning: str
    value: Callable[[R, datetime], object]


BatchRead = Callable[
    [UUID, datetime, datetime, Any, int],
    Awaitable[Sequence[R]],
]


@dataclass(frozen=True, slots=True)
class ExportKind(Generic[R]):
    """What `--what` names: the batch read of the port, the sort key of a row (where the next
    batch starts), and the columns."""

    name: str
    read: Callable[[AccountingRecords], BatchRead[R]]
    key: Callable[[R], Any]
    columns: tuple[Column[R], ...]


ORDER_COLUMNS: tuple[Column[ExportedOrder], ...] = (
    Column("tg_payment_id", "integer", "the order id", lambda r, _: r.order.tg_payment_id),
    Column(
        "create_time",
        "timestamp",
        "when the order was made; the range and the row order are by it",
        lambda r, _: r.order.created_at,
    ),
    Column(
        "state",
        "text",
        "PENDING, PAID, CANCELLED, EXPIRED, FAILED or REFUNDED, as QueryOrder shows it when the "
        "export starts (an unpaid order past its expiry is EXPIRED)",
        lambda r, now: r.order.state_at(now).name,
    ),
    Column("tg_use_id", "integer", "the buyer's Telegram user id", lambda r, _: r.order.tg_use_id),
    Column("amount", "integer", "the price in whole Stars (XTR)", lambda r, _: r.order.amount),
    Column("label", "text", "the invoice's price label", lambda r, _: r.order.label),
    Column("title", "text", "the product name", lambda r, _: r.order.title),
    Column(
        "telegram_payment_charge_id",
        "text",
        "Telegram's id of the charge that paid it (the buyer's receipt shows it); empty if unpaid",
        lambda r, _: r.order.telegram_payment_charge_id,
    ),
    Column("paid_time", "timestamp", "when it was paid", lambda r, _: r.order.paid_at),
    Column(
        "fulfilled_time",
        "timestamp",
        "when the application acknowledged delivering the goods (AcknowledgeOrder)",
        lambda r, _: r.order.fulfilled_at,
    ),
    Column(
        "refund_time",
        "timestamp",
        "when Telegram confirmed the refund of its payment",
        lambda r, _: r.refunded_at,
    ),
    Column(
        "cancel_time",
        "timestamp",
        "when it was withdrawn unpaid (CancelOrder)",
        lambda r, _: r.cancelled_at,
    ),
    Column(
        "expire_time",
        "timestamp",
        "when it stops (or stopped) being payable",
        lambda r, _: r.order.expires_at,
    ),
    Column(
        "metadata",
        "json",
        "the application's key-value data given to Pay (a JSON object; {} when none)",
        lambda r, _: r.order.metadata,
    ),
)


def _read_orders(records: AccountingRecords) -> BatchRead[ExportedOrder]:
    return records.orders


def _order_key(row: ExportedOrder) -> tuple[datetime, int]:
    return (row.order.created_at, row.order.tg_payment_id)


ORDERS: ExportKind[ExportedOrder] = ExportKind("orders", _read_orders, _order_key, ORDER_COLUMNS)

TRANSACTION_COLUMNS: tuple[Column[LedgerEntry], ...] = (
    Column(
        "id",
        "text",
        "Telegram's transaction id (a payment's is its telegram_payment_charge_id; a refund has "
        "the id of the payment it returns)",
        lambda r, _: r.transaction.id,
    ),
    Column(
        "direction",
        "text",
        "incoming (Stars to the bot) or outgoing (Stars from the bot)",
        lambda r, _: r.transaction.direction.value,
    ),
    Column(
        "date",
        "timestamp",
        "when Telegram made it; the range and the row order are by it",
        lambda r, _: r.transaction.date,
    ),
    Column("amount", "integer", "whole Stars", lambda r, _: r.transaction.amount),
    Column(
        "nanostar_amount",
        "integer",
        "nanostars (0-999999999) on top of amount",
        lambda r, _: r.transaction.nanostar_amount,
    ),
    Column(
        "partner_type",
        "text",
        "user, fragment, telegram_ads, telegram_api, affiliate_program, chat, other, or a newer "
        "kind as Telegram names it",
        lambda r, _: r.transaction.partner_type,
    ),
    Column(
        "transaction_type",
        "text",
        "for a user partner: invoice_payment, paid_media_payment, gift_purchase, ...",
        lambda r, _: r.transaction.transaction_type,
    ),
    Column(
        "partner_id",
        "integer",
        "the user, chat or bot on the other side, when there is one",
        lambda r, _: r.transaction.partner_id,
    ),
    Column(
        "invoice_payload",
        "text",
        "an invoice payment's payload",
        lambda r, _: r.transaction.invoice_payload,
    ),
    Column(
        "withdrawal_state",
        "text",
        "a Fragment withdrawal's state: pending, succeeded or failed",
        lambda r, _: r.transaction.withdrawal_state,
    ),
    Column(
        "commission_per_mille",
        "integer",
        "an affiliate commission's share, per mille",
        lambda r, _: r.transaction.commission_per_mille,
    ),
    Column(
        "match",
        "text",
        "what the ledger made of it: payment, refund (of one of our orders), none (not about an "
        "order) or unmatched",
        lambda r, _: r.match.value,
    ),
    Column(
        "tg_payment_id",
        "integer",
        "the order it belongs to, when it matched one",
        lambda r, _: r.tg_payment_id,
    ),
    Column(
        "raw",
        "json",
        "the transaction exactly as Telegram sent it (a JSON object)",
        lambda r, _: r.transaction.raw,
    ),
)


def _read_transactions(records: AccountingRecords) -> BatchRead[LedgerEntry]:
    return records.transactions


def _transaction_key(row: LedgerEntry) -> tuple[datetime, str, str]:
    return (row.transaction.date, row.transaction.id, row.transaction.direction.value)


TRANSACTIONS: ExportKind[LedgerEntry] = ExportKind(
    "transactions", _read_transactions, _transaction_key, TRANSACTION_COLUMNS
)

KINDS: Mapping[str, ExportKind[Any]] = {kind.name: kind for kind in (ORDERS, TRANSACTIONS)}
"""What can be exported, by the name `--what` gives."""


class AccountingExport:
    """Writes one application's rows of one kind and time range to a text stream."""

    def __init__(
        self,
        records: AccountingRecords,
        applications: Applications,
        *,
        clock: Clock = utcnow,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._records = records
        self._applications = applications
        self._clock = clock
        self._batch_size = batch_size

    async def write(
        self,
        kind: ExportKind[Any],
        application_id: UUID,
        start: datetime,
        end: datetime,
        output_format: Format,
        out: TextIO,
    ) -> int:
        """Writes every row of `kind` made in [start, end) (a header line first in CSV); returns
        how many. InvalidArgument for an empty range, ApplicationNotFound for an unknown
        application, both before anything is written."""
        if start >= end:
            raise InvalidArgument([FieldViolation("to", "must be later than from")])
        if await self._applications.get(application_id) is None:
            raise ApplicationNotFound(f"no application {application_id}")
        rows = self._rows(kind, application_id, start, end, self._clock())
        if output_format == "csv":
            return await _write_csv(kind, rows, out)
        return await _write_jsonl(kind, rows, out)

    async def _rows(
        self,
        kind: ExportKind[R],
        application_id: UUID,
        start: datetime,
        end: datetime,
        now: datetime,
    ) -> AsyncIterator[list[object]]:
        """The rows' values, column by column, read a batch at a time after the last key."""
        read = kind.read(self._records)
        after: Any = None
        while True:
            batch = await read(application_id, start, end, after, self._batch_size)
            for row in batch:
                yield [column.value(row, now) for column in kind.columns]
            if len(batch) < self._batch_size:
                return
            after = kind.key(batch[-1])


async def _write_csv(kind: ExportKind[Any], rows: AsyncIterator[list[object]], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180's line ends
    writer.writerow([column.name for column in kind.columns])
    count = 0
    async for values in rows:
        writer.writerow([_csv_cell(value) for value in values])
        count += 1
    return count


async def _write_jsonl(
    kind: ExportKind[Any], rows: AsyncIterator[list[object]], out: TextIO
) -> int:
    names = [column.name for column in kind.columns]
    count = 0
    async for values in rows:
        line = {name: _json_value(value) for name, value in zip(names, values, strict=True)}
        out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return format_rfc3339(value)
    if isinstance(value, Mapping):
        return dict(sorted(value.items()))
    return value


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return json.dumps(dict(sorted(value.items())), ensure_ascii=False, separators=(",", ":"))
    return _json_value(value)
