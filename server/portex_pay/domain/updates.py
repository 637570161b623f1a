"""Telegram updates, read once: `read_update` turns an update as Telegram sent it into one typed
value (`IncomingUpdate`) that everything downstream acts on: its id and kinds, the chat and bot
command of a message, the payment, checkout or refund it carries, and whether its invoice payload
is ours (verified here, once per update).

Nothing from Telegram is coerced. Amounts and ids must be JSON integers (never `"5"`, `5.9` or
`true`) within PostgreSQL's bigint; ids and texts we keep must be strings that PostgreSQL can store
(no NUL, no lone surrogate). An update that breaks these rules is not ours to guess at: its value
says why (`malformed`) and the caller records it as a dead letter (service/updates.py).
`read_update` raises nothing, and `parse_update` (the payment content alone) raises
`MalformedUpdate` and nothing else, on any JSON value.

Bot API types used: Update (`update_id`, `pre_checkout_query`, `message`), PreCheckoutQuery (`id`,
`from`, `currency`, `total_amount`, `invoice_payload`), Message (`from`, `chat`, `text`,
`successful_payment`, `refunded_payment`), Chat (`id`, `type`), SuccessfulPayment and
RefundedPayment (`currency`, `total_amount`, `invoice_payload`, `telegram_payment_charge_id`,
`provider_payment_charge_id`; a subscription's `is_recurring`, `is_first_recurring`,
`subscription_expiration_date`), and Bot API 10.2's `subscription` (BotSubscriptionUpdated:
`user`, `invoice_payload`, `state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from portex_pay.domain.checkout import Charge, PaymentRecord
from portex_pay.domain.pay import INT64_MAX, PayloadKeys, verify_invoice_payload
from portex_pay.domain.relay import update_kind
from portex_pay.domain.subscription import TELEGRAM_STATES
from portex_pay.domain.text import is_storable, storable_text

# The latest Unix time a datetime holds (9999-12-31T23:59:59Z).
MAX_UNIX_TIME = 253402300799


class MalformedUpdate(ValueError):
    """The update lacks what its kind requires, or carries values we must not coerce."""


@dataclass(frozen=True, slots=True)
class PreCheckoutQuery:
    update_id: int
    query_id: str
    charge: Charge


@dataclass(frozen=True, slots=True)
class SuccessfulPayment:
    update_id: int | None  # None: found by the Star ledger, not delivered as an update
    charge: Charge
    telegram_payment_charge_id: str
    provider_payment_charge_id: str | None
    # A subscription's charge: recurring, its first, and the end of the period it paid.
    is_recurring: bool = False
    is_first_recurring: bool = False
    subscription_expiration_date: datetime | None = None
    # Found by the Star ledger: the transaction's date (PaymentRecord.charged_at).
    charged_at: datetime | None = None

    def record(
        self,
        bot_id: int,
        application_id: UUID,
        signed: SignedPayload | None,
        raw: dict[str, Any],
    ) -> PaymentRecord:
        """The charge as the ledger records it, with what its payload proves (`signed`: None
        when the payload is not ours)."""
        return PaymentRecord(
            bot_id=bot_id,
            update_id=self.update_id,
            application_id=application_id,
            tg_payment_id=signed.tg_payment_id if signed else None,
            signed_amount=signed.amount if signed else None,
            charge=self.charge,
            telegram_payment_charge_id=self.telegram_payment_charge_id,
            provider_payment_charge_id=self.provider_payment_charge_id,
            raw=raw,
            is_recurring=self.is_recurring,
            is_first_recurring=self.is_first_recurring,
            subscription_expiration_date=self.subscription_expiration_date,
            charged_at=self.charged_at,
        )


@dataclass(frozen=True, slots=True)
class RefundedPayment:
    update_id: int
    telegram_payment_charge_id: str


@dataclass(frozen=True, slots=True)
class SubscriptionUpdate:
    """Bot API 10.2's `subscription` update: the user cancelled (`canceled`) or re-enabled
    (`active`) a subscription, or its renewal payment failed (`failed`)."""

    update_id: int
    user_id: int
    invoice_payload: str
    state: str  # one of domain/subscription.TELEGRAM_STATES


@dataclass(frozen=True, slots=True)
class OtherUpdate:
    """An update that is not about payments: not ours to act on."""

    update_id: int


Update = PreCheckoutQuery | SuccessfulPayment | RefundedPayment | SubscriptionUpdate | OtherUpdate


@dataclass(frozen=True, slots=True)
class SignedPayload:
    """An invoice payload of ours, verified (domain/pay.py): the order it pays and the amount it
    was signed for."""

    tg_payment_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class Chat:
    """The chat a message came from (Bot API, Chat): its id (None when that is not a JSON
    integer) and its type ("private", "group", ...; None when not a string)."""

    id: int | None
    type: str | None


@dataclass(frozen=True, slots=True)
class Command:
    """A message text that starts with a bot command, `/name` or `/name@bot` (Bot API, "Commands"):
    the name lower-cased, and the bot it is addressed to as written (None: no one in
    particular)."""

    name: str
    addressee: str | None


@dataclass(frozen=True, slots=True)
class IncomingUpdate:
    """One update, read once (read_update). `content` is None when the update is malformed, and
    `malformed` says why; the rest is what could be read all the same."""

    update_id: int | None  # None: not a usable id (the update is malformed)
    kind: str | None  # its Update field, as the relay keeps it (domain/relay.py update_kind)
    record_kind: str  # what it is about, for records and logs: a fixed vocabulary, never input
    content: Update | None
    malformed: str | None
    signed: SignedPayload | None  # the payload of a checkout or payment, when it is ours
    chat: Chat | None  # the message's chat
    command: Command | None  # the message's bot command
    # A pre-checkout's query id, even when the rest is malformed, so that it can still be
    # declined at once (Telegram cancels an unanswered checkout after 10 seconds).
    query_id: str | None

    def reply_chat_id(self) -> int:
        """The chat an answer to this message goes to; MalformedUpdate when it names none."""
        if self.chat is None or self.chat.id is None:
            raise MalformedUpdate("the message has no chat id")
        return self.chat.id


def _field(mapping: object, key: str) -> object:
    if not isinstance(mapping, dict) or key not in mapping:
        raise MalformedUpdate(f"missing {key!r}")
    return mapping[key]


def _integer(mapping: object, key: str, *, low: int) -> int:
    value = _field(mapping, key)
    # bool is an int subclass in Python; JSON true is not a number.
    if type(value) is not int:
        raise MalformedUpdate(f"{key!r} is not a JSON integer")
    if not low <= value <= INT64_MAX:
        raise MalformedUpdate(f"{key!r} is out of range")
    return value


def _text(mapping: object, key: str) -> str:
    value = _field(mapping, key)
    if not isinstance(value, str) or not value:
        raise MalformedUpdate(f"{key!r} is not a non-empty string")
    if not is_storable(value):
        raise MalformedUpdate(f"{key!r} contains NUL or a lone surrogate")
    return value


def _optional_text(mapping: dict[str, Any], key: str) -> str | None:
    if mapping.get(key) in (None, ""):
        return None
    return _text(mapping, key)


def _charge(payer: object, payment: object) -> Charge:
    return Charge(
        payer_id=_integer(payer, "id", low=1),
        currency=_text(payment, "currency"),
        total_amount=_integer(payment, "total_amount", low=1),
        invoice_payload=_text(payment, "invoice_payload"),
    )


def update_id_of(raw: object) -> int | None:
    """The update's id when it is a usable one (for de-duplication and polling offsets)."""
    try:
        return _integer(raw, "update_id", low=0)
    except MalformedUpdate:
        return None


def _record_kind(raw: object) -> str:
    """What the update is about, for records and logs: a fixed vocabulary, never input."""
    if not isinstance(raw, dict):
        return "unknown"
    if "pre_checkout_query" in raw:
        return "pre_checkout_query"
    if "subscription" in raw:
        return "subscription"
    message = raw.get("message")
    if isinstance(message, dict):
        for kind in ("successful_payment", "refunded_payment"):
            if kind in message:
                return kind
        return "message"
    return "other"


def read_update(raw: object, payload_keys: PayloadKeys) -> IncomingUpdate:
    """The update as one typed value, its invoice payload (if any) checked against
    `payload_keys`; never raises."""
    update_id = update_id_of(raw)
    record_kind = _record_kind(raw)
    content: Update | None = None
    malformed = None
    try:
        content = _content(raw, update_id, record_kind)
    except MalformedUpdate as error:
        malformed = str(error)
    signed = None
    if isinstance(content, PreCheckoutQuery | SuccessfulPayment):
        signed = verify_payload(payload_keys, content.charge.invoice_payload)
    elif isinstance(content, SubscriptionUpdate):
        signed = verify_payload(payload_keys, content.invoice_payload)
    message = raw.get("message") if isinstance(raw, dict) else None
    return IncomingUpdate(
        update_id=update_id,
        kind=update_kind(raw),
        record_kind=record_kind,
        content=content,
        malformed=malformed,
        signed=signed,
        chat=_chat(message),
        command=_command(message),
        query_id=_query_id(raw) if record_kind == "pre_checkout_query" else None,
    )


def verify_payload(payload_keys: PayloadKeys, payload: str) -> SignedPayload | None:
    """The invoice payload as ours (domain/pay.py), or None when it is not ours, tampered or
    signed by a key no longer in the ring."""
    verified = verify_invoice_payload(payload_keys, payload)
    return None if verified is None else SignedPayload(*verified)


def parse_update(raw: object) -> Update:
    """The update's payment content alone; MalformedUpdate for anything we cannot use as it is
    (read_update keeps the reason instead)."""
    return _content(raw, update_id_of(raw), _record_kind(raw))


def _content(raw: object, update_id: int | None, kind: str) -> Update:
    if update_id is None:
        raise MalformedUpdate("'update_id' is not a JSON integer from 0 to 2^63-1")
    assert isinstance(raw, dict)
    if kind == "pre_checkout_query":
        query = raw["pre_checkout_query"]
        return PreCheckoutQuery(
            update_id, _text(query, "id"), _charge(_field(query, "from"), query)
        )
    if kind == "successful_payment":
        message = raw["message"]
        payment = message["successful_payment"]
        charge = _charge(_field(message, "from"), payment)
        assert isinstance(payment, dict)
        return SuccessfulPayment(
            update_id,
            charge,
            _text(payment, "telegram_payment_charge_id"),
            _optional_text(payment, "provider_payment_charge_id"),
            is_recurring=_flag(payment, "is_recurring"),
            is_first_recurring=_flag(payment, "is_first_recurring"),
            subscription_expiration_date=_optional_date(payment, "subscription_expiration_date"),
        )
    if kind == "subscription":
        return _subscription(update_id, raw["subscription"])
    if kind == "refunded_payment":
        refunded = raw["message"]["refunded_payment"]
        return RefundedPayment(update_id, _text(refunded, "telegram_payment_charge_id"))
    return OtherUpdate(update_id)


def _flag(mapping: dict[str, Any], key: str) -> bool:
    """An optional Boolean field (Telegram sends `true` or leaves it out)."""
    value = mapping.get(key, False)
    if type(value) is not bool:
        raise MalformedUpdate(f"{key!r} is not a JSON Boolean")
    return value


def _optional_date(mapping: dict[str, Any], key: str) -> datetime | None:
    """An optional Unix time (Telegram's dates), as an aware datetime."""
    if mapping.get(key) is None:
        return None
    seconds = _integer(mapping, key, low=1)
    if seconds > MAX_UNIX_TIME:
        raise MalformedUpdate(f"{key!r} is out of range")
    return datetime.fromtimestamp(seconds, UTC)


def _subscription(update_id: int, subscription: object) -> SubscriptionUpdate:
    state = _text(subscription, "state")
    if state not in TELEGRAM_STATES:
        raise MalformedUpdate("'state' is not canceled, active or failed")
    return SubscriptionUpdate(
        update_id,
        _integer(_field(subscription, "user"), "id", low=1),
        _text(subscription, "invoice_payload"),
        state,
    )


def _query_id(raw: object) -> str | None:
    """The query id of a pre-checkout update, even a malformed one."""
    assert isinstance(raw, dict)
    try:
        return _text(raw["pre_checkout_query"], "id")
    except MalformedUpdate:
        return None


def _chat(message: object) -> Chat | None:
    chat = message.get("chat") if isinstance(message, dict) else None
    if not isinstance(chat, dict):
        return None
    chat_id, chat_type = chat.get("id"), chat.get("type")
    return Chat(
        chat_id if type(chat_id) is int else None,
        chat_type if isinstance(chat_type, str) else None,
    )


def _command(message: object) -> Command | None:
    text = message.get("text") if isinstance(message, dict) else None
    if not isinstance(text, str):
        return None
    words = text.split(maxsplit=1)
    if not words or not words[0].startswith("/"):
        return None
    name, _, addressee = words[0][1:].partition("@")
    return Command(name.lower(), addressee or None)


def storable(value: Any) -> Any:
    """A copy of a JSON value that PostgreSQL's jsonb accepts: NUL and lone surrogates become
    U+FFFD. For the raw copies we keep; the values we act on are parsed strictly instead."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class DeadLetter:
    application_id: UUID
    bot_id: int
    update_id: int | None
    kind: str
    raw: bytes
    error: str
    attempts: int
    reason: str  # MALFORMED_UPDATE | RETRIES_EXHAUSTED | PROCESSING_ERROR
