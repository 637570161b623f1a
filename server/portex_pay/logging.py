"""structlog set-up, done once by the entrypoint, and the redaction of secrets from every line.

JSON lines when stderr is not a terminal, coloured console lines when it is. The stdlib loggers of
grpc, asyncpg and aiohttp go through the same processors (structlog's ProcessorFormatter), so
every line has one shape. The last processor before rendering redacts secrets from every value of
every line, whoever wrote it (our structlog loggers or a library's stdlib logger: the message, the
exception text, any key, nested dicts and lists); secrets must never reach the logs.

What is redacted:

- known secrets: values registered with `register_secret` (the payload secret, the applications'
  webhook and signing secrets and bot tokens): any run of at least 8 characters of a line that is
  the start of a registered secret, wherever it is (inside a longer word too), so the whole secret
  and also the start of one that a library truncated;
- the value after a secret-bearing name (the headers `X-Telegram-Bot-Api-Secret-Token`,
  `X-Tg-InitData`, `Authorization`, `Portex-Signature` and credential names such as
  `webhook_secret` or `secret_token`; `-`, `_` or nothing between the parts, any case) written as
  `name: value`, `name=value`, `'name': 'value'` or `('name', 'value')`, and the whole value of a
  dict key of such a name;
- Telegram Mini App init data (a query string with `hash=<64 hex>`, or with `auth_date=`,
  `query_id=`, `signature=` or `user=%7B` and an `&`), plain or URL-encoded;
- the request bytes aiohttp echoes when it refuses a request line or header that is too long or
  malformed (`Got more than 8190 bytes when reading: b'...'`, `Invalid HTTP header: b'...'`,
  llhttp's `<reason>:\\n\\n  b'...'`): the start of an over-long header value may be any header's
  secret, and the header's name is not part of the message;
- bot tokens, our API keys (`ppk_...`) and `Bearer` credentials, by their shape.

Every regular expression here runs in time linear in the line (no nested or overlapping
repetition, value runs are possessive), and each runs only when a substring test says it may
match. The registry costs a `str.find` per secret while there are few, then one dictionary lookup
per position inside the line's words of 8 or more characters, however many secrets there are.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

# Registered secrets shorter than this are ignored, and shorter runs of a secret are not looked
# for: they would redact ordinary words.
MIN_SECRET_CHARS = 8

# Bot tokens are "<bot id>:<35 base64url chars>" (the tail is the cheap test); our API keys start
# with "ppk_". The lookbehind anchors a token at the start of its digits: without it a long run
# of digits is quadratic.
_BOT_TOKEN = re.compile(r"(?<![0-9])[0-9]{3,20}:[A-Za-z0-9_-]{30,}")
_BOT_TOKEN_TAIL = re.compile(r":[A-Za-z0-9_-]{30}")
_API_KEY = re.compile(r"ppk_[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")

# Names whose value is a secret: headers that carry one, and credential field names. Written with
# "_" between the parts; in a line the parts may be joined by "-", "_" or nothing, in any case.
_SECRET_NAMES = (
    "x_telegram_bot_api_secret_token",
    "x_tg_init_data",
    "tg_web_app_data",
    "init_data",
    "authorization",
    "portex_signature",
    "secret_token",
    "webhook_secret",
    "signing_secret",
    "payload_secrets_retired",
    "payload_secret",
    "data_keys_retired",
    "data_key",
    "bot_token",
    "api_key",
    "password",
)
# Dict keys are compared, and lines tested for a name at all, lower-cased without "-" and "_"
# (one regular expression search: a loop of substring tests costs more on every line).
_SECRET_KEYS = frozenset(name.replace("_", "") for name in _SECRET_NAMES)
_ANY_SECRET_KEY = re.compile("|".join(sorted(_SECRET_KEYS)))

# A secret-bearing name, its separator (`: `, `=`, `': '`, or `', '` as in a tuple, then `b` before
# a bytes literal), then the value: quoted (up to the closing quote), or unquoted (up to a
# delimiter; a comma not followed by a space is part of it, for `t=...,v1=...`, and after
# `Authorization` so is one more word, for `<scheme> <credentials>`).
_NAME = "|".join(
    "(?P<auth>authorization)" if name == "authorization" else "[-_]?".join(name.split("_"))
    for name in _SECRET_NAMES
)
_UNQUOTED = r"(?:[^\s'\"<>()\[\]{},;&]|,(?!\s))++"
_SECRET_NAMED = re.compile(
    rf"""(?ix)
    (?P<name>{_NAME})
    (?P<sep>['"]?[ \t]*[:=][ \t]*(?:b(?=['"]))?|['"][ \t]*,[ \t]*(?:b(?=['"]))?)
    (?:
        '(?:\\.|[^'\\\r\n])*+'?
      | "(?:\\.|[^"\\\r\n])*+"?
      | {_UNQUOTED}(?(auth)(?:[ \t]+{_UNQUOTED})?)
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
    [^\s'"<>()\[\]{}\\]*+
    """
)
# The marks as the lower-cased line must hold them for the pattern to run at all.
_INIT_DATA_HINTS = re.compile(
    r"(?:hash|auth_date|query_id|signature)(?:=|%3d)|user(?:=|%3d)(?:%7b|\{)"
)

# aiohttp's parser errors quote the refused request bytes: the first 100 of an over-long line or
# value, a malformed header, or (llhttp) the whole line around the offending byte.
_LIBRARY_ECHO = re.compile(
    r"""(?P<lead>when\ reading:\ |Invalid\ HTTP\ header:\ |:\n\n[ ]+)
    (?:b?'(?:\\.|[^'\\\r\n])*+'?|b?"(?:\\.|[^"\\\r\n])*+"?)""",
    re.VERBOSE,
)

# Runs of base64url characters long enough to hold the start of a registered secret.
_WORD = re.compile(rf"[A-Za-z0-9_-]{{{MIN_SECRET_CHARS},}}")
_WORD_ONLY = re.compile(r"[A-Za-z0-9_-]+")

# Up to this many registered secrets, a line is searched for each (`str.find`, fast in C); beyond,
# it is scanned once, position by position, whatever the number of secrets.
_FEW_SECRETS = 64

# Keys our own processors fill in: nothing secret, not worth scanning.
_OWN_KEYS = frozenset({"timestamp", "level", "logger"})
_MAX_DEPTH = 8


def _matching(text: str, at: int, secret: str) -> int:
    """How many characters of `text` from `at` on are the start of `secret`."""
    if text.startswith(secret, at):
        return len(secret)
    count, limit = 0, min(len(secret), len(text) - at)
    while count < limit and text[at + count] == secret[count]:
        count += 1
    return count


def _find(text: str, secret: str, spans: list[tuple[int, int]]) -> None:
    """Adds the spans of `text` that are the start (MIN_SECRET_CHARS or more) of `secret`."""
    start = secret[:MIN_SECRET_CHARS]
    at = text.find(start)
    while at >= 0:
        end = at + _matching(text, at, secret)
        spans.append((at, end))
        at = text.find(start, end)


class _SecretRegistry:
    """Known secret values. A hit is redacted as far as the line goes on matching the secret: the
    whole secret, or the start of a truncated one.

    Up to _FEW_SECRETS, a line is searched for the first MIN_SECRET_CHARS characters of each.
    Beyond, secrets are filed under those characters and the line is scanned at every position
    inside its words (runs of base64url characters) of at least that length: one dictionary lookup
    per position, however many secrets there are (the rare secret that does not start with
    base64url characters is still searched for). Writes take a lock; readers see a dict that only
    grows, and tuples.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._few: tuple[str, ...] | None = ()
        self._by_start: dict[str, tuple[str, ...]] = {}
        self._irregular: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._known)

    def knows(self, secret: str) -> bool:
        return secret in self._known

    def add(self, secret: str) -> bool:
        if len(secret) < MIN_SECRET_CHARS:
            return False
        if secret in self._known:
            return True
        with self._lock:
            if secret not in self._known:
                start = secret[:MIN_SECRET_CHARS]
                if _WORD_ONLY.fullmatch(start):
                    self._by_start[start] = (*self._by_start.get(start, ()), secret)
                else:
                    self._irregular = (*self._irregular, secret)
                self._known.add(secret)
                few = self._few
                self._few = None if few is None or len(few) >= _FEW_SECRETS else (*few, secret)
        return True

    def _spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        few = self._few
        if few is not None:
            for secret in few:
                _find(text, secret, spans)
            return spans
        by_start = self._by_start
        for word in _WORD.finditer(text):
            at, last = word.start(), word.end() - MIN_SECRET_CHARS
            while at <= last:
                candidates = by_start.get(text[at : at + MIN_SECRET_CHARS])
                if candidates is None:
                    at += 1
                    continue
                end = at + max(_matching(text, at, secret) for secret in candidates)
                spans.append((at, end))
                at = end
        for secret in self._irregular:
            _find(text, secret, spans)
        return spans

    def redact(self, text: str) -> str:
        spans = self._spans(text)
        if not spans:
            return text
        spans.sort()
        parts: list[str] = []
        last = 0
        for start, end in spans:
            if end <= last:
                continue
            if start >= last:
                parts.append(text[last:start])
                parts.append(REDACTED)
            last = end  # an overlapping span extends the redaction already written
        parts.append(text[last:])
        return "".join(parts)


_registry = _SecretRegistry()


def register_secret(value: str | bytes | None) -> bool:
    """Adds a secret value to redact from every log line, in this process, from now on.

    Values shorter than MIN_SECRET_CHARS are ignored (they would redact ordinary words); returns
    whether the value is registered. Safe to call repeatedly and from any thread; cheap when the
    value is known already. Register only what is secret: a registered value's first 8 characters
    are redacted wherever they appear (register a bot token's part after the colon, not its bot
    id).
    """
    if value is None:
        return False
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    known = _registry.knows(value)
    added = _registry.add(value)
    if added and not known:
        _clean.forget()  # a value found clean before may hold this secret
    return added


def register_secrets(values: Iterable[str | bytes | None]) -> None:
    """register_secret for each value."""
    for value in values:
        register_secret(value)


def _init_data(match: re.Match[str]) -> str:
    text = match.group()
    if match.group("mark").lower().startswith("hash") or "&" in text or "%26" in text.lower():
        return REDACTED
    return text


class _CleanValues:
    """Short values found to carry no secret, so that the values every line repeats (an RPC's
    method, a peer, an application id) are scanned once, not on every line. Forgotten whenever
    a secret is registered: a value clean before may carry the new one. A scan that a
    registration crossed is not remembered (the generation changed under it). Bounded: when
    full, it starts over."""

    MAX_CHARS = 200
    MAX_VALUES = 4096

    def __init__(self) -> None:
        self._values: set[str] = set()
        self.generation = 0

    def __contains__(self, text: str) -> bool:
        return text in self._values

    def remember(self, text: str, generation: int) -> None:
        if len(text) > self.MAX_CHARS or generation != self.generation:
            return
        if len(self._values) >= self.MAX_VALUES:
            self._values = set()
        self._values.add(text)

    def forget(self) -> None:
        self.generation += 1
        self._values = set()


_clean = _CleanValues()


def redact(text: str) -> str:
    """The text with every secret it carries replaced by `[REDACTED]`."""
    if len(text) < MIN_SECRET_CHARS:  # nothing redactable is shorter (`bearer x`, `apikey=x`)
        return text
    if text in _clean:
        return text
    generation = _clean.generation
    redacted = _redact(text)
    if redacted == text:
        _clean.remember(text, generation)
    return redacted


def _redact(text: str) -> str:
    if _registry:
        text = _registry.redact(text)
    # Each pattern runs only when a cheap substring test says it may match: most lines carry no
    # secret, and this runs on every line. (`low` may be stale after a substitution: it then only
    # lets a pattern run for nothing.)
    low = text.lower()
    if "when reading: " in text or "Invalid HTTP header: " in text or ":\n\n " in text:
        text = _LIBRARY_ECHO.sub(lambda m: m.group("lead") + REDACTED, text)
    compact = low.replace("-", "").replace("_", "")
    if _ANY_SECRET_KEY.search(compact):
        text = _SECRET_NAMED.sub(lambda m: m.group("name") + m.group("sep") + REDACTED, text)
    if _INIT_DATA_HINTS.search(low):
        text = _INIT_DATA.sub(_init_data, text)
    if _BOT_TOKEN_TAIL.search(text):
        text = _BOT_TOKEN.sub(REDACTED, text)
    if "ppk_" in text:
        text = _API_KEY.sub(REDACTED, text)
    if "bearer" in low:
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return text


@functools.lru_cache(maxsize=1024)  # a line's keys are few names, the same on every line
def _is_secret_name(key: str) -> bool:
    return key.lower().replace("-", "").replace("_", "") in _SECRET_KEYS


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _is_secret_name(key)


def _redacted_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not cost the line
        return f"<{type(value).__name__} object>"
    return redact(text)


def _redact_key(key: object) -> object:
    if key is None or isinstance(key, str | bool | int | float):
        return redact(key) if isinstance(key, str) else key
    return _redacted_repr(key)  # a hashable stand-in for a tuple (or other) key


def _redact_value(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if depth >= _MAX_DEPTH:
        return _redacted_repr(value)
    if isinstance(value, Mapping):
        return {
            _redact_key(key): (
                REDACTED if _is_secret_key(key) and item is not None
                else _redact_value(item, depth + 1)
            )
            for key, item in value.items()
        }  # fmt: skip
    if isinstance(value, list | tuple):
        return [_redact_value(item, depth + 1) for item in value]
    # Anything else is rendered by its repr (as the JSON renderer would): redact that.
    return _redacted_repr(value)


class OwnText(str):
    """Text wholly of our own making from parts that never carry a secret (an id we generated, a
    method name we serve, a status code's name, an application's id): redaction passes it by.
    A unique generated id would otherwise be scanned in full on every line (and crowd the clean
    values out). Never for anything that may hold input from outside: that stays a plain str."""

    __slots__ = ()


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor: redacts every value of the event, at any depth. Never raises."""
    for key, value in event_dict.items():
        if key in _OWN_KEYS and type(value) is str:  # our processors' own; anything else is not
            continue
        if _is_secret_key(key) and value is not None:
            event_dict[key] = REDACTED
            continue
        # The common values first, without a call each (this runs for every value of every
        # line): our own text, short or already-clean strings, numbers.
        kind = type(value)
        if kind is OwnText or value is None or kind is int or kind is float or kind is bool:
            continue
        if kind is str and (len(value) < MIN_SECRET_CHARS or value in _clean):
            continue
        try:
            event_dict[key] = _redact_value(value)
        except Exception:  # an odd value (a Mapping that fails to iterate): keep the line, not it
            event_dict[key] = REDACTED
    return event_dict


class _Handler(logging.StreamHandler[Any]):
    """stderr, and a line that fails to format is reported without its content: logging's own
    handleError prints the record's raw message and arguments, unredacted."""

    def emit(self, record: logging.LogRecord) -> None:
        if _output is not None and _output.handler is self:
            _output.flush()  # our lines logged before this one come first
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.dropped(record.name, record.levelname)

    def dropped(self, name: str, level: str) -> None:
        error = sys.exc_info()[1]
        try:
            self.stream.write(
                f"logging error: {type(error).__name__} formatting a line of {name!r}"
                f" (level {level}); the line is dropped\n"
            )
            self.flush()
        except Exception:  # noqa: S110 - nowhere left to report it
            pass


class _Output:
    """Where our own info and debug lines go: the root handler's stream, through the same last
    steps as the handler's formatter (redaction, then the renderer).

    Lines logged on an event loop are written together once the loop's current pass is over
    (one write and one flush for all the RPCs it finished, not a system call each); anywhere
    else at once. Anything the stdlib handler writes (a warning, an error) first flushes what is
    pending, so lines keep their order; so does the process's exit."""

    def __init__(self, handler: _Handler, processors: list[Any]) -> None:
        self.handler = handler
        self.processors = processors
        self._pending: list[str] = []
        # The loop a flush is queued on, if any: a loop closed before running it (stopped by
        # hand) must not leave later lines waiting for a flush that never comes.
        self._scheduled: asyncio.AbstractEventLoop | None = None

    def write(self, name: str, level: str, event_dict: MutableMapping[str, Any]) -> None:
        try:
            rendered: Any = dict(event_dict)
            for processor in self.processors:
                rendered = processor(None, level, rendered)
        except Exception:
            self.handler.dropped(name, level.upper())
            return
        with self.handler.lock or contextlib.nullcontext():
            self._pending.append(rendered)
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: at once
                loop = None
            queued = self._scheduled
            if loop is not None and queued is loop:
                return  # this pass's flush is already queued
            if loop is not None and queued is not None and queued.is_running():
                return  # another running loop's pass writes it soon
            self._scheduled = loop
        if loop is None:
            self.flush()
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        handler = self.handler
        with handler.lock or contextlib.nullcontext():
            self._scheduled = None
            if not self._pending:
                return
            lines, self._pending = self._pending, []
            try:
                handler.stream.write("\n".join(lines) + "\n")
                handler.flush()
            except Exception:
                handler.dropped("portex_pay", "INFO")


_output: _Output | None = None


@atexit.register
def flush_logs() -> None:
    """Writes the lines still pending (our info lines wait for the end of the event loop's
    pass): at exit, and for whoever reads the output at once."""
    if _output is not None:
        _output.flush()


# One encoder for every line: json.dumps builds a new one per call when given `default`, as
# structlog's JSONRenderer always does. Redaction has already made every value JSON's own (a
# str, number, bool, None, list or dict), so `default` is a last resort.
_ENCODER = json.JSONEncoder(default=repr)


def _json_line(value: Any, **_kwargs: Any) -> str:
    return _ENCODER.encode(value)


class _DirectLogger:
    """The logger behind our structlog loggers. An info or debug line (the per-RPC line and the
    like: the hot path) is rendered and written at once, skipping the stdlib's LogRecord, the
    handler chain and the formatter's copy of the record: the same line, about half the cost.
    Warnings and above go through the stdlib logger, so its handlers (and pytest's caplog,
    which tests read for errors) see every line that matters to an operator. Levels are the
    stdlib logger's, read at each call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stdlib = logging.getLogger(name)

    def isEnabledFor(self, level: int) -> bool:
        return self._stdlib.isEnabledFor(level)

    def getEffectiveLevel(self) -> int:
        return self._stdlib.getEffectiveLevel()

    def _direct(self, level: str, event: Any, **kwargs: Any) -> None:
        if _output is None or not isinstance(event, MutableMapping):
            getattr(self._stdlib, level)(event, **kwargs)
        else:
            _output.write(self.name, level, event)

    def debug(self, event: Any, *_args: Any, **kwargs: Any) -> None:
        self._direct("debug", event, **kwargs)

    def info(self, event: Any, *_args: Any, **kwargs: Any) -> None:
        self._direct("info", event, **kwargs)

    def __getattr__(self, name: str) -> Any:  # warning, error, critical, exception, log, ...
        return getattr(self._stdlib, name)


def _direct_logger_factory(*args: Any) -> _DirectLogger:
    """structlog's logger factory: the stdlib's naming (the calling module when none is given)."""
    return _DirectLogger(structlog.stdlib.LoggerFactory()(*args).name)


# structlog's method names and the stdlib level each logs at.
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _LevelGatedLogger(structlog.stdlib.BoundLogger):
    """A stdlib BoundLogger that drops a line of a disabled level before anything is done for it.

    structlog's `filter_by_level` is a processor: by the time it drops a line, the context has been
    copied and merged and the line's dict built. Asking the stdlib logger first (its answer is
    cached per level) makes a disabled line nearly free, so `debug` lines and the per-RPC line at
    `warning` cost nothing. The stdlib logger's level is read at each call, not fixed when the
    logger is made (as `make_filtering_bound_logger` would): a level set later, or per library
    logger, still applies.
    """

    def _proxy_to_logger(
        self, method_name: str, event: str | None = None, *event_args: str, **event_kw: Any
    ) -> Any:
        level = _METHOD_LEVELS.get(method_name)
        if level is not None and not self._logger.isEnabledFor(level):
            return None
        return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)


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
        structlog.processors.JSONRenderer(serializer=_json_line)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=_direct_logger_factory,
        wrapper_class=_LevelGatedLogger,
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
    # The logging HOWTO's "Optimization": no line renders the caller's file and line, the
    # thread or the process, so no record computes them (a stack walk and three calls a line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _Handler(sys.stderr)
    handler.setFormatter(formatter)
    global _output
    if _output is not None:
        _output.flush()
    _output = _Output(handler, [redact_event, renderer])
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library loggers are chatty at debug level; keep them at warning unless asked for debug.
    for name in ("grpc", "asyncpg", "aiohttp", "aiohttp.access"):
        logging.getLogger(name).setLevel(level.upper() if level == "debug" else "WARNING")


class RateLimitedWarnings:
    """Warnings about input from outside (a malformed request, a broken update): at most one line
    per key (a client's address, a bot) and interval, carrying how many were held back since.

    Input from outside is never an ERROR (operators alert on those: they mean our fault), and a
    client sending garbage in a loop must not flood the logs. Memory is bounded: at most
    `max_keys` keys are remembered, the least recently warned about forgotten first."""

    def __init__(
        self,
        logger: Any,
        *,
        interval: float = 60.0,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._last: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def warn(self, key: Hashable, event: str, **fields: Any) -> bool:
        """Logs `event` unless `key` was warned about less than an interval ago; True if logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._interval:
            self._last[key] = (last[0], last[1] + 1)
            return False
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > self._max_keys:
            self._last.popitem(last=False)
        self._log.warning(event, suppressed=last[1] if last is not None else 0, **fields)
        return True
