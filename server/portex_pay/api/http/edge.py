"""The Mini App edge: the JSON-over-HTTP API the Portex JS SDK calls from the browser.

Routes (all `POST`, JSON, under `/v1/`), as the SDK calls them:

- `saveTgUser` (the SDK's `init()`, no body): verifies the initData and records the user.
- `createTgPayment` (`pay(options)`): the SDK's PaymentOptions as the body; answers
  `{"tg_payment_id": <number>, "tg_payment_url": "..."}`.
- `getTgPayment` (`queryOrder(orderId)`): `{"tg_payment_id": <number>}`; answers the SDK's
  OrderResult, numbers as numbers.
- `reportInvoiceClosed` (ours): `{"tg_payment_id", "status"}`, the Mini App's invoiceClosed status.

Every answer is the SDK's envelope: `{"ok": true, "result": ...}`, or a non-2xx status with
`{"ok": false, "error_code": <status>, "description": "...", "reason": "UPPER_SNAKE"}` (plus
`field` / `violations` for bad input). Status codes follow the gRPC code of the same domain error
(google.rpc's HTTP mapping), so a rule is decided once for both doors.

The application is `X-App-Id`; the user is the verified `X-Tg-InitData`, never the body; no API
key is needed or accepted. CORS: a request with an `Origin` must come from one of the
application's origins (403 otherwise, with no CORS grant); a preflight carries no application id,
so it is granted when some application allows the origin, and the request itself is then checked
against its own application's list. What is answered before any application is known (a
preflight, an unknown `X-App-Id`, a route we do not serve: 404 `NOT_FOUND`, a wrong method on one
we do: 405) is granted like a preflight, so that the SDK can read the refusal; it is rate-limited
per client address (429 `RATE_LIMITED` with `Retry-After`; over the limit the grant is decided from
the cache alone, without a query).

Nothing a client sends can make a 500: browser input problems are 4xx (at most a warning), and
only our own bugs are logged as errors. A 503 means the database is unavailable.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import grpc
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from portex_pay.api.grpc.errors import status_code_for
from portex_pay.domain.application import Application
from portex_pay.domain.catalog import normalize_origin
from portex_pay.domain.errors import (
    ApplicationNotFound,
    DomainError,
    FieldViolation,
    InvalidArgument,
    OriginNotAllowed,
    RateLimited,
    RequestRejected,
    TelegramRateLimited,
)
from portex_pay.domain.order import SDK_STATUS, Order
from portex_pay.domain.pay import INT64_MAX, PayCommand
from portex_pay.domain.text import single_line_problem
from portex_pay.service.clock import utcnow
from portex_pay.service.edge import EdgeService
from portex_pay.service.outage import is_unavailable

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 16 * 1024  # the largest valid PaymentOptions is about 11 KB of JSON
IDEMPOTENCY_KEY_MAX_CHARS = 128
SDK_HEADERS = ("Content-Type", "X-App-Id", "X-Tg-InitData", "X-Tg-Platform", "X-Tg-Version")
ALLOWED_HEADERS = ", ".join((*SDK_HEADERS, "Idempotency-Key"))

# google.rpc.Code -> HTTP status (google/rpc/code.proto).
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

Handler = Callable[[web.Request, Application], Awaitable[object]]


def _envelope_error(status: int, reason: str, description: str, **extra: object) -> web.Response:
    body = {"ok": False, "error_code": status, "description": description, "reason": reason}
    return web.json_response({**body, **extra}, status=status)


def _error_response(error: BaseException) -> web.Response:
    if isinstance(error, DomainError):
        status = _HTTP_STATUS.get(status_code_for(error), 500)
        extra: dict[str, Any] = {}
        if isinstance(error, InvalidArgument):
            extra["violations"] = [
                {"field": v.field, "description": v.description} for v in error.violations
            ]
            if error.violations:
                extra["field"] = error.violations[0].field
        if isinstance(error, RequestRejected):
            extra["field"] = error.field
        response = _envelope_error(status, error.reason, error.message, **extra)
        if isinstance(error, RateLimited | TelegramRateLimited):
            response.headers["Retry-After"] = str(error.retry_after)
        return response
    if is_unavailable(error):
        return _envelope_error(503, "DATABASE_UNAVAILABLE", "database unavailable; retry")
    log.error("edge request failed", exc_info=error)
    return _envelope_error(500, "INTERNAL", "internal error")


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field, description)])


def _integer(body: dict[str, Any], field: str, *, decimal_string: bool = False) -> int | None:
    """A JSON integer (or, where the SDK's types say string, a decimal string) in int64."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, str) and decimal_string and value.isascii() and value.isdecimal():
        value = int(value) if len(value) <= 19 else INT64_MAX + 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, "must be a whole number")
    if not 0 <= value <= INT64_MAX:
        raise _invalid(field, "must be from 0 to 2^63-1")
    return value


def _text(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise _invalid(field, "must be a string")
    return value


def pay_command(body: dict[str, Any]) -> PayCommand:
    """The SDK's PaymentOptions as a PayCommand (0 for a left-out tg_use_id or amount); types are
    checked here, values by Pay's own rules."""
    return PayCommand(
        tg_use_id=_integer(body, "tg_use_id", decimal_string=True) or 0,
        amount=_integer(body, "amount") or 0,
        label=_text(body, "label") or "",
        title=_text(body, "title") or "",
        description=_text(body, "description") or "",
        payload=_text(body, "payload"),
        photo_url=_text(body, "photo_url"),
        photo_size=_integer(body, "photo_size"),
        photo_width=_integer(body, "photo_width"),
        photo_height=_integer(body, "photo_height"),
        callback_url=_text(body, "callback_url"),
    )


def order_result(order: Order, now: datetime) -> dict[str, Any]:
    """The SDK's OrderResult: its names, numbers as numbers; plus the link and the state."""
    state = order.state_at(now)
    status, description = SDK_STATUS[state]
    return {
        "tg_payment_id": order.tg_payment_id,
        "application_id": str(order.application_id),
        "tg_use_id": order.tg_use_id,
        "amount": order.amount,
        "label": order.label,
        "title": order.title,
        "description": order.description,
        "payload": order.payload or "",
        "status": status,
        "status_description": description,
        "tg_payment_url": order.invoice_link or "",
        "state": state.value,
    }


async def _json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY_BYTES, actual_size=request.content_length
        )
    # A read returns what has arrived so far: read until the end, or one byte past the limit.
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= MAX_BODY_BYTES:
            chunk = await request.content.read(MAX_BODY_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (web.RequestPayloadError, HttpProcessingError, ConnectionError):
        # A broken chunked or compressed body, or a client gone mid-body: theirs, not ours.
        raise _invalid("body", "could not be read") from None
    if size > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=size)
    raw = b"".join(chunks)
    if not raw.strip() and not required:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise _invalid("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    return body


def _normalized_origin(origin: str | None) -> str | None:
    if origin is None:
        return None
    try:
        return normalize_origin(origin)
    except ValueError:
        return None


@web.middleware
async def _envelope(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own answers under /v1/, should there be any, in the envelope."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as error:
        if not request.path.startswith("/v1/") or error.status < 400:
            raise
        return _envelope_error(error.status, _http_reason(error.status), error.reason)
    return response


def _granted(response: web.StreamResponse, origin: str | None) -> web.StreamResponse:
    response.headers["Vary"] = "Origin"
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        # Not exposed by default: the SDK's code must be able to read when to retry.
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response


def _cors_grant(request: web.Request, application: Application) -> str | None:
    """The origin to grant (None: not a browser request); OriginNotAllowed when refused."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if _normalized_origin(origin) not in application.allowed_origins:
        raise OriginNotAllowed("this origin is not one of the application's Mini App origins")
    return origin


def _order_id(body: dict[str, Any]) -> int:
    value = _integer(body, "tg_payment_id", decimal_string=True)
    if value is None:
        raise _invalid("tg_payment_id", "is required")
    return value


class _EdgeRoutes:
    """The edge's handlers over one EdgeService: the SDK's four routes, preflights, and every
    other path or method under /v1/."""

    def __init__(self, edge: EdgeService) -> None:
        self._edge = edge
        self.routes: dict[str, Handler] = {
            "saveTgUser": self.save_user,
            "createTgPayment": self.create_payment,
            "getTgPayment": self.get_payment,
            "reportInvoiceClosed": self.report_closed,
        }

    async def anonymous_grant(self, request: web.Request) -> tuple[str | None, RateLimited | None]:
        """For work before any application is known (a preflight, the refusal of an unknown
        application or route): takes a token of the client address's limit and answers the
        origin to grant, one some application allows (None: no Origin, or not allowed), and the
        RateLimited to answer when over the limit (then the grant comes from the cache alone)."""
        origin = request.headers.get("Origin")
        normalized = _normalized_origin(origin)
        try:
            self._edge.admit_address(request.remote)
        except RateLimited as limited:
            known = normalized is not None and self._edge.origin_known_allowed(normalized)
            return (origin if known else None), limited
        allowed = normalized is not None and await self._edge.origin_allowed_anywhere(normalized)
        return (origin if allowed else None), None

    def serving(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """An SDK route: the application, its CORS grant and rate limit, then `handler`; every
        answer in the envelope."""

        async def serve(request: web.Request) -> web.StreamResponse:
            origin = None
            try:
                try:
                    application = await self._edge.application(request.headers.get("X-App-Id"))
                except ApplicationNotFound:
                    origin, limited = await self.anonymous_grant(request)
                    if limited is not None:
                        raise limited from None
                    raise
                origin = _cors_grant(request, application)
                self._edge.admit(application)  # after the grant: a browser can read its 429
                result = await handler(request, application)
                response: web.StreamResponse = web.json_response({"ok": True, "result": result})
            except web.HTTPException as error:
                response = _envelope_error(error.status, _http_reason(error.status), error.reason)
            except Exception as error:
                response = _error_response(error)
            return _granted(response, origin)

        return serve

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        origin = None
        try:
            origin, limited = await self.anonymous_grant(request)
            if limited is not None:
                raise limited
            if origin is None and "Origin" in request.headers:
                raise OriginNotAllowed("this origin may not call the edge")
        except Exception as error:
            return _granted(_error_response(error), origin)
        response = web.Response(status=204)
        if origin is not None:
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        return _granted(response, origin)

    async def elsewhere(self, request: web.Request) -> web.StreamResponse:
        """Any other method or route under /v1/: 405 on a route we serve, 404 on one we do not
        (the SDK's other modules, e.g. the leaderboard's), granted like a preflight so that the
        SDK reads the envelope instead of failing with a network error."""
        origin = None
        try:
            origin, limited = await self.anonymous_grant(request)
            if limited is not None:
                raise limited
        except Exception as error:
            return _granted(_error_response(error), origin)
        if request.match_info.get("tail") in self.routes:
            response = _envelope_error(
                405, "METHOD_NOT_ALLOWED", "this route takes POST (and OPTIONS for CORS)"
            )
            response.headers["Allow"] = "POST, OPTIONS"
        else:
            response = _envelope_error(
                404, "NOT_FOUND", f"this server serves only {', '.join(self.routes)} under /v1/"
            )
        return _granted(response, origin)

    async def save_user(self, request: web.Request, application: Application) -> object:
        identity = self._edge.identify(application, request.headers.get("X-Tg-InitData"))
        await _json_object(request, required=False)
        await self._edge.save_user(application, identity)
        return {"tg_use_id": identity.user.id}

    async def create_payment(self, request: web.Request, application: Application) -> object:
        identity = self._edge.identify(application, request.headers.get("X-Tg-InitData"))
        command = pay_command(await _json_object(request))
        key = request.headers.get("Idempotency-Key")
        if key is not None and (
            single_line_problem(key) is not None
            or not 0 < len(key) <= IDEMPOTENCY_KEY_MAX_CHARS
            or not key.isascii()
        ):
            raise _invalid("Idempotency-Key", "must be 1-128 printable ASCII characters")
        order = await self._edge.create_payment(application, identity, command, key)
        return {"tg_payment_id": order.tg_payment_id, "tg_payment_url": order.invoice_link or ""}

    async def get_payment(self, request: web.Request, application: Application) -> object:
        identity = self._edge.identify(application, request.headers.get("X-Tg-InitData"))
        body = await _json_object(request)
        order = await self._edge.get_payment(application, identity, _order_id(body))
        return order_result(order, utcnow())

    async def report_closed(self, request: web.Request, application: Application) -> object:
        identity = self._edge.identify(application, request.headers.get("X-Tg-InitData"))
        body = await _json_object(request)
        status = _text(body, "status") or ""
        order = await self._edge.report_invoice_closed(
            application, identity, _order_id(body), status
        )
        return order_result(order, utcnow())


def add_edge_routes(app: web.Application, edge: EdgeService) -> None:
    routes = _EdgeRoutes(edge)
    app.middlewares.append(_envelope)
    for name, handler in routes.routes.items():
        app.router.add_post(f"/v1/{name}", routes.serving(handler))
    # After the routes (the first resource that matches wins): every other path and method.
    app.router.add_route("OPTIONS", "/v1/{tail:.*}", routes.preflight)
    app.router.add_route("*", "/v1/{tail:.*}", routes.elsewhere)


def _http_reason(status: int) -> str:
    reasons = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}
    return reasons.get(status, "BAD_REQUEST")
