"""The Star ledger's nouns: a bot's Star transactions as getStarTransactions lists them, read
once (`read_star_transaction`), and what the ledger made of each (`LedgerEntry`).

Bot API types read here (core.telegram.org/bots/api, checked against Bot API 10.3 and the
libraries that track it): StarTransaction {id, amount, nanostar_amount?, date, source?,
receiver?}: `source` is set on money coming in, `receiver` on money going out; a refund has the id
of the payment it returns, and an incoming payment's id is its telegram_payment_charge_id. The
partner (TransactionPartner) is one of `user` {transaction_type, user, affiliate?,
invoice_payload?, subscription_period?, paid_media?, paid_media_payload?, gift?,
premium_subscription_duration?}, `chat` {chat, gift?}, `affiliate_program` {sponsor_user?,
commission_per_mille}, `fragment` {withdrawal_state?: RevenueWithdrawalState `pending` |
`succeeded` {date, url} | `failed`}, `telegram_ads`, `telegram_api` {request_count}, `other`, and
whatever kind Telegram adds later: every kind is kept, its known fields extracted and the rest
left in `raw`.

Nothing is coerced and nothing raises: a transaction without a usable key (id, direction) or
amount (amount, nanostar_amount, date) is `Unreadable`, with the reason; a partner field that is
missing or of the wrong type is None, the transaction kept with what could be read.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from portex_pay.domain.checkout import CURRENCY, Charge
from portex_pay.domain.pay import INT64_MAX
from portex_pay.domain.text import is_storable
from portex_pay.domain.updates import SuccessfulPayment, storable

# getStarTransactions: "limit: Values between 1-100 are accepted. Defaults to 100."
PAGE_LIMIT: Final = 100
# Stars a bot receives become usable 21 days later (docs/telegram-stars.md; Telegram's Stars
# terms): until then they are on hold.
HOLD: Final = timedelta(days=21)
# The transaction types of a user partner that pay the bot for something (and, going out, are
# their refunds); gifts, Premium and business transfers are the bot's own spending.
PAYMENT_TYPES: Final = frozenset({"invoice_payment", "paid_media_payment"})
_NANOSTARS_MAX: Final = 999_999_999
_INT32_MAX: Final = 2**31 - 1
# Unix time of 9999-12-31T23:59:59Z: the last second a datetime (and a timestamptz) holds.
_DATE_MAX: Final = 253_402_300_799


class Direction(enum.StrEnum):
    INCOMING = "incoming"  # Telegram's `source` is set
    OUTGOING = "outgoing"  # Telegram's `receiver` is set


class Match(enum.StrEnum):
    """What the ledger made of a transaction."""

    PAYMENT = "payment"  # the charge of one of our orders
    REFUND = "refund"  # the refund of one of our charges
    NONE = "none"  # not about an order: a withdrawal, ads, a commission, ...
    UNMATCHED = "unmatched"  # looks like an order's payment or refund, but none of ours


class Role(enum.Enum):
    """What a transaction looks like to the reconciliation."""

    ORDER_PAYMENT = "order_payment"  # an incoming invoice payment from a user
    ORDER_REFUND = "order_refund"  # an outgoing refund of an invoice payment to a user
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class StarTransaction:
    """One transaction as Telegram listed it; `raw` is a storable copy of the whole of it."""

    id: str
    direction: Direction
    amount: int
    nanostar_amount: int
    date: datetime
    partner_type: str  # as Telegram names it ("" when the partner has no usable type)
    raw: dict[str, Any] = field(compare=False)
    transaction_type: str | None = None  # user partners
    partner_id: int | None = None  # the user, the chat or the sponsoring bot
    invoice_payload: str | None = None
    subscription_period: int | None = None
    paid_media_payload: str | None = None
    gift_id: str | None = None
    withdrawal_state: str | None = None  # fragment: pending | succeeded | failed
    withdrawal_date: datetime | None = None
    withdrawal_url: str | None = None
    commission_per_mille: int | None = None
    affiliate_user_id: int | None = None
    affiliate_chat_id: int | None = None
    request_count: int | None = None  # telegram_api

    @property
    def key(self) -> tuple[str, Direction]:
        """What names the transaction for a bot: a refund shares its payment's id."""
        return self.id, self.direction

    def role(self) -> Role:
        if self.partner_type != "user":
            return Role.OTHER
        # Telegram sends transaction_type since Bot API 9.0; in an older shape without it, an
        # incoming payment with a payload is an invoice's, and money going back is a refund.
        kind = self.transaction_type
        if self.direction is Direction.INCOMING:
            invoice = kind == "invoice_payment" or (kind is None and self.invoice_payload)
            return Role.ORDER_PAYMENT if invoice else Role.OTHER
        return Role.ORDER_REFUND if kind in ("invoice_payment", None) else Role.OTHER

    def as_payment(self) -> SuccessfulPayment | None:
        """The successful_payment an incoming invoice payment stands for (no update brought
        it: `update_id` is None), or None when it lacks the payer, the payload or an amount."""
        if self.role() is not Role.ORDER_PAYMENT:
            return None
        if self.partner_id is None or self.partner_id < 1 or self.invoice_payload is None:
            return None
        if self.amount < 1:
            return None
        # getStarTransactions lists Telegram Stars only.
        charge = Charge(self.partner_id, CURRENCY, self.amount, self.invoice_payload)
        # A user partner's subscription_period marks a subscription's charge (its first payment
        # or a renewal): recurring, as successful_payment's is_recurring says. The transaction
        # has no expiration date; its `date` stands in for it (PaymentRecord.charged_at).
        return SuccessfulPayment(
            None,
            charge,
            self.id,
            None,
            is_recurring=self.subscription_period is not None,
            charged_at=self.date,
        )


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A listed transaction that cannot be keyed or counted; `reason` says why (never its
    content)."""

    reason: str


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A transaction as the ledger keeps it: what it made of it and the order it belongs to."""

    transaction: StarTransaction
    match: Match
    tg_payment_id: int | None = None

    def event_data(self) -> dict[str, Any]:
        """The `data` of its event (`ledger.unmatched`): JSON values only."""
        t = self.transaction
        values: dict[str, Any] = {
            name: getattr(t, name)
            for name in _DATA_FIELDS
            if getattr(t, name) is not None and name not in ("date", "withdrawal_date")
        }
        values.update(
            direction=t.direction.value,
            date=int(t.date.timestamp()),
            match=self.match.value,
            tg_payment_id=self.tg_payment_id,
            raw=t.raw,
        )
        if t.withdrawal_date is not None:
            values["withdrawal_date"] = int(t.withdrawal_date.timestamp())
        return {"star_transaction": values}

    @classmethod
    def from_event_data(cls, data: dict[str, Any]) -> LedgerEntry | None:
        """The entry an event's data carries (`event_data`), or None when it carries none (or
        not in this version's shape: a reader must not trip on another version's event)."""
        values = data.get("star_transaction")
        if not isinstance(values, dict):
            return None
        found: dict[str, Any] = {name: values.get(name) for name in _DATA_FIELDS}
        try:
            found["direction"] = Direction(values["direction"])
            found["date"] = _datetime(values["date"])
            if found["withdrawal_date"] is not None:
                found["withdrawal_date"] = _datetime(found["withdrawal_date"])
            match = Match(values["match"])
        except (KeyError, ValueError, TypeError, OverflowError, OSError):
            return None
        transaction = StarTransaction(raw=values.get("raw") or {}, **found)
        return cls(transaction, match, values.get("tg_payment_id"))


_DATA_FIELDS: Final = tuple(
    name for name in StarTransaction.__dataclass_fields__ if name not in ("raw",)
)


def _datetime(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


# ----------------------------------------------------------------------------- reading


def _int(value: object, low: int, high: int = INT64_MAX) -> int | None:
    # bool is an int subclass in Python; JSON true is not a number.
    if type(value) is not int or not low <= value <= high:
        return None
    return value


def _text(value: object) -> str | None:
    if not isinstance(value, str) or not value or not is_storable(value):
        return None
    return value


def _get(mapping: object, *path: str) -> object:
    for key in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _id_of(mapping: object, key: str) -> int | None:
    """The `id` of a User or Chat object under `key` (chat ids may be negative)."""
    return _int(_get(mapping, key, "id"), -INT64_MAX)


def read_star_transaction(raw: object) -> StarTransaction | Unreadable:
    """One listed transaction, read; never raises."""
    if not isinstance(raw, dict):
        return Unreadable("not a JSON object")
    transaction_id = _text(raw.get("id"))
    if transaction_id is None:
        return Unreadable("'id' is not a non-empty storable string")
    source, receiver = raw.get("source"), raw.get("receiver")
    if isinstance(source, dict) == isinstance(receiver, dict):
        return Unreadable("not exactly one of 'source' and 'receiver' is an object")
    if not _is_json(raw):
        return Unreadable("not a strict JSON value (NaN, Infinity, or nested too deep)")
    amount = _int(raw.get("amount"), 0)
    nanostars = _int(raw.get("nanostar_amount", 0), 0, _NANOSTARS_MAX)
    date = _int(raw.get("date"), 0, _DATE_MAX)
    if amount is None or nanostars is None or date is None:
        return Unreadable("'amount', 'nanostar_amount' or 'date' is not a JSON integer in range")
    partner = source if isinstance(source, dict) else receiver
    assert isinstance(partner, dict)
    return StarTransaction(
        id=transaction_id,
        direction=Direction.INCOMING if isinstance(source, dict) else Direction.OUTGOING,
        amount=amount,
        nanostar_amount=nanostars,
        date=_datetime(date),
        partner_type=_text(partner.get("type")) or "",
        raw=storable(raw),
        **_partner_fields(partner),
    )


def _is_json(value: object) -> bool:
    """Whether PostgreSQL's jsonb takes the value: Python's JSON parser also reads NaN and
    Infinity, which JSON (and jsonb) has not."""
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def _partner_fields(partner: dict[str, Any]) -> dict[str, Any]:
    """The fields of the partner's kind that the ledger keeps apart from `raw`."""
    kind = partner.get("type")
    if kind == "user":
        return {
            "transaction_type": _text(partner.get("transaction_type")),
            "partner_id": _id_of(partner, "user"),
            "invoice_payload": _text(partner.get("invoice_payload")),
            "subscription_period": _int(partner.get("subscription_period"), 1, _INT32_MAX),
            "paid_media_payload": _text(partner.get("paid_media_payload")),
            "gift_id": _text(_get(partner, "gift", "id")),
            "commission_per_mille": _int(
                _get(partner, "affiliate", "commission_per_mille"), 0, 1000
            ),
            "affiliate_user_id": _id_of(partner.get("affiliate"), "affiliate_user"),
            "affiliate_chat_id": _id_of(partner.get("affiliate"), "affiliate_chat"),
        }
    if kind == "chat":
        return {
            "partner_id": _id_of(partner, "chat"),
            "gift_id": _text(_get(partner, "gift", "id")),
        }
    if kind == "affiliate_program":
        return {
            "partner_id": _id_of(partner, "sponsor_user"),
            "commission_per_mille": _int(partner.get("commission_per_mille"), 0, 1000),
        }
    if kind == "fragment":
        state = partner.get("withdrawal_state")
        succeeded = _get(state, "type") == "succeeded"
        withdrawal_date = _int(_get(state, "date"), 0, _DATE_MAX) if succeeded else None
        return {
            "withdrawal_state": _text(_get(state, "type")),
            "withdrawal_date": None if withdrawal_date is None else _datetime(withdrawal_date),
            "withdrawal_url": _text(_get(state, "url")) if succeeded else None,
        }
    if kind == "telegram_api":
        return {"request_count": _int(partner.get("request_count"), 0, _INT32_MAX)}
    return {}  # telegram_ads, other, and kinds newer than this code: `raw` holds them


# ---------------------------------------------------------------------- runs and queries


@dataclass(frozen=True, slots=True)
class LedgerClaim:
    """A reader's run on a bot: where to read from (the number of transactions read so far, the
    next getStarTransactions offset) and, when stored withdrawals are still pending, the
    position of the first of them (to read again)."""

    checkpoint: int
    pending_from: int | None = None


@dataclass(frozen=True, slots=True)
class StarTransactionQuery:
    """ListStarTransactions' filters: made at or after `date_start`, before `date_end`, of one
    of `partner_types` (any when empty)."""

    date_start: datetime | None = None
    date_end: datetime | None = None
    partner_types: tuple[str, ...] = ()


# ------------------------------------------------------------------------------ balance


@dataclass(frozen=True, slots=True)
class StarAmount:
    """Bot API StarAmount: whole Stars, rounded toward zero, and nanostars of the same sign."""

    amount: int
    nanostar_amount: int


def read_star_amount(raw: object) -> StarAmount | None:
    """getMyStarBalance's result, or None when it is not a StarAmount (`amount` may be negative;
    `nanostar_amount` is optional, from -999999999 to 999999999)."""
    amount = _int(_get(raw, "amount"), -INT64_MAX)
    given = _get(raw, "nanostar_amount")
    nanostars = 0 if given is None else _int(given, -_NANOSTARS_MAX, _NANOSTARS_MAX)
    if amount is None or nanostars is None:
        return None
    return StarAmount(amount, nanostars)


@dataclass(frozen=True, slots=True)
class HeldStars:
    """Stars received on one day, still on hold until `available_at` (the day's last receipt
    plus HOLD)."""

    available_at: datetime
    amount: int


@dataclass(frozen=True, slots=True)
class LedgerFigures:
    """What the ledger knows of a bot's Stars (GetStarBalance)."""

    received: int
    refunded: int
    withdrawn: int
    held: list[HeldStars]
    read_at: datetime | None

    @property
    def held_total(self) -> int:
        return sum(part.amount for part in self.held)


@dataclass(frozen=True, slots=True)
class StarBalance:
    telegram: StarAmount
    ledger: LedgerFigures
