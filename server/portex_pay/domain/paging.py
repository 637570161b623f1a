"""Pages of a list (AIP-158): the page size rule, and page tokens for keyset paging.

A list is read a page at a time in a fixed order, each page one short query that starts after
the last row of the page before (keyset paging: no OFFSET, no transaction held between pages, so
rows inserted meanwhile neither shift nor repeat what a reader has seen). The page token carries
that position, the last row's sort key, and a digest of the filters it was made for: a token
reused with other filters is refused, since a position in one list means nothing in another. It
is opaque to clients (unpadded base64url of a small JSON array) but not secret: a forged token can
only point elsewhere in the caller's own list, which every query scopes to the calling
application. Times go into a position as integer microseconds (PostgreSQL's precision), exactly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.text import is_storable

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_TOKEN_VERSION = 1
_TOKEN_MAX_CHARS = 2048
_TEXT_MAX_CHARS = 512  # a text in a position: an id (a charge id is at most 256 characters)
_INT64 = range(-(2**63), 2**63)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Position = tuple[int | str, ...]


def page_size(requested: int) -> int:
    """The page size a request asks for: DEFAULT_PAGE_SIZE when unset (0), else 1 to
    MAX_PAGE_SIZE; InvalidArgument on `page_size` otherwise."""
    size = requested or DEFAULT_PAGE_SIZE
    if not 0 < size <= MAX_PAGE_SIZE:
        raise InvalidArgument([FieldViolation("page_size", f"must be from 1 to {MAX_PAGE_SIZE}")])
    return size


def micros(value: datetime) -> int:
    """A time as whole microseconds since the epoch (for a position)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The time `micros` made; OverflowError beyond the years datetime holds."""
    return _EPOCH + timedelta(microseconds=value)


def position_time(value: int | str) -> datetime:
    """A time a decoded position holds (`micros`), or InvalidArgument on `page_token` when no
    time is that far from the epoch (a token this service did not make)."""
    try:
        return from_micros(int(value))
    except OverflowError:
        raise _malformed() from None


def _digest(filters: Mapping[str, object]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(position: Position, filters: Mapping[str, object]) -> str:
    """The token of the page that starts after `position`, for a list read with `filters` (a
    JSON-able mapping naming every filter the list was read with)."""
    raw = json.dumps([_TOKEN_VERSION, _digest(filters), list(position)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(
    token: str, filters: Mapping[str, object], shape: Sequence[type[int] | type[str]]
) -> Position:
    """The position `encode_page_token` put in `token` (its values of the types `shape` names,
    in order), or InvalidArgument on `page_token`: for anything this service did not make, and
    for a token made for other `filters`."""
    found = _read(token)
    if (
        not isinstance(found, list)
        or len(found) != 3
        or found[0] != _TOKEN_VERSION
        or not isinstance(found[1], str)
        or not isinstance(found[2], list)
        or len(found[2]) != len(shape)
        or not all(_fits(value, kind) for value, kind in zip(found[2], shape, strict=True))
    ):
        raise _malformed()
    if found[1] != _digest(filters):
        raise InvalidArgument(
            [
                FieldViolation(
                    "page_token", "was made for other filters: ask with the first page's filters"
                )
            ]
        )
    return tuple(found[2])


def _read(token: str) -> object:
    if len(token) > _TOKEN_MAX_CHARS or not token.isascii():
        raise _malformed()
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):  # JSONDecodeError and UnicodeDecodeError included
        raise _malformed() from None


def _fits(value: object, kind: type) -> bool:
    if kind is int:  # bool is an int to Python, not to a position
        return type(value) is int and value in _INT64
    return isinstance(value, str) and 0 < len(value) <= _TEXT_MAX_CHARS and is_storable(value)


def _malformed() -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", "is not a page token of this list")])
