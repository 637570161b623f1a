"""What a browser may ask for: the merchant's price list, allowed origins and callback prefixes.

A browser can edit every field it sends, so a Pay that comes from the Mini App edge is priced by
the application, not by the request: in `catalog` pricing (the default) the PaymentOptions'
`label` names an item of the application's catalog and the amount must be the item's price; in
`open` pricing (test applications) the browser's amount is taken as it is. Callback URLs a
browser sends must lie under one of the application's callback prefixes; CORS origins are compared
in their serialised form (scheme://host[:port], lowercase).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import unquote, urlsplit

from portex_pay.domain.errors import FieldViolation, RequestRejected
from portex_pay.domain.init_data import TelegramUser
from portex_pay.domain.metadata import metadata_violations
from portex_pay.domain.pay import (
    DESCRIPTION_MAX_CHARS,
    LABEL_MAX_CHARS,
    TITLE_MAX_CHARS,
    URL_MAX_CHARS,
    PayCommand,
)
from portex_pay.domain.subscription import max_amount_for, period_problem
from portex_pay.domain.text import free_text_problem, single_line_problem, storable_text

ITEM_KEY_MAX_CHARS = LABEL_MAX_CHARS  # the key travels as the PaymentOptions' label
MAX_ORIGINS = 32
MAX_CALLBACK_PREFIXES = 32
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_DECODINGS = 4


class PricingMode(enum.StrEnum):
    CATALOG = "catalog"
    OPEN = "open"


class UnknownItem(RequestRejected):
    def __init__(self, message: str) -> None:
        super().__init__("UNKNOWN_ITEM", "label", message)


class PriceMismatch(RequestRejected):
    def __init__(self, message: str) -> None:
        super().__init__("PRICE_MISMATCH", "amount", message)


@dataclass(frozen=True, slots=True)
class CatalogItem:
    key: str
    amount: int
    title: str | None = None
    description: str | None = None
    photo_url: str | None = None
    # Copied onto every order made for the item at the edge (domain/metadata.py rules).
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Makes every order made for the item at the edge a subscription (Pay's rules); None: one-off.
    subscription_period: int | None = None


def validate_item(item: CatalogItem, *, max_amount: int) -> list[FieldViolation]:
    """Every rule the item breaks (the same limits as Pay's fields it stands for)."""
    bad: list[FieldViolation] = []

    def text(field: str, value: str | None, limit: int, *, free: bool = False) -> None:
        if value is None:
            return
        problem = free_text_problem(value) if free else single_line_problem(value)
        if problem is None and not 0 < len(value) <= limit:
            problem = f"must be 1-{limit} characters"
        if problem is not None:
            bad.append(FieldViolation(field, problem))

    text("key", item.key, ITEM_KEY_MAX_CHARS)
    period = period_problem(item.subscription_period)
    if period is not None:
        bad.append(FieldViolation("subscription_period", period))
    max_amount = max_amount_for(item.subscription_period, max_amount)
    if not 0 < item.amount <= max_amount:
        bad.append(
            FieldViolation("amount", f"must be a whole number of Stars from 1 to {max_amount}")
        )
    text("title", item.title, TITLE_MAX_CHARS)
    text("description", item.description, DESCRIPTION_MAX_CHARS, free=True)
    text("photo_url", item.photo_url, URL_MAX_CHARS)
    photo_ok = not any(v.field == "photo_url" for v in bad)
    if item.photo_url is not None and photo_ok and _http_origin(item.photo_url) is None:
        bad.append(FieldViolation("photo_url", "must be an absolute http(s) URL"))
    bad.extend(metadata_violations(item.metadata))
    return bad


def priced(command: PayCommand, item: CatalogItem | None, mode: PricingMode) -> PayCommand:
    """The Pay a browser's request stands for. In catalog pricing the item named by `label` sets
    the price (a browser amount that differs is refused), the metadata, the subscription period
    and, where it has them, the title, description and photo; in open pricing the request is
    taken as it is. A browser never sets metadata or a subscription: the edge does not read them
    from the body."""
    if mode is PricingMode.OPEN:
        return command
    if item is None:
        raise UnknownItem(f"no item {command.label!r} in this application's catalog")
    if command.amount not in (0, item.amount):  # 0: the browser left the price to us
        raise PriceMismatch(f"item {item.key!r} costs {item.amount} Stars, not {command.amount}")
    photo = item.photo_url is not None
    return PayCommand(
        tg_use_id=command.tg_use_id,
        amount=item.amount,
        label=item.key,
        title=item.title if item.title is not None else command.title,
        description=item.description if item.description is not None else command.description,
        payload=command.payload,
        photo_url=item.photo_url if photo else command.photo_url,
        photo_size=None if photo else command.photo_size,
        photo_width=None if photo else command.photo_width,
        photo_height=None if photo else command.photo_height,
        callback_url=command.callback_url,
        metadata=item.metadata,
        subscription_period=item.subscription_period,
    )


def _http_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute http(s) URL without user info, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def normalize_origin(origin: str) -> str:
    """An origin as browsers send it in `Origin` (`https://host[:port]`, lowercase, the default
    port left out), or ValueError when `origin` is not one (a path, a query, user info)."""
    if single_line_problem(origin) is not None or len(origin) > URL_MAX_CHARS:
        raise ValueError("not an origin")
    found = _http_origin(origin)
    parts = urlsplit(origin)
    if found is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be scheme://host[:port], e.g. https://game.example.com")
    scheme, host, port = found
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + ("" if port == _DEFAULT_PORTS[scheme] else f":{port}")


def normalize_callback_prefix(prefix: str) -> str:
    """A callback prefix: an absolute http(s) URL without query or fragment, whose path reads the
    same to every server (see `callback_allowed`)."""
    if single_line_problem(prefix) is not None or len(prefix) > URL_MAX_CHARS:
        raise ValueError("not a URL")
    parts = urlsplit(prefix)
    if _http_origin(prefix) is None or parts.query or parts.fragment:
        raise ValueError(
            "must be an absolute http(s) URL without query, e.g. https://api.example.com/hooks/"
        )
    if _canonical_path(parts.path) is None:
        raise ValueError(
            "the path must not hold dot segments, backslashes, encoded slashes or control "
            "characters"
        )
    return prefix


def _canonical_path(path: str) -> str | None:
    """The path of a URL as every server reads it, or None when servers may read it differently
    (so that it lies under no prefix).

    Decode, then check: the path is percent-decoded until it no longer changes (`%252e` is `%2e`
    is `.`; at most `_MAX_DECODINGS` rounds), and refused when the decoded path holds a backslash
    (a separator to some servers), a control character, a `/` that was percent-encoded (one
    segment to some servers, two to others) or a dot segment (`.` or `..`, also with path
    parameters as in `..;x`, which some servers resolve): any of those could walk out of a prefix
    once a server resolves it. Dot segments are refused, not resolved: a browser never needs them.
    """
    path = path or "/"
    decoded = path
    for _ in range(_MAX_DECODINGS):
        once = unquote(decoded, errors="replace")
        if once == decoded:
            break
        decoded = once
    else:
        return None  # still changing: encoded deeper than anything honest
    if (
        not decoded.startswith("/")
        or "\\" in decoded
        or single_line_problem(decoded) is not None
        or decoded.count("/") != path.count("/")
    ):
        return None
    if any(segment.split(";", 1)[0] in (".", "..") for segment in decoded.split("/")):
        return None
    return decoded


def callback_allowed(url: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """Whether `url` lies under one of the prefixes: the same scheme, host and port (the host's
    case and a default port do not matter; user info is never allowed), and a path that, decoded
    and checked by `_canonical_path`, continues the prefix's at a segment boundary (`/hooks`
    covers `/hooks` and `/hooks/x`, not `/hooksevil`; `https://a.example` never covers
    `https://a.example.evil.com`)."""
    if single_line_problem(url) is not None or len(url) > URL_MAX_CHARS:
        return False  # urlsplit would silently drop TAB, CR and LF
    target = _http_origin(url)
    if target is None:
        return False
    path = _canonical_path(urlsplit(url).path)
    if path is None:
        return False
    for prefix in prefixes:
        if _http_origin(prefix) != target:
            continue
        base = _canonical_path(urlsplit(prefix).path)
        if base is None:
            continue
        if path == base or path.startswith(base if base.endswith("/") else base + "/"):
            return True
    return False


@dataclass(frozen=True, slots=True)
class SeenUser:
    """A Telegram user as last verified, and when."""

    user: TelegramUser
    first_seen_at: datetime
    last_seen_at: datetime


def storable_user(user: TelegramUser) -> TelegramUser:
    """The verified user as it is stored: NUL and lone surrogates in its names, username,
    language and photo URL become U+FFFD (domain/text.py `storable_text`), the rest is kept.
    Telegram chose these, not the browser, and they are signed: refusing them would lock a real
    user out of the Mini App."""
    return replace(
        user,
        first_name=storable_text(user.first_name),
        last_name=_storable_or_none(user.last_name),
        username=_storable_or_none(user.username),
        language_code=_storable_or_none(user.language_code),
        photo_url=_storable_or_none(user.photo_url),
    )


def _storable_or_none(value: str | None) -> str | None:
    return None if value is None else storable_text(value)
