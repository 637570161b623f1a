"""The aiohttp application served on PORTEX_HTTP_ADDR.

For now it answers `GET /healthz` (200 when PostgreSQL is reachable, 503 otherwise); the Telegram
webhook endpoints and metrics join it in later issues.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

_MAX_BODY_BYTES = 1024 * 1024


def create_http_app(is_serving: Callable[[], bool]) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        serving = is_serving()
        return web.json_response(
            {"status": "serving" if serving else "not_serving"}, status=200 if serving else 503
        )

    app = web.Application(client_max_size=_MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    return app
