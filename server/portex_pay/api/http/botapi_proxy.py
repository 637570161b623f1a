"""The Bot API proxy: `{PORTEX_HTTP_ADDR}/bot{token}/{method}` and `/file/bot{token}/{path}`, the
URL shape of Telegram's, so the application's own bot code needs one setting (aiogram's
`TelegramAPIServer`, python-telegram-bot's `base_url`, grammY's and Telegraf's `apiRoot`).

- The path is percent-decoded once and checked as decoded, and what is sent on is built from the
  checked parts: `/bot{token}/{method}` with one method name (`[A-Za-z][A-Za-z0-9_]*`, or
  `test/` and one, Telegram's test environment), `/file/bot{token}/{path}` with a file path of
  plain segments (`[A-Za-z0-9_.-]`, none of them `.` or `..`). Anything else (`..`, `%2F`,
  `%2E%2E`, backslashes, a `%` left after decoding, NUL, a second token) is 404 as Telegram
  answers an unknown method, and nothing reaches Telegram: the proxy calls Telegram only as the
  calling bot, only at a method path.
- The bot's own token authenticates it (service/auth.py, BotTokenAuthenticator); anything else is
  401 as Telegram answers it. The token is in the path, so no log line here carries the path or a
  URL.
- getUpdates, setWebhook, deleteWebhook and getWebhookInfo are served by portex-pay per bot
  (service/relay.py): portex-pay is the bot's only consumer at Telegram.
- Every other method, and file downloads, go to Telegram as they are (method, query, body and
  its Content-Type, streamed both ways: uploads and downloads are never buffered whole) and
  Telegram's answer comes back as it is, status included (the Telegram port's `forward`,
  service/ports.py BotApiForwarder); 502 when Telegram does not answer.
- Bad input to the four is Telegram's 400 with a description (413 for a body over 1 MiB), never a
  5xx: a bot library retries a 5xx forever. The relay's refusals are domain errors
  (domain/relay.py), given Telegram's status codes here. The only 5xx of the four is 503 while
  the database is unavailable (service/outage.py), which a retry is right for.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import unquote

import aiohttp
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from portex_pay.domain.application import Application
from portex_pay.domain.errors import Unauthenticated
from portex_pay.domain.relay import RelayBadRequest, RelayConflict, RelayError, RelayTooLarge
from portex_pay.domain.telegram import (
    ForwardRefused,
    ForwardRequest,
    TelegramNetworkError,
    bot_id_of_token,
)
from portex_pay.logging import register_secret
from portex_pay.service.auth import BotTokenAuthenticator
from portex_pay.service.outage import is_unavailable
from portex_pay.service.ports import BotApiForwarder
from portex_pay.service.relay import RelayService

log = structlog.get_logger(__name__)

MAX_PARAMS_BYTES = 1024 * 1024  # the bodies of the update methods, which are read here
_CHUNK = 64 * 1024
# Request headers that describe the body; nothing else (cookies, auth, hop-by-hop) is passed on.
_REQUEST_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding")
_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Encoding",
    "Content-Disposition",
    "Retry-After",
)
_OWN_METHODS = frozenset({"getupdates", "setwebhook", "deletewebhook", "getwebhookinfo"})
# The request's path, percent-decoded once: the token, then a method or a file path.
_BOT_PATH = re.compile(r"/bot(?P<token>[^/]*)/(?P<rest>.*)", re.DOTALL)
_FILE_PATH = re.compile(r"/file/bot(?P<token>[^/]*)/(?P<rest>.*)", re.DOTALL)
# Bot API method names are letters and digits (case-insensitive at Telegram); one path segment,
# after `test/` in Telegram's test environment. ASCII only: no \w, no str.isalnum.
_METHOD = re.compile(r"(?:test/)?[A-Za-z][A-Za-z0-9_]{0,63}")
# Telegram's file paths: `photos/file_1.jpg`, `documents/file_2.pdf`.
_FILE_SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,255}")
_MAX_FILE_PATH_CHARS = 1024
_NOT_FOUND = "Not Found"


def _error(error_code: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": error_code, "description": description}, status=error_code
    )


# The relay's refusals as Telegram answers them: the one place they become HTTP statuses.
_RELAY_STATUS: dict[type[RelayError], int] = {
    RelayBadRequest: 400,
    RelayConflict: 409,
    RelayTooLarge: 413,
}


def _refused(error: RelayError) -> web.Response:
    """Telegram's answer to a request the relay refuses: its status, its description."""
    status = next((_RELAY_STATUS[cls] for cls in type(error).__mro__ if cls in _RELAY_STATUS), 400)
    return _error(status, error.description)


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _failure(error: Exception, event: str, **context: Any) -> web.Response:
    """503 while the database is unavailable (the bot's library retries, as it should); any
    other exception is a bug of ours, logged with its traceback (never the path: it holds the
    token) and answered 500."""
    if is_unavailable(error):
        log.warning(event, error=type(error).__name__, **context)
        return _error(503, "Service Unavailable: the database is unavailable, try again later")
    log.error(event, exc_info=error, **context)
    return _error(500, "Internal Server Error")


def _decoded_path(request: web.Request, shape: re.Pattern[str]) -> tuple[str, str] | None:
    """The token and the rest of the request's path, percent-decoded once (None: not UTF-8, or
    not of this shape). The checks see this form and what is sent on is built from it, so an
    encoding (`%2F`, `%2E%2E`) is never read one way here and another way further on."""
    try:
        decoded = unquote(request.rel_url.raw_path, errors="strict")
    except UnicodeDecodeError:
        return None
    match = shape.fullmatch(decoded)
    return None if match is None else (match["token"], match["rest"])


def _is_file_path(path: str) -> bool:
    """A path of plain segments: no `.` or `..`, no empty segment, no `%`, `\\` or NUL."""
    if len(path) > _MAX_FILE_PATH_CHARS:
        return False
    return all(
        _FILE_SEGMENT.fullmatch(segment) and segment not in (".", "..")
        for segment in path.split("/")
    )


async def _params(request: web.Request) -> dict[str, Any]:
    """The method's parameters: query string, then a JSON, urlencoded or multipart body. A body
    that cannot be read is Telegram's 400 (413 over MAX_PARAMS_BYTES), never an exception."""
    params: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        if request.content_type == "multipart/form-data":
            # Not even the closing boundary: not a multipart body (a chunked empty one is
            # refused by the form reader below all the same).
            raise RelayBadRequest("can't parse the request body")
        return params
    if request.content_length is not None and request.content_length > MAX_PARAMS_BYTES:
        raise RelayTooLarge()
    try:
        if request.content_type == "application/json":
            # Read whole (a chunked body too), within the application's client_max_size.
            body = await request.read()
            if len(body) > MAX_PARAMS_BYTES:
                raise RelayTooLarge()
            try:
                decoded = json.loads(body) if body.strip() else {}
            except (ValueError, RecursionError):
                raise RelayBadRequest("can't parse JSON object") from None
            if not isinstance(decoded, dict):
                raise RelayBadRequest("can't parse JSON object")
            params.update(decoded)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    params[key] = value
                elif isinstance(value, web.FileField):
                    value.file.close()  # a file (setWebhook's certificate): of no use here
    except web.HTTPRequestEntityTooLarge:
        # Over client_max_size: a chunked body, or too many form fields.
        raise RelayTooLarge() from None
    except UnicodeDecodeError:
        raise RelayBadRequest("strings must be encoded in UTF-8") from None
    except (ValueError, LookupError, RuntimeError, HttpProcessingError):
        # aiohttp's form reader: no or a wrong boundary, a cut-off part, an unknown charset or
        # transfer encoding, a part header too long.
        raise RelayBadRequest("can't parse the request body") from None
    return params


def _forward_headers(request: web.Request) -> dict[str, str]:
    """The request's headers that go on to Telegram: those that describe the body."""
    headers = {name: request.headers[name] for name in _REQUEST_HEADERS if name in request.headers}
    if "Content-Encoding" in headers:
        # aiohttp hands us the body decoded: it goes on as it is now, its length unknown.
        del headers["Content-Encoding"]
        headers.pop("Content-Length", None)
    # The client's own choice of compression: the body is passed on as Telegram sent it.
    headers["Accept-Encoding"] = request.headers.get("Accept-Encoding", "identity")
    return headers


class _BotApiRoutes:
    """The proxy's handlers: a bot's method calls (its own four served by the relay, the rest
    forwarded) and its file downloads."""

    def __init__(
        self,
        bot_tokens: BotTokenAuthenticator,
        relay: RelayService,
        bot_api: BotApiForwarder,
        forward_timeout: float,
    ) -> None:
        self._bot_tokens = bot_tokens
        self._relay = relay
        self._bot_api = bot_api
        self._forward_timeout = forward_timeout

    async def authenticate(self, token: str) -> Application | web.Response:
        try:
            return await self._bot_tokens.authenticate(token)
        except Unauthenticated:
            return _error(401, "Unauthorized")
        except Exception as error:
            return _failure(error, "proxy application lookup failed", bot_id=bot_id_of_token(token))

    async def bot_method(self, request: web.Request) -> web.StreamResponse:
        found = _decoded_path(request, _BOT_PATH)
        if found is None or not _METHOD.fullmatch(found[1]):
            return _error(404, _NOT_FOUND)
        token, method = found
        application = await self.authenticate(token)
        if isinstance(application, web.Response):
            return application
        name = method.removeprefix("test/").lower()
        if name not in _OWN_METHODS:
            return await self.forward(request, "method", method, application)
        try:
            return await self.own_method(request, name, application)
        except RelayError as error:
            return _refused(error)
        except web.RequestPayloadError:
            raise  # a body that breaks its framing: the HTTP door's guard answers 400
        except Exception as error:
            return _failure(
                error, "proxy update method failed", bot_id=application.bot_id, method=name
            )

    async def own_method(
        self, request: web.Request, name: str, application: Application
    ) -> web.Response:
        """getUpdates, setWebhook, deleteWebhook or getWebhookInfo, served by the relay."""
        params = await _params(request)
        if name == "getupdates":
            updates = await self._relay.get_updates(application, params)
            body = b'{"ok":true,"result":[' + b",".join(updates) + b"]}"
            return web.Response(body=body, content_type="application/json")
        if name == "setwebhook":
            await self._relay.set_webhook(application, params)
            secret = params.get("secret_token")
            if isinstance(secret, str):  # checked by set_webhook: the bot's own secret
                register_secret(secret)
            described = "Webhook was set" if params.get("url") else "Webhook was deleted"
            return web.json_response({"ok": True, "result": True, "description": described})
        if name == "deletewebhook":
            await self._relay.delete_webhook(application, params)
            return web.json_response(
                {"ok": True, "result": True, "description": "Webhook was deleted"}
            )
        return _ok(await self._relay.webhook_info(application))

    async def file_download(self, request: web.Request) -> web.StreamResponse:
        found = _decoded_path(request, _FILE_PATH)
        if found is None or not _is_file_path(found[1]):
            return _error(404, _NOT_FOUND)
        token, path = found
        application = await self.authenticate(token)
        if isinstance(application, web.Response):
            return application
        return await self.forward(request, "file", path, application)

    async def forward(
        self,
        request: web.Request,
        target: Literal["method", "file"],
        path: str,
        application: Application,
    ) -> web.StreamResponse:
        """Sends the request on to the bot's own checked `path` at Telegram and streams the
        answer back as it comes."""
        broken: list[web.RequestPayloadError] = []  # the client's body, not Telegram, failed

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in request.content.iter_chunked(_CHUNK):
                    yield chunk
            except web.RequestPayloadError as error:
                broken.append(error)
                raise

        forwarded = ForwardRequest(
            bot=application.require_bot(),
            target=target,
            path=path,
            raw_query=request.rel_url.raw_query_string,
            http_method=request.method,
            headers=_forward_headers(request),
            body=body() if request.body_exists else None,
        )
        response: web.StreamResponse | None = None
        try:
            async with self._bot_api.forward(
                forwarded, read_timeout=self._forward_timeout
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name in _RESPONSE_HEADERS:
                    if name in upstream.headers:
                        response.headers[name] = upstream.headers[name]
                await response.prepare(request)
                async for chunk in upstream.body:
                    await response.write(chunk)
                await response.write_eof()
                return response
        except ForwardRefused:  # the endpoint built something else: nothing was sent
            log.error("proxy target refused", bot_id=application.bot_id)
            return _error(404, _NOT_FOUND)
        except (TelegramNetworkError, aiohttp.ClientError, TimeoutError) as error:
            # Telegram did not answer, or the client went away while its answer was written.
            if broken and response is None:
                raise broken[0] from None  # the HTTP door's guard answers 400
            # Never str(error): aiohttp's messages carry the URL, hence the token.
            reason = (
                error.reason if isinstance(error, TelegramNetworkError) else type(error).__name__
            )
            log.warning("proxy forward failed", bot_id=application.bot_id, error=reason)
            if response is not None:
                # The answer was under way: the client sees the connection cut. A new error,
                # so that nothing logged carries the original's URL.
                raise ConnectionResetError("Telegram's answer was cut off") from None
            return _error(502, "Bad Gateway: Telegram did not answer")


def add_bot_api_routes(
    app: web.Application,
    *,
    bot_tokens: BotTokenAuthenticator,
    relay: RelayService,
    bot_api: BotApiForwarder,
    forward_timeout: float,
) -> None:
    routes = _BotApiRoutes(bot_tokens, relay, bot_api, forward_timeout)
    app.router.add_route("*", "/bot{token}/{method:.+}", routes.bot_method)
    app.router.add_get("/file/bot{token}/{path:.+}", routes.file_download)
