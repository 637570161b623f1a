"""structlog set-up, done once by the entrypoint, and the redaction of secrets from every line.

JSON lines when stderr is not a terminal, coloured console lines when it is. The stdlib loggers of
grpc, asyncpg and aiohttp go through the same processors (structlog's ProcessorFormatter), so
every line has one shape. The last processor before rendering redacts secrets from every value of
every line, whoever wrote it (our structlog loggers or a library's stdlib logger: the message, the
exception text, any key, nested dicts and lists); secrets must never reach the logs.

What is redacted:

- known secrets: values registered with `register_secret` (the payload secret, the applications'
  webhook and signing secrets), wherever they appear as a word, and also the start of one that a
  library truncated (a word of at least 8 characters that is a prefix of a registered secret, or
  starts with one);
- anything following a secret-bearing header name (`X-Telegram-Bot-Api-Secret-Token`,
  `X-Tg-InitData`, `Authorization`, `Portex-Signature`) and `key: value` / `key=value` up to the
  value's end, and the whole value of a dict key of that name or of a credential name
  (`webhook_secret`, `bot_token`, ...);
- Telegram Mini App init data (a query string with `hash=<64 hex>`, or with `auth_date=`,
  `query_id=`, `signature=` or `user=%7B` and an `&`), plain or URL-encoded;
- the request bytes aiohttp echoes when it refuses a request line or header that is too long or
  malformed (`Got more than 8190 bytes when reading: b'...'`, `Invalid HTTP header: b'...'`): the
  start of an over-long header value may be any header's secret, and the header's name is not part
  of the message;
- bot tokens, our API keys (`ppk_...`) and `Bearer` credentials, by their shape.

Cost: a handful of compiled regular expressions per string, and for the registry one dictionary
lookup per word of 8 or more characters, however many secrets are registered.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

# Registered secrets shorter than this are ignored: they would redact ordinary words.
MIN_SECRET_CHARS = 8

# Bot tokens are "<bot id>:<35 base64url chars>"; our API keys start with "ppk_"; Telegram URLs
# carry the token after "/bot".
_BOT_TOKEN = re.compile(r"\d{3,}:[A-Za-z0-9_-]{30,}")
_BOT_TOKEN_TAIL = re.compile(r":[A-Za-z0-9_-]{30}")
_API_KEY = re.compile(r"ppk_[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")

_SECRET_HEADER_NAMES = (
    "x-telegram-bot-api-secret-token",
    "x-tg-initdata",
    "authorization",
    "portex-signature",
)
# A header (or key) that carries a secret, its separator (`: `, `=`, `': '`, or `', '` as in a
# tuple), then the value: quoted (up to the closing quote), or unquoted (up to a delimiter; a
# comma not followed by a space and one inner space are part of it, for `t=...,v1=...` and
# `Authorization: <scheme> <credentials>`).
_SECRET_HEADER = re.compile(
    r"""(?ix)
    (?P<name>x-telegram-bot-api-secret-token|x-tg-initdata|authorization|portex-signature)
    (?P<sep>['"]?[ \t]*[:=][ \t]*(?:b(?=['"]))?|['"][ \t]*,[ \t]*(?:b(?=['"]))?)
    (?:
        '(?:\\.|[^'\\\r\n])*'?
      | "(?:\\.|[^"\\\r\n])*"?
      | (?:[^\s'"<>()\[\]{},;&]|,(?!\s))+(?:[ \t]+(?:[^\s'"<>()\[\]{},;&]|,(?!\s))+)?
    )
    """
)

# Mini App init data: a run of query-string characters holding one of the marks. A run starts
# only after a break character (the lookbehind), so the scan stays linear.
_INIT_DATA = re.compile(
    r"""(?ix)
    (?<![^\s'"<>()\[\]{}\\])
    [^\s'"<>()\[\]{}\\]*?
    (?:(?<![A-Za-z0-9_])|(?<=%26)|(?<=%3F))
    (?P<mark>
        hash(?:=|%3D)[0-9a-f]{64}(?![0-9a-f])
      | (?:auth_date|query_id|signature)(?:=|%3D)
      | user(?:=|%3D)(?:%7B|\{)
    )
    [^\s'"<>()\[\]{}\\]*
    """
)

_INIT_DATA_MARKS = (
    "hash=",
    "hash%3d",
    "auth_date",
    "query_id",
    "signature",
    "user=%7b",
    "user%3d%7b",
    "user={",
)

# aiohttp's parser errors quote the refused request bytes (the first 100 of an over-long value).
_LIBRARY_ECHO = re.compile(
    r"""(?P<lead>when\ reading:\ |Invalid\ HTTP\ header:\ )
    (?:b?'(?:\\.|[^'\\\r\n])*'?|b?"(?:\\.|[^"\\\r\n])*"?)""",
    re.VERBOSE,
)

# Words that are candidates for the registry lookup.
_WORD = re.compile(rf"[A-Za-z0-9_-]{{{MIN_SECRET_CHARS},}}")
_WORD_CHARS = re.compile(r"[A-Za-z0-9_-]*")

# Dict keys (any level, `-` and `_` alike, any case) whose values are secrets as a whole.
_SECRET_KEYS = frozenset(
    {
        "x_telegram_bot_api_secret_token",
        "x_tg_initdata",
        "authorization",
        "portex_signature",
        "secret_token",
        "webhook_secret",
        "signing_secret",
        "payload_secret",
        "bot_token",
        "api_key",
        "init_data",
        "initdata",
        "password",
    }
)

# Keys our own processors fill in: nothing secret, not worth scanning.
_OWN_KEYS = frozenset({"timestamp", "level", "logger"})
_MAX_DEPTH = 8


class _SecretRegistry:
    """Known secret values, looked up by their first characters.

    A secret is filed under the first MIN_SECRET_CHARS characters of its leading word (its longest
    prefix of base64url characters). A line's words of at least that length are looked up by
    their own first characters: a hit that is a prefix of the word (the secret, maybe with more
    after it) or that the word is a prefix of (a truncated secret) redacts the word. Secrets with
    other characters are also searched for whole. Writes take a lock; reads see immutable tuples.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._by_start: dict[str, tuple[str, ...]] = {}
        self._irregular: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._known)

    def add(self, secret: str) -> bool:
        if len(secret) < MIN_SECRET_CHARS:
            return False
        if secret in self._known:
            return True
        with self._lock:
            if secret in self._known:
                return True
            match = _WORD_CHARS.match(secret)
            lead = match.group() if match else ""
            if len(lead) >= MIN_SECRET_CHARS:
                start = lead[:MIN_SECRET_CHARS]
                if lead not in self._by_start.get(start, ()):
                    self._by_start[start] = (*self._by_start.get(start, ()), lead)
            if lead != secret:
                self._irregular = (*self._irregular, secret)
            self._known.add(secret)
        return True

    def redact(self, text: str) -> str:
        for secret in self._irregular:
            if secret in text:
                text = text.replace(secret, REDACTED)
        by_start = self._by_start
        if not by_start:
            return text
        spans: list[tuple[int, int]] = []
        for match in _WORD.finditer(text):
            word = match.group()
            for lead in by_start.get(word[:MIN_SECRET_CHARS], ()):
                if word.startswith(lead) or lead.startswith(word):
                    spans.append(match.span())
                    break
        if not spans:
            return text
        parts: list[str] = []
        last = 0
        for start, end in spans:
            parts.append(text[last:start])
            parts.append(REDACTED)
            last = end
        parts.append(text[last:])
        return "".join(parts)


_registry = _SecretRegistry()


def register_secret(value: str | bytes | None) -> bool:
    """Adds a secret value to redact from every log line, in this process, from now on.

    Values shorter than MIN_SECRET_CHARS are ignored (they would redact ordinary words); returns
    whether the value is registered. Safe to call repeatedly and from any thread; cheap when the
    value is known already.
    """
    if value is None:
        return False
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    return _registry.add(value)


def register_secrets(values: Iterable[str | bytes | None]) -> None:
    """register_secret for each value."""
    for value in values:
        register_secret(value)


def _init_data(match: re.Match[str]) -> str:
    text = match.group()
    mark = match.group("mark").lower()
    if mark.startswith("hash") or "&" in text or "%26" in text.lower():
        return REDACTED
    return text


def redact(text: str) -> str:
    """The text with every secret it carries replaced by `[REDACTED]`."""
    if _registry:
        text = _registry.redact(text)
    # Each pattern runs only when a cheap substring test says it may match: most lines carry no
    # secret, and this runs on every line.
    low = text.lower()
    if "when reading: " in text or "Invalid HTTP header: " in text:
        text = _LIBRARY_ECHO.sub(lambda m: m.group("lead") + REDACTED, text)
    if any(name in low for name in _SECRET_HEADER_NAMES):
        text = _SECRET_HEADER.sub(lambda m: m.group("name") + m.group("sep") + REDACTED, text)
    if any(mark in low for mark in _INIT_DATA_MARKS):
        text = _INIT_DATA.sub(_init_data, text)
    if _BOT_TOKEN_TAIL.search(text):
        text = _BOT_TOKEN.sub(REDACTED, text)
    if "ppk_" in text:
        text = _API_KEY.sub(REDACTED, text)
    if "bearer" in low:
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in _SECRET_KEYS


def _redact_value(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if depth >= _MAX_DEPTH:
        return redact(repr(value))
    if isinstance(value, Mapping):
        return {
            _redact_value(key, depth + 1): (
                REDACTED if _is_secret_key(key) and value[key] is not None
                else _redact_value(value[key], depth + 1)
            )
            for key in value
        }  # fmt: skip
    if isinstance(value, list | tuple):
        return [_redact_value(item, depth + 1) for item in value]
    # Anything else is rendered by its repr (as the JSON renderer would): redact that.
    return redact(repr(value))


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor: redacts every value of the event, at any depth."""
    for key, value in event_dict.items():
        if key in _OWN_KEYS:
            continue
        if _is_secret_key(key) and value is not None:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(value)
    return event_dict


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Configures structlog and routes the stdlib loggers through it."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            *shared[1:],
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # Redaction is the last step before rendering, for structlog's lines and foreign ones alike:
    # nothing added on the way can slip past it.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_event,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library loggers are chatty at debug level; keep them at warning unless asked for debug.
    for name in ("grpc", "asyncpg", "aiohttp", "aiohttp.access"):
        logging.getLogger(name).setLevel(level.upper() if level == "debug" else "WARNING")
