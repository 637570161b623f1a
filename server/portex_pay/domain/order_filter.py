"""ListOrders' `filter`: a subset of Google AIP-160, parsed into comparisons that the PostgreSQL
adapter turns into SQL and that `OrderFilter.matches` judges in Python (the in-memory fake, and
the contract tests that hold both to the same answers).

Grammar (spaces are allowed around every token and needed between names only):

    filter     = [ comparison { "AND" comparison } ]
    comparison = field operator value
    field      = "tg_use_id" | "state" | "label" | "create_time" | "paid_time" | "fulfilled"
               | "subscription_state" | "metadata" "." ( name | string )
    operator   = "=" | "!=" | "<" | "<=" | ">" | ">="
    name       = ( letter | "_" ) { letter | digit | "_" }          (ASCII)
    string     = '"' { any character but '"' and '\\' | '\\"' | '\\\\' } '"'

`AND` is a keyword in upper case, as in AIP-160 (`and` is refused with a hint); `OR`, `NOT`, `-`
and `:` are not supported. Values by field: `tg_use_id` a whole number (1 to 2^63-1; `=`, `!=`);
`state` an Order.State name such as `PAID` (`=`, `!=`); `label` a string (`=`, `!=`);
`create_time`, `paid_time` an RFC 3339 time in a string, e.g. "2026-12-03T10:00:00Z" (every
operator; compared at PostgreSQL's microsecond precision, further digits are cut); `fulfilled`
`true` or `false` (`=`); `subscription_state` a Subscription.State name: ACTIVE, CANCELLED,
LAPSED or EXPIRED (`=`, `!=`); `metadata.KEY` a string (`=`, `!=`), the key written as a name
(`metadata.sku`) or, for any other key, as a string (`metadata."gift card"`).

Meaning: `state` is the state a reader sees (`Order.state_at`: an unpaid order past its expiry is
EXPIRED before the sweeper writes it down); `fulfilled = true` selects acknowledged orders;
`subscription_state` is the subscription's state as QueryOrder shows it (`Order.subscription_state`,
as stored: the lapse sweep writes EXPIRED, with its event, once a period has ended plus the grace,
domain/subscription.GRACE), and a one-off order, or a subscription whose first payment has not
arrived, has none. `a != v` selects exactly the orders `a = v` does not (an order without the
metadata key, never paid, or without a subscription state is among them); `<`, `<=`, `>`, `>=`
on `paid_time` select paid orders only. Comparisons on the same field are simply all applied
(`state = PAID AND state = PENDING` selects nothing).

Limits: at most 1000 characters and 20 comparisons. Every error names the 1-based character
position and the reason, e.g. `position 14: expected a value after '='`; nothing is echoed beyond
the token at fault, and a character that is refused in single-line text (domain/text.py) is an
error at its position before anything else is read.
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.metadata import KEY_MAX_CHARS
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.pay import INT64_MAX
from portex_pay.domain.subscription import SubscriptionState
from portex_pay.domain.text import single_line_problem

MAX_FILTER_CHARS = 1000
MAX_COMPARISONS = 20


class FilterField(enum.StrEnum):
    TG_USE_ID = "tg_use_id"
    STATE = "state"
    LABEL = "label"
    CREATE_TIME = "create_time"
    PAID_TIME = "paid_time"
    FULFILLED = "fulfilled"
    SUBSCRIPTION_STATE = "subscription_state"
    METADATA = "metadata"


class Operator(enum.StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


Value = int | str | bool | datetime | OrderState | SubscriptionState


@dataclass(frozen=True, slots=True)
class Comparison:
    """`field operator value`; `key` is the metadata key (`metadata.KEY`), else None."""

    field: FilterField
    operator: Operator
    value: Value
    key: str | None = None


_EQUALITY = (Operator.EQ, Operator.NE)
_OPERATORS: dict[FilterField, tuple[Operator, ...]] = {
    FilterField.TG_USE_ID: _EQUALITY,
    FilterField.STATE: _EQUALITY,
    FilterField.LABEL: _EQUALITY,
    FilterField.CREATE_TIME: tuple(Operator),
    FilterField.PAID_TIME: tuple(Operator),
    FilterField.FULFILLED: (Operator.EQ,),
    FilterField.SUBSCRIPTION_STATE: _EQUALITY,
    FilterField.METADATA: _EQUALITY,
}
_COMPARE: dict[Operator, Callable[[Any, Any], bool]] = {
    Operator.EQ: operator.eq,
    Operator.NE: operator.ne,
    Operator.LT: operator.lt,
    Operator.LE: operator.le,
    Operator.GT: operator.gt,
    Operator.GE: operator.ge,
}


def _field_of(order: Order, comparison: Comparison, now: datetime) -> object:
    """The order's value of the compared field (None: never paid, no such metadata key, or no
    subscription state)."""
    match comparison.field:
        case FilterField.TG_USE_ID:
            return order.tg_use_id
        case FilterField.STATE:
            return order.state_at(now)
        case FilterField.LABEL:
            return order.label
        case FilterField.CREATE_TIME:
            return order.created_at
        case FilterField.PAID_TIME:
            return order.paid_at
        case FilterField.FULFILLED:
            return order.fulfilled_at is not None
        case FilterField.SUBSCRIPTION_STATE:
            return order.subscription_state
        case FilterField.METADATA:
            assert comparison.key is not None
            return order.metadata.get(comparison.key)


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """Comparisons that all must hold; none: every order."""

    comparisons: tuple[Comparison, ...] = ()

    def matches(self, order: Order, now: datetime) -> bool:
        """Whether the order is selected when the expiry rule is judged at `now`."""
        return all(_holds(comparison, order, now) for comparison in self.comparisons)


def _holds(comparison: Comparison, order: Order, now: datetime) -> bool:
    if comparison.operator is Operator.NE:
        return not _holds(replace(comparison, operator=Operator.EQ), order, now)
    actual = _field_of(order, comparison, now)
    if actual is None:  # never paid, no such key, no subscription: only `!=` selects it
        return False
    return _COMPARE[comparison.operator](actual, comparison.value)


@dataclass(frozen=True, slots=True)
class OrderListQuery:
    """One page of ListOrders as the adapter reads it: the application's orders that `filter`
    selects, the expiry rule judged at `as_of`, newest first by (created_at, tg_payment_id),
    strictly after `after` (the previous page's last order) when given, at most `limit`."""

    filter: OrderFilter
    as_of: datetime
    after: tuple[datetime, int] | None
    limit: int


def sort_key(order: Order) -> tuple[datetime, int]:
    """ListOrders' order (descending) and its page position."""
    return order.created_at, order.tg_payment_id


# ---------------------------------------------------------------------------- the parser


class _FilterError(Exception):
    def __init__(self, position: int, reason: str) -> None:
        super().__init__(reason)
        self.position = position
        self.reason = reason


class _Kind(enum.Enum):
    NAME = "name"
    NUMBER = "number"
    STRING = "string"
    OPERATOR = "operator"
    DOT = "dot"
    END = "end"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str  # as written (a string: its value, escapes resolved)
    position: int  # 1-based

    def shown(self) -> str:
        if self.kind is _Kind.END:
            return "the end of the filter"
        if self.kind is _Kind.STRING:
            return "a string"
        return f"'{self.text}'"


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_NUMBER = re.compile(r"-?[0-9]+", re.ASCII)
_OPERATOR = re.compile(r"!=|<=|>=|=|<|>|:")
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_FIELDS = ", ".join([*(f for f in FilterField if f is not FilterField.METADATA), "metadata.KEY"])
_STATES = ", ".join(state.name for state in OrderState)
_SUBSCRIPTION_STATES = ", ".join(state.name for state in SubscriptionState)


def _unexpected(char: str) -> str:
    shown = f"'{char}'" if char.isascii() and char.isprintable() else f"U+{ord(char):04X}"
    return f"unexpected character {shown}"


def _string(text: str, start: int) -> tuple[str, int]:
    """The string literal opening at `start` (0-based): its value and the index after it."""
    chars: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(chars), index + 1
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            if escaped not in ('"', "\\"):
                shown = "at the end" if not escaped else _unexpected(escaped)
                raise _FilterError(
                    index + 1, f'a backslash in a string escapes only \\" and \\\\ ({shown})'
                )
            chars.append(escaped)
            index += 2
            continue
        chars.append(char)
        index += 1
    raise _FilterError(start + 1, "a string is not closed (a double quote is missing)")


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == " ":
            index += 1
            continue
        if char == '"':
            value, after = _string(text, index)
            tokens.append(_Token(_Kind.STRING, value, index + 1))
            index = after
            continue
        if char == ".":
            tokens.append(_Token(_Kind.DOT, ".", index + 1))
            index += 1
            continue
        for kind, pattern in (
            (_Kind.NAME, _NAME),
            (_Kind.NUMBER, _NUMBER),
            (_Kind.OPERATOR, _OPERATOR),
        ):
            found = pattern.match(text, index)
            if found is not None:
                tokens.append(_Token(kind, found.group(), index + 1))
                index = found.end()
                break
        else:
            raise _FilterError(index + 1, _unexpected(char))
    tokens.append(_Token(_Kind.END, "", len(text) + 1))
    return tokens


def _rfc3339(text: str) -> datetime | None:
    """The UTC time an RFC 3339 date-time names (to the microsecond), or None."""
    found = _TIME.fullmatch(text)
    if found is None:
        return None
    year, month, day, hour, minute, second = (int(found[n]) for n in range(1, 7))
    micros = int((found[7] or "").ljust(6, "0")[:6])
    try:
        offset = timedelta(0)
        if found[9] is not None:
            if int(found[11]) > 59:
                return None
            offset = timedelta(hours=int(found[10]), minutes=int(found[11]))
            offset = -offset if found[9] == "-" else offset
        zone = timezone(offset)
        return datetime(year, month, day, hour, minute, second, micros, zone).astimezone(UTC)
    except (ValueError, OverflowError):  # a day or hour that does not exist, out of range
        return None


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0

    def _next(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind is not _Kind.END:
            self._index += 1
        return token

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def parse(self) -> OrderFilter:
        if self._peek().kind is _Kind.END:
            return OrderFilter()
        comparisons = [self._comparison(after=None)]
        while (joint := self._next()).kind is not _Kind.END:
            if joint.kind is not _Kind.NAME or joint.text != "AND":
                raise _FilterError(joint.position, _joint_problem(joint))
            if len(comparisons) == MAX_COMPARISONS:
                raise _FilterError(
                    joint.position, f"a filter holds at most {MAX_COMPARISONS} comparisons"
                )
            comparisons.append(self._comparison(after=joint))
        return OrderFilter(tuple(comparisons))

    def _comparison(self, after: _Token | None) -> Comparison:
        token = self._next()
        if token.kind is _Kind.END and after is not None:
            raise _FilterError(token.position, "expected a comparison after AND")
        if token.kind is not _Kind.NAME:
            raise _FilterError(
                token.position, f"expected a field ({_FIELDS}), found {token.shown()}"
            )
        if token.text in ("NOT", "OR"):
            raise _FilterError(token.position, f"{token.text} is not supported, only AND")
        try:
            field = FilterField(token.text)
        except ValueError:
            raise _FilterError(
                token.position, f"unknown field '{token.text}' (fields: {_FIELDS})"
            ) from None
        key = self._metadata_key() if field is FilterField.METADATA else None
        name = "metadata.KEY" if key is not None else field.value
        op = self._next()
        if op.kind is not _Kind.OPERATOR:
            raise _FilterError(
                op.position, f"expected an operator (=, !=, <, <=, >, >=) after {name}"
            )
        allowed = _OPERATORS[field]
        if op.text not in allowed:
            raise _FilterError(
                op.position,
                f"{name} takes {' or '.join(allowed)}, not {op.text}"
                if op.text != ":"
                else "the has-operator ':' is not supported; use =",
            )
        value_token = self._next()
        if value_token.kind in (_Kind.END, _Kind.OPERATOR):
            raise _FilterError(value_token.position, f"expected a value after '{op.text}'")
        value = _value(field, name, value_token)
        return Comparison(field, Operator(op.text), value, key)

    def _metadata_key(self) -> str:
        dot = self._next()
        key = self._next()
        if dot.kind is not _Kind.DOT or key.kind not in (_Kind.NAME, _Kind.STRING):
            where = key.position if dot.kind is _Kind.DOT else dot.position
            raise _FilterError(
                where, 'expected a key after metadata: metadata.KEY or metadata."any key"'
            )
        if not 0 < len(key.text) <= KEY_MAX_CHARS:
            raise _FilterError(key.position, f"a metadata key has 1-{KEY_MAX_CHARS} characters")
        return key.text


def _joint_problem(joint: _Token) -> str:
    if joint.kind is _Kind.NAME and joint.text.upper() == "AND":
        return f"write AND in upper case, not {joint.text}"
    if joint.kind is _Kind.NAME and joint.text.upper() == "OR":
        return "OR is not supported: comparisons can only be joined by AND"
    return f"expected AND between comparisons, found {joint.shown()}"


def _value(field: FilterField, name: str, token: _Token) -> Value:
    """The value `token` gives `field`, or the error that says what the field takes."""
    match field:
        case FilterField.TG_USE_ID:
            if token.kind is _Kind.NUMBER and 0 < int(token.text) <= INT64_MAX:
                return int(token.text)
            raise _FilterError(token.position, f"{name} takes a whole number from 1 to {INT64_MAX}")
        case FilterField.STATE:
            if token.kind is _Kind.NAME and token.text in OrderState.__members__:
                return OrderState[token.text]
            raise _FilterError(token.position, f"{name} takes one of {_STATES}")
        case FilterField.SUBSCRIPTION_STATE:
            if token.kind is _Kind.NAME and token.text in SubscriptionState.__members__:
                return SubscriptionState[token.text]
            raise _FilterError(token.position, f"{name} takes one of {_SUBSCRIPTION_STATES}")
        case FilterField.FULFILLED:
            if token.kind is _Kind.NAME and token.text in ("true", "false"):
                return token.text == "true"
            raise _FilterError(token.position, f"{name} takes true or false")
        case FilterField.CREATE_TIME | FilterField.PAID_TIME:
            time = _rfc3339(token.text) if token.kind is _Kind.STRING else None
            if time is None:
                raise _FilterError(
                    token.position,
                    f'{name} takes an RFC 3339 time in double quotes, e.g. "2026-12-03T10:00:00Z"',
                )
            return time
        case FilterField.LABEL | FilterField.METADATA:
            if token.kind is _Kind.STRING:
                return token.text
            raise _FilterError(token.position, f"{name} takes a string in double quotes")


def _refused_character(text: str) -> int | None:
    """The 0-based index of the first character single-line text refuses, or None."""
    if single_line_problem(text) is None:
        return None
    return next(index for index, char in enumerate(text) if single_line_problem(char) is not None)


def parse_order_filter(text: str) -> OrderFilter:
    """The filter `text` describes, or InvalidArgument with one violation on `filter` naming the
    position and the reason. Never raises anything else, whatever the text."""
    try:
        if len(text) > MAX_FILTER_CHARS:
            raise _FilterError(
                MAX_FILTER_CHARS + 1, f"a filter holds at most {MAX_FILTER_CHARS} characters"
            )
        refused = _refused_character(text)
        if refused is not None:
            raise _FilterError(
                refused + 1,
                f"control characters and lone surrogates are not allowed "
                f"(found U+{ord(text[refused]):04X})",
            )
        return _Parser(_tokens(text)).parse()
    except _FilterError as error:
        raise InvalidArgument(
            [FieldViolation("filter", f"position {error.position}: {error.reason}")]
        ) from None
