"""The fake's own HTTP control API, under `/_fake/`: what a test in another process (or `make run`)
uses to drive the fake: register bots, inject faults, pay invoices, send user messages and
updates, renew, fail, cancel and re-enable Stars subscriptions (`/_fake/subscriptions/...`,
`/_fake/user_stars`), add Star transactions (any kind, a payment whose update was lost, a refund
made elsewhere, a withdrawal's new state), read calls (and their counts per method), invoices,
charges, subscriptions, Star transactions and sent messages. It only calls FakeBotApi's public
methods (and looks bots up by id)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from portex_pay_devtools.fake_bot_api.model import (
    PRE_CHECKOUT_ANSWER_WINDOW,
    STARS_CURRENCY,
    UploadedFile,
)
from portex_pay_devtools.fake_bot_api.wire import _INTEGER_RE, _json_response, _ok_response

if TYPE_CHECKING:
    from portex_pay_devtools.fake_bot_api.server import FakeBotApi


def _control(
    handler: Callable[[_ControlApi, web.Request], Awaitable[Any]],
) -> Callable[[_ControlApi, web.Request], Awaitable[web.Response]]:
    """Wraps a `/_fake/` handler: its result becomes `{"ok": true, "result": ...}`, bad input a 400
    and unknown things (a link, an update) a 404, in the Bot API's error shape."""

    async def wrapped(self: _ControlApi, request: web.Request) -> web.Response:
        try:
            result = await handler(self, request)
        except _ControlError as exc:
            return _json_response(
                {"ok": False, "error_code": exc.status, "description": exc.description},
                status=exc.status,
            )
        except LookupError as exc:
            return _json_response(
                {"ok": False, "error_code": 404, "description": str(exc)}, status=404
            )
        except ValueError as exc:
            return _json_response(
                {"ok": False, "error_code": 400, "description": str(exc)}, status=400
            )
        return _ok_response(result)

    return wrapped


class _ControlApi:
    """The `/_fake/` routes of one FakeBotApi."""

    def __init__(self, fake: FakeBotApi) -> None:
        self._fake = fake

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/_fake/bots", self._control_add_bot)
        router.add_post("/_fake/fail", self._control_fail)
        router.add_post("/_fake/delay", self._control_delay)
        router.add_post("/_fake/drop", self._control_drop)
        router.add_post("/_fake/clear", self._control_clear)
        router.add_post("/_fake/reset", self._control_reset)
        router.add_get("/_fake/calls", self._control_calls)
        router.add_post("/_fake/pay", self._control_pay)
        router.add_get("/_fake/invoices", self._control_invoices)
        router.add_get("/_fake/charges", self._control_charges)
        router.add_post("/_fake/deliver", self._control_deliver)
        router.add_post("/_fake/redeliver", self._control_redeliver)
        router.add_post("/_fake/user_message", self._control_user_message)
        router.add_get("/_fake/sent_messages", self._control_sent_messages)
        router.add_get("/_fake/call_counts", self._control_call_counts)
        router.add_get("/_fake/star_transactions", self._control_star_transactions)
        router.add_post("/_fake/star_transactions", self._control_add_star_transaction)
        router.add_post("/_fake/star_payment", self._control_star_payment)
        router.add_post("/_fake/outside_refund", self._control_outside_refund)
        router.add_post("/_fake/withdrawal_state", self._control_withdrawal_state)
        router.add_get("/_fake/subscriptions", self._control_subscriptions)
        router.add_post("/_fake/subscriptions/renew", self._control_renew)
        router.add_post("/_fake/subscriptions/cancel", self._control_cancel_subscription)
        router.add_post("/_fake/subscriptions/reactivate", self._control_reactivate)
        router.add_post("/_fake/user_stars", self._control_user_stars)

    async def _control_body(self, request: web.Request) -> dict[str, Any]:
        if not request.body_exists:
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise _ControlError(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise _ControlError(400, "body must be a JSON object")
        return body

    @_control
    async def _control_add_bot(self, request: web.Request) -> int:
        body = await self._control_body(request)
        return self._fake.add_bot(_field(body, "token", str), _optional(body, "username", str))

    @_control
    async def _control_fail(self, request: web.Request) -> bool:
        body = await self._control_body(request)
        self._fake.fail_next(
            _field(body, "method", str),
            error_code=_field(body, "error_code", int),
            description=_field(body, "description", str),
            retry_after=_optional(body, "retry_after", int),
            times=_optional(body, "times", int) or 1,
            token=_optional(body, "token", str),
        )
        return True

    @_control
    async def _control_delay(self, request: web.Request) -> bool:
        body = await self._control_body(request)
        seconds = _field(body, "seconds", (int, float))
        self._fake.delay(
            _field(body, "method", str),
            float(seconds),
            _optional(body, "times", int),
            token=_optional(body, "token", str),
        )
        return True

    @_control
    async def _control_drop(self, request: web.Request) -> bool:
        body = await self._control_body(request)
        self._fake.drop_connection(
            _field(body, "method", str),
            _optional(body, "times", int) or 1,
            token=_optional(body, "token", str),
        )
        return True

    @_control
    async def _control_clear(self, request: web.Request) -> bool:
        self._fake.clear_faults()
        return True

    @_control
    async def _control_reset(self, request: web.Request) -> bool:
        self._fake.reset()
        return True

    @_control
    async def _control_calls(self, request: web.Request) -> list[dict[str, Any]]:
        method = request.query.get("method")
        bot_id = request.query.get("bot_id")
        calls = self._fake.calls if method is None else self._fake.calls_for(method)
        # Bot ids, not tokens, go out: tokens are credentials.
        return [
            {
                "method": call.method,
                "bot_id": int(call.token.split(":", 1)[0]),
                "params": {name: _jsonable(value) for name, value in call.params.items()},
                "time": call.time,
                "via_webhook_reply": call.via_webhook_reply,
            }
            for call in calls
            if bot_id is None or call.token.split(":", 1)[0] == bot_id
        ]

    @_control
    async def _control_pay(self, request: web.Request) -> dict[str, Any]:
        """Pays {"link", "user_id"} (pay_invoice) or an invoice message {"token", "chat_id",
        "message_id"} (pay_sent_invoice)."""
        body = await self._control_body(request)
        answer_timeout = _optional(body, "answer_timeout", (int, float))
        options: dict[str, Any] = {
            "total_amount": _optional(body, "total_amount", int),
            "invoice_payload": _optional(body, "invoice_payload", str),
            "currency": _optional(body, "currency", str) or STARS_CURRENCY,
            "answer_timeout": (
                PRE_CHECKOUT_ANSWER_WINDOW if answer_timeout is None else float(answer_timeout)
            ),
        }
        if "message_id" in body:
            outcome = await self._fake.pay_sent_invoice(
                _field(body, "token", str),
                _field(body, "chat_id", int),
                _field(body, "message_id", int),
                **options,
            )
        else:
            outcome = await self._fake.pay_invoice(
                _field(body, "link", str), _field(body, "user_id", int), **options
            )
        return dataclasses.asdict(outcome)

    @_control
    async def _control_invoices(self, request: web.Request) -> list[dict[str, Any]]:
        return [dataclasses.asdict(invoice) for invoice in self._fake.invoices]

    @_control
    async def _control_charges(self, request: web.Request) -> list[dict[str, Any]]:
        return [dataclasses.asdict(charge) for charge in self._fake.charges]

    @_control
    async def _control_deliver(self, request: web.Request) -> int | None:
        body = await self._control_body(request)
        return await self._fake.deliver_update(
            _field(body, "token", str), _field(body, "update", dict)
        )

    @_control
    async def _control_user_message(self, request: web.Request) -> int | None:
        body = await self._control_body(request)
        return await self._fake.send_user_message(
            _field(body, "token", str),
            _field(body, "user_id", int),
            _field(body, "text", str),
            first_name=_optional(body, "first_name", str),
        )

    @_control
    async def _control_sent_messages(self, request: web.Request) -> list[dict[str, Any]]:
        bot_id = request.query.get("bot_id", "")
        chat_id = request.query.get("chat_id")
        bot = self._fake._bots_by_id.get(int(bot_id)) if bot_id.isdigit() else None
        if bot is None:
            raise _ControlError(400, "query parameter bot_id must name a bot")
        if chat_id is not None and not _INTEGER_RE.fullmatch(chat_id):
            raise _ControlError(400, "query parameter chat_id must be an integer")
        return self._fake.sent_messages(bot.token, None if chat_id is None else int(chat_id))

    def _query_bot_token(self, request: web.Request) -> str | None:
        """The token of the bot named by the `bot_id` query parameter; None when there is
        none (400 when it names no bot)."""
        bot_id = request.query.get("bot_id")
        if bot_id is None:
            return None
        bot = self._fake._bots_by_id.get(int(bot_id)) if bot_id.isdigit() else None
        if bot is None:
            raise _ControlError(400, "query parameter bot_id must name a bot")
        return bot.token

    @_control
    async def _control_call_counts(self, request: web.Request) -> dict[str, int]:
        """{method: calls} of every bot, or of `?bot_id=`."""
        return self._fake.call_counts(self._query_bot_token(request))

    @_control
    async def _control_star_transactions(self, request: web.Request) -> list[dict[str, Any]]:
        token = self._query_bot_token(request)
        if token is None:
            raise _ControlError(400, "query parameter bot_id is required")
        return self._fake.star_transactions(token)

    @_control
    async def _control_add_star_transaction(self, request: web.Request) -> dict[str, Any]:
        """Appends {"token", "transaction": <a StarTransaction in Telegram's shape>}."""
        body = await self._control_body(request)
        return self._fake.add_star_transaction(
            _field(body, "token", str), _field(body, "transaction", dict)
        )

    @_control
    async def _control_star_payment(self, request: web.Request) -> dict[str, Any]:
        """A payment whose update never reached the bot: {"token", "user_id",
        "invoice_payload", "amount", "date"?}."""
        body = await self._control_body(request)
        return self._fake.record_star_payment(
            _field(body, "token", str),
            _field(body, "user_id", int),
            _field(body, "invoice_payload", str),
            _field(body, "amount", int),
            date=_optional(body, "date", int),
        )

    @_control
    async def _control_outside_refund(self, request: web.Request) -> dict[str, Any]:
        """A refund with no refunded_payment update: {"token", "telegram_payment_charge_id",
        "date"?}."""
        body = await self._control_body(request)
        return self._fake.refund_outside(
            _field(body, "token", str),
            _field(body, "telegram_payment_charge_id", str),
            date=_optional(body, "date", int),
        )

    @_control
    async def _control_withdrawal_state(self, request: web.Request) -> dict[str, Any]:
        """Fragment settles a withdrawal: {"token", "id", "withdrawal_state": {...}}."""
        body = await self._control_body(request)
        return self._fake.set_withdrawal_state(
            _field(body, "token", str),
            _field(body, "id", str),
            _field(body, "withdrawal_state", dict),
        )

    @_control
    async def _control_subscriptions(self, request: web.Request) -> list[dict[str, Any]]:
        """The subscriptions of `?bot_id=`."""
        token = self._query_bot_token(request)
        if token is None:
            raise _ControlError(400, "query parameter bot_id is required")
        return [dataclasses.asdict(s) for s in self._fake.subscriptions(token)]

    @_control
    async def _control_renew(self, request: web.Request) -> dict[str, Any]:
        """Charges the next period now: {"token", "telegram_payment_charge_id" (the first
        payment's), "force"?}; answers the Renewal."""
        body = await self._control_body(request)
        renewal = await self._fake.renew_subscription(
            _field(body, "token", str),
            _field(body, "telegram_payment_charge_id", str),
            force=bool(_optional(body, "force", bool)),
        )
        return dataclasses.asdict(renewal)

    @_control
    async def _control_cancel_subscription(self, request: web.Request) -> int | None:
        """The user cancels: {"token", "telegram_payment_charge_id"}; answers the update id."""
        body = await self._control_body(request)
        return await self._fake.cancel_subscription(
            _field(body, "token", str), _field(body, "telegram_payment_charge_id", str)
        )

    @_control
    async def _control_reactivate(self, request: web.Request) -> int | None:
        """The user re-enables: {"token", "telegram_payment_charge_id"}; answers the update id."""
        body = await self._control_body(request)
        return await self._fake.reactivate_subscription(
            _field(body, "token", str), _field(body, "telegram_payment_charge_id", str)
        )

    @_control
    async def _control_user_stars(self, request: web.Request) -> bool:
        """Sets the Stars a user's renewals spend: {"user_id", "stars" (null: never short)}."""
        body = await self._control_body(request)
        self._fake.set_user_stars(_field(body, "user_id", int), _optional(body, "stars", int))
        return True

    @_control
    async def _control_redeliver(self, request: web.Request) -> bool:
        body = await self._control_body(request)
        await self._fake.redeliver(
            _field(body, "update_id", int), token=_optional(body, "token", str)
        )
        return True


class _ControlError(Exception):
    """Bad input to a control route: answered with `status`, in the Bot API's error shape."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _optional(body: dict[str, Any], name: str, kind: type[Any] | tuple[type[Any], ...]) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise _ControlError(400, f"field {name!r} has the wrong type")
    return value


def _field(body: dict[str, Any], name: str, kind: type[Any] | tuple[type[Any], ...]) -> Any:
    value = _optional(body, name, kind)
    if value is None:
        raise _ControlError(400, f"field {name!r} is required")
    return value


def _as_tuple(kind: type[Any] | tuple[type[Any], ...]) -> tuple[type[Any], ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _jsonable(value: Any) -> Any:
    # An uploaded file goes out of the control API as its description, not its bytes.
    if isinstance(value, UploadedFile):
        return {"filename": value.filename, "content_type": value.content_type, "size": value.size}
    return value
