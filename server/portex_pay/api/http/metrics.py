"""HTTP and metrics: the requests counted by route, and the `/metrics` listener.

`count_requests` is the public HTTP application's outermost middleware: every answer (webhooks,
the edge, the Bot API proxy, `/healthz`) is counted by the route's template
(`/bot{token}/{method}`, `/v1/{tail}`, `/telegram/webhook/{application_id}`), never the path,
which may hold a bot token, and by its status; a request no route matched is `unmatched`, and one
whose client went away before the answer is 499 (nginx's convention). `metrics_app` is what
PORTEX_METRICS_ADDR serves, an aiohttp application of its own on its own listener: `GET /metrics`
in Prometheus' text format, nothing else.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from portex_pay.metrics import CONTENT_TYPE_LATEST, PrometheusMetrics, multiprocess_mode

UNMATCHED = "unmatched"
CLIENT_GONE = 499


def count_requests(metrics: PrometheusMetrics) -> Middleware:
    @web.middleware
    async def counted(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_GONE
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else UNMATCHED
            metrics.http_request(route, status)

    return counted


def metrics_app(metrics: PrometheusMetrics) -> web.Application:
    async def scrape(_request: web.Request) -> web.Response:
        if multiprocess_mode():
            # Reads every worker's files: off the event loop.
            body = await asyncio.to_thread(metrics.exposition)
        else:
            body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app
