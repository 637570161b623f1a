"""The Bot API proxy: `{PORTEX_HTTP_ADDR}/bot{token}/{method}` and `/file/bot{token}/{path}`, the
URL shape of Telegram's, so the application's own bot code needs one setting (aiogram's
`TelegramAPIServer`, python-telegram-bot's `base_url`, grammY's and Telegraf's `apiRoot`).

- The bot's own token authenticates it: the bot id before the colon finds the application, and
  the whole token is compared in constant time. Anything else is 401 as Telegram answers it. The
  token is in the path, so no log line here carries the path.
- getUpdates, setWebhook, deleteWebhook and getWebhookInfo are served by portex-pay per bot
  (service/relay.py): portex-pay is the bot's only consumer at Telegram.
- Every other method, and file downloads, go to Telegram as they are (method, query, body and
  its Content-Type, streamed both ways: uploads and downloads are never buffered whole) and
  Telegram's answer comes back as it is, status included.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from portex_pay.domain.application import Application
from portex_pay.logging import register_secret
from portex_pay.service.ports import BotApiEndpoint
from portex_pay.service.relay import RelayError, RelayService

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


def _error(error_code: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": error_code, "description": description}, status=error_code
    )


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _bot_id(token: str) -> int | None:
    bot_id, colon, secret = token.partition(":")
    if not colon or not secret or not bot_id.isascii() or not bot_id.isdigit():
        return None
    if len(bot_id) > 18:
        return None
    return int(bot_id)


async def _params(request: web.Request) -> dict[str, Any]:
    """The method's parameters: query string, then a JSON, urlencoded or multipart body."""
    params: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return params
    if request.content_length is not None and request.content_length > MAX_PARAMS_BYTES:
        raise RelayError(413, "Request Entity Too Large")
    if request.content_type == "application/json":
        body = await request.content.read(MAX_PARAMS_BYTES + 1)
        if len(body) > MAX_PARAMS_BYTES:
            raise RelayError(413, "Request Entity Too Large")
        try:
            decoded = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError):
            raise RelayError(400, "Bad Request: can't parse JSON object") from None
        if not isinstance(decoded, dict):
            raise RelayError(400, "Bad Request: can't parse JSON object")
        params.update(decoded)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        params.update({key: value for key, value in form.items() if isinstance(value, str)})
    return params


def add_bot_api_routes(
    app: web.Application,
    *,
    load_bot_application: Callable[[int], Awaitable[Application | None]],
    relay: RelayService,
    bot_api: BotApiEndpoint,
    forward_timeout: float,
) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=forward_timeout)

    async def authenticate(request: web.Request) -> tuple[Application, str] | web.Response:
        token = request.match_info["token"]
        bot_id = _bot_id(token)
        application = None
        if bot_id is not None:
            try:
                application = await load_bot_application(bot_id)
            except Exception as error:
                log.warning("proxy application lookup failed", error=type(error).__name__)
                return _error(500, "Internal Server Error: try again")
        expected = application.bot.token if application and application.bot else None
        # Compared even when nothing was found, so that timing tells nothing.
        if not hmac.compare_digest(token.encode(), (expected or "").encode()) or not expected:
            return _error(401, "Unauthorized")
        assert application is not None
        return application, token

    async def bot_method(request: web.Request) -> web.StreamResponse:
        found = await authenticate(request)
        if isinstance(found, web.Response):
            return found
        application, token = found
        method = request.match_info["method"]
        name = method.removeprefix("test/").lower()
        if name not in _OWN_METHODS:
            return await forward(request, bot_api.method_url(token, method), application)
        try:
            params = await _params(request)
            if name == "getupdates":
                updates = await relay.get_updates(application, params)
                body = b'{"ok":true,"result":[' + b",".join(updates) + b"]}"
                return web.Response(body=body, content_type="application/json")
            if name == "setwebhook":
                secret = params.get("secret_token")
                if isinstance(secret, str):
                    register_secret(secret)
                await relay.set_webhook(application, params)
                return web.json_response(
                    {
                        "ok": True,
                        "result": True,
                        "description": "Webhook was set"
                        if params.get("url")
                        else ("Webhook was deleted"),
                    }
                )
            if name == "deletewebhook":
                await relay.delete_webhook(application, params)
                return web.json_response(
                    {"ok": True, "result": True, "description": "Webhook was deleted"}
                )
            return _ok(await relay.webhook_info(application))
        except RelayError as error:
            return _error(error.error_code, error.description)
        except Exception as error:  # the database: the bot's library retries a 5xx
            log.warning(
                "proxy update method failed",
                bot_id=application.bot_id,
                method=name,
                error=type(error).__name__,
            )
            return _error(500, "Internal Server Error: try again")

    async def file_download(request: web.Request) -> web.StreamResponse:
        found = await authenticate(request)
        if isinstance(found, web.Response):
            return found
        application, token = found
        return await forward(
            request, bot_api.file_url(token, request.match_info["path"]), application
        )

    async def forward(
        request: web.Request, url: str, application: Application
    ) -> web.StreamResponse:
        if request.query_string:
            url = f"{url}?{request.query_string}"
        headers = {
            name: request.headers[name] for name in _REQUEST_HEADERS if name in request.headers
        }
        # The client's own choice of compression: the body is passed on as Telegram sent it.
        headers["Accept-Encoding"] = request.headers.get("Accept-Encoding", "identity")
        data = request.content.iter_chunked(_CHUNK) if request.body_exists else None
        response: web.StreamResponse | None = None
        try:
            async with bot_api.session.request(
                request.method,
                url,
                data=data,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                auto_decompress=False,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name in _RESPONSE_HEADERS:
                    if name in upstream.headers:
                        response.headers[name] = upstream.headers[name]
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError) as error:
            # Never str(error): aiohttp's messages carry the URL, hence the token.
            log.warning(
                "proxy forward failed", bot_id=application.bot_id, error=type(error).__name__
            )
            if response is not None:
                # The answer was under way: the client sees the connection cut. A new error,
                # so that nothing logged carries the original's URL.
                raise ConnectionResetError("Telegram's answer was cut off") from None
            return _error(502, "Bad Gateway: Telegram did not answer")

    app.router.add_route("*", "/bot{token}/{method:.+}", bot_method)
    app.router.add_get("/file/bot{token}/{path:.+}", file_download)
