"""What every HTTP request meets before a handler trusts it: a bound on the time to read it, and
aiohttp's own refusals logged as what they are, the client's doing.

- **Headers** must be complete within the read timeout of the connection's start or of the end
  of its previous request: aiohttp's keep-alive timer closes a connection whose handler is still
  waiting for a request by then, whether it sent nothing or half a request line.
- **The body** must arrive within the read timeout of the handler's start, plus one second for
  every `BODY_MIN_RATE` bytes received (Apache's mod_reqtimeout rule): a 50 MB upload passes, a
  body shorter than its Content-Length or one trickled a byte at a time does not. A late body is
  answered 408 (in the SDK's envelope under `/v1/`) and the connection closed. Once the body is
  complete the handler has no deadline from here (a long poll may wait).
- **Refusals** of a malformed or over-long request line or header, and a body that breaks its
  own framing (chunked or Content-Length) or encoding, are 400 and a warning rate-limited per
  client address, never an ERROR: operators alert on errors, and anyone can send garbage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from portex_pay.logging import RateLimitedWarnings

log = structlog.get_logger(__name__)

BODY_MIN_RATE = 8 * 1024  # bytes a second a body must keep arriving at, past the read timeout
_LINGERING = 2.0  # seconds aiohttp reads on after answering a request whose body it left unread

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientWarnings:
    """One rate-limited warning log for everything the HTTP door refuses from clients."""

    def __init__(self) -> None:
        self._warnings = RateLimitedWarnings(log)

    def warn(self, remote: str | None, event: str, **fields: Any) -> None:
        self._warnings.warn(remote, event, peer=remote, **fields)


class _ServerLog:
    """aiohttp's server logger (the `logger` of its request handler). aiohttp reports a request it
    refused before any handler ran (HttpProcessingError: a malformed request line, header or
    framing, one too long), and a broken body it read after the answer, with `exception()`, at
    ERROR with its traceback: those become a rate-limited warning naming the error's type.
    Anything else (a handler that raised) stays an error: that is our fault."""

    def __init__(self, warnings: ClientWarnings) -> None:
        self._logger = logging.getLogger("aiohttp.server")
        self._warnings = warnings

    def exception(self, message: str, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        # RequestPayloadError: aiohttp read on after an answer (lingering) into a broken body.
        if isinstance(exc_info, HttpProcessingError | web.RequestPayloadError):
            remote = args[0] if args and isinstance(args[0], str) else None
            self._warnings.warn(remote, "malformed request refused", error=type(exc_info).__name__)
            return
        self._logger.exception(message, *args, exc_info=exc_info, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


def runner_options(read_timeout: float, warnings: ClientWarnings) -> dict[str, Any]:
    """The AppRunner options of the HTTP door (passed on to aiohttp's request handler)."""
    return {
        "access_log": None,  # paths carry bot tokens: never logged
        "keepalive_timeout": read_timeout,
        "lingering_time": _LINGERING,
        "logger": _ServerLog(warnings),
    }


def bounded_reads(read_timeout: float, warnings: ClientWarnings) -> Any:
    """The middleware that bounds the time to read a request's body (see the module's text) and
    answers 400 for a body that breaks its framing."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        content = request.content
        if content.is_eof():
            # The whole body is in already (a small one comes with its headers): nothing to time.
            try:
                return await handler(request)
            except web.RequestPayloadError as error:
                raise malformed(request, error) from None
        loop = asyncio.get_running_loop()
        started = loop.time()
        check: asyncio.TimerHandle | None = None
        late = False

        try:
            async with asyncio.timeout(None) as deadline:

                def look() -> None:
                    nonlocal check, late
                    if content.is_eof():
                        check = None
                        return
                    due = started + read_timeout + content.total_bytes / BODY_MIN_RATE
                    if due <= loop.time():
                        late = True
                        check = None
                        deadline.reschedule(loop.time())  # cancels the handler's read
                    else:
                        check = loop.call_at(due, look)

                check = loop.call_at(started + read_timeout, look)
                try:
                    return await handler(request)
                finally:
                    if check is not None:
                        check.cancel()
        except TimeoutError:
            if not late:
                raise
            warnings.warn(
                request.remote,
                "request body too slow",
                received=content.total_bytes,
                seconds=round(loop.time() - started, 1),
            )
            # aiohttp closes the connection after the answer: the body was left unread.
            raise web.HTTPRequestTimeout(text="the request body came too slowly") from None
        except web.RequestPayloadError as error:
            raise malformed(request, error) from None

    def malformed(request: web.Request, error: web.RequestPayloadError) -> web.HTTPBadRequest:
        warnings.warn(request.remote, "malformed request body", error=str(error)[:100])
        return web.HTTPBadRequest(text="the request body is malformed")

    return middleware
