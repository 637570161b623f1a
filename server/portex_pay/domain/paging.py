"""Pages of a list RPC (Google AIP-158): the page size rule and the page token of keyset paging.

A page token is opaque to clients: `v1.<position>.<as of>.<request digest>` in unpadded base64url.
The position is the sort key of the previous page's last row (integers: a timestamp as
microseconds since the epoch, an id), so the next page is read with `(key) < (position)` from an
index, never with OFFSET, and one short statement per page: nothing is held between pages, and
rows inserted meanwhile can neither repeat a row nor hide one. `as of` is the time the first page
fixed for rules that depend on the clock (an order's expiry), so that every page judges them
alike. The digest binds the token to the request's filter: a token sent with another filter is
refused (AIP-158: the other fields must be the same) instead of answering a list nobody asked
for. Decoding accepts only what `encode` makes, so no other string reaches a query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from portex_pay.domain.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_MAX = 2**63 - 1
_INT = r"-?(?:0|[1-9][0-9]{0,18})"
_DIGEST = re.compile(r"[0-9a-f]{16}", re.ASCII)
_ENCODED = re.compile(r"[A-Za-z0-9_-]{1,256}", re.ASCII)
_MALFORMED = "is not a page token of this list; send the next_page_token of the previous page"


def page_size(requested: int) -> int:
    """The page size a request asks for: 0 (unset) means the default; InvalidArgument on
    `page_size` for a negative size or one above the maximum."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 0 < requested <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            [
                FieldViolation(
                    "page_size",
                    f"must be from 1 to {MAX_PAGE_SIZE} (0 or unset: {DEFAULT_PAGE_SIZE})",
                )
            ]
        )
    return requested


def request_digest(*parts: str) -> str:
    """A short digest of the request fields a page token must be sent with again."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch: exact for PostgreSQL's timestamptz."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC time `to_micros` gave; OverflowError outside datetime's range."""
    return _EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True, slots=True)
class PageToken:
    position: tuple[int, ...]
    as_of: datetime
    digest: str

    def encode(self) -> str:
        parts = [*(str(n) for n in self.position), str(to_micros(self.as_of)), self.digest]
        raw = "v1." + ".".join(parts)
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def time_at(self, index: int) -> datetime:
        """The position's `index`-th number read as a time (microseconds since the epoch), or
        InvalidArgument on `page_token` when no time is that far from the epoch."""
        try:
            return from_micros(self.position[index])
        except OverflowError:
            raise InvalidArgument([FieldViolation("page_token", _MALFORMED)]) from None

    @classmethod
    def decode(cls, text: str, *, digest: str, arity: int) -> PageToken:
        """The token `encode` made for a request of this digest with a position of `arity`
        integers, or InvalidArgument on `page_token` saying why not."""
        token = cls._parse(text, arity)
        if token is None:
            raise InvalidArgument([FieldViolation("page_token", _MALFORMED)])
        if token.digest != digest:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "page_token",
                        "was made for another filter: send the filter of the first page again, "
                        "or start over without page_token",
                    )
                ]
            )
        return token

    @classmethod
    def _parse(cls, text: str, arity: int) -> PageToken | None:
        if not _ENCODED.fullmatch(text):
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        except (ValueError, binascii.Error):
            return None
        found = re.fullmatch(rf"v1\.((?:{_INT}\.){{{arity + 1}}})([0-9a-f]+)", raw, re.ASCII)
        if found is None or not _DIGEST.fullmatch(found[2]):
            return None
        numbers = [int(part) for part in found[1].rstrip(".").split(".")]
        if any(abs(number) > _INT64_MAX for number in numbers):  # a bigint column's range
            return None
        try:
            token = cls(tuple(numbers[:-1]), from_micros(numbers[-1]), found[2])
        except OverflowError:
            return None
        # Only the canonical spelling: another base64 of the same bytes is not ours.
        return token if token.encode() == text else None
