"""Keyset page tokens (AIP-158): where the next page of a list starts, opaque to clients.

A token holds the sort key of the last row served and a fingerprint of the request's filters, so
that a page is one index range scan (`WHERE (key...) < ($1, ...)`, never OFFSET) and a token used
with other filters is refused instead of answering a list nobody asked for. A token only moves a
reader within its own application's rows (the tenant comes from the API key, never from the
token), so it needs no signature; it is checked strictly all the same, and anything this service
did not make is INVALID_ARGUMENT on the request's `page_token` field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence

from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.pay import INT64_MAX
from portex_pay.domain.text import is_storable

_VERSION = 1
_MAX_CHARS = 1024  # far above any token made here; refused unread above it
KeyPart = str | int


def fingerprint(*filters: object) -> str:
    """A short digest of the filters a token is valid for (their `repr`, in order)."""
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:16]


def encode_page_token(position: Sequence[KeyPart], scope: str) -> str:
    """The token for the page after the row whose sort key is `position`."""
    text = json.dumps([_VERSION, scope, list(position)], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_page_token(
    token: str, scope: str, kinds: Sequence[type], *, field: str = "page_token"
) -> list[KeyPart]:
    """The sort key a token made by `encode_page_token` for `scope` holds, each part of the type
    in `kinds`; InvalidArgument on `field` for anything else."""

    def refuse(why: str) -> InvalidArgument:
        return InvalidArgument([FieldViolation(field, why)])

    if len(token) > _MAX_CHARS:
        raise refuse("is not a page token of this list")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
        version, token_scope, position = json.loads(text)
    except (ValueError, TypeError, binascii.Error):
        raise refuse("is not a page token of this list") from None
    if version != _VERSION or not isinstance(position, list) or len(position) != len(kinds):
        raise refuse("is not a page token of this list")
    if token_scope != scope:
        raise refuse("was made for other filters: repeat the first request's filters")
    for part, kind in zip(position, kinds, strict=True):
        # bool is an int in Python; a JSON true is not a key.
        if type(part) is not kind or not _storable(part):
            raise refuse("is not a page token of this list")
    return position


def _storable(part: object) -> bool:
    """Whether PostgreSQL can take the part as a query parameter (text, bigint)."""
    if isinstance(part, str):
        return is_storable(part)
    return isinstance(part, int) and -INT64_MAX - 1 <= part <= INT64_MAX
