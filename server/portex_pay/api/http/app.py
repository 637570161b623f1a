"""The aiohttp application served on PORTEX_HTTP_ADDR: Telegram webhooks, the Mini App edge
(`/v1/`, api/http/edge.py), the Bot API proxy (`/bot{token}/`, api/http/botapi_proxy.py) and
liveness.

`POST /telegram/webhook/{application_id}` receives the updates of that application's bot. Telegram
sends the `secret_token` given to setWebhook in `X-Telegram-Bot-Api-Secret-Token`; a request
without the application's secret is refused with 401 before its body is read or anything is
processed. Bodies are capped (413) and a body that is not a JSON object gets 400. An update we
cannot use (malformed, or one a bug trips on) is dead-lettered and answered 200, so it never
blocks the bot's later updates; only a transient failure (the database is down) answers 503, so
that Telegram delivers the update again. `GET /healthz` is 200
while PostgreSQL is reachable, 503 otherwise.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

import structlog
from aiohttp import web

from portex_pay.api.http.botapi_proxy import add_bot_api_routes
from portex_pay.api.http.edge import add_edge_routes
from portex_pay.api.http.guard import ClientWarnings, bounded_reads
from portex_pay.api.http.metrics import count_requests
from portex_pay.domain.application import Application
from portex_pay.metrics import PrometheusMetrics
from portex_pay.service.auth import BotTokenAuthenticator
from portex_pay.service.edge import EdgeService
from portex_pay.service.ports import BotApiForwarder
from portex_pay.service.relay import RelayService
from portex_pay.service.updates import UpdateProcessor, UpdateRetry, describe_error

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name


Key = TypeVar("Key")


def create_http_app(
    is_serving: Callable[[], bool],
    *,
    load_application: Callable[[UUID], Awaitable[Application | None]] | None = None,
    processor: UpdateProcessor | None = None,
    edge: EdgeService | None = None,
    relay: RelayService | None = None,
    bot_tokens: BotTokenAuthenticator | None = None,
    bot_api: BotApiForwarder | None = None,
    forward_timeout: float = 60.0,
    read_timeout: float = 30.0,
    warnings: ClientWarnings | None = None,
    metrics: PrometheusMetrics | None = None,
) -> web.Application:
    """The HTTP application; `load_application` should be cached (service/cache.py,
    ApplicationCache.get). The Bot API proxy is served when `relay` is given.
    Serve it with guard.runner_options (the bound on reading a request's headers)."""

    async def healthz(_request: web.Request) -> web.Response:
        serving = is_serving()
        return web.json_response(
            {"status": "serving" if serving else "not_serving"}, status=200 if serving else 503
        )

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    if edge is not None:
        add_edge_routes(app, edge)
    if relay is not None:
        assert bot_tokens is not None and bot_api is not None
        add_bot_api_routes(
            app,
            bot_tokens=bot_tokens,
            relay=relay,
            bot_api=bot_api,
            forward_timeout=forward_timeout,
        )
    if load_application is not None and processor is not None:

        async def telegram_webhook(request: web.Request) -> web.Response:
            try:
                application_id = UUID(request.match_info["application_id"])
            except ValueError:
                raise web.HTTPNotFound() from None
            try:
                application = await load_application(application_id)
            except Exception as error:
                log.warning("webhook application lookup failed", error=describe_error(error))
                raise web.HTTPServiceUnavailable(text="try again") from None
            secret = request.headers.get(SECRET_HEADER, "")
            if application is None or not hmac.compare_digest(
                secret.encode(), application.webhook_secret.encode()
            ):
                raise web.HTTPUnauthorized(text="wrong or missing secret token")
            if application.bot is None:
                raise web.HTTPConflict(text="the application has no bot")
            body = await request.read()
            try:
                update = json.loads(body)
            except (ValueError, RecursionError):
                # Not JSON, not UTF-8, or nested deeper than the parser goes.
                raise web.HTTPBadRequest(text="the body is not JSON") from None
            if not isinstance(update, dict):
                raise web.HTTPBadRequest(text="an update is a JSON object")
            try:
                # Processed, or dead-lettered when it cannot be: either way acknowledged.
                await processor.handle(application, update, raw=body)
            except UpdateRetry:
                raise web.HTTPServiceUnavailable(text="try again") from None
            return web.json_response({})

        app.router.add_post("/telegram/webhook/{application_id}", telegram_webhook)
    # Innermost, so that the edge's envelope also wraps its 408 and 400.
    app.middlewares.append(bounded_reads(read_timeout, warnings or ClientWarnings()))
    if metrics is not None:
        # Outermost: every answer is counted, the other middlewares' refusals too.
        app.middlewares.insert(0, count_requests(metrics))
    return app
