"""A small Bot API client on aiohttp: `POST {base}/bot{token}/{method}` with a JSON body; the
Telegram port of the service (service/ports.py, TelegramBot), with a typed method for every call
the service makes.

Answers are `{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description",
"parameters": {"retry_after"}}` (Bot API, "Making requests"). The token sits in the URL path, so
no exception or log line produced here carries the URL: errors are rebuilt from the method name
and Telegram's description only.

`forward` is the Bot API proxy's way to Telegram (service/ports.py, BotApiForwarder): a request of
the app's own bot is sent on as it came, to the URL built from its checked parts, and Telegram's
answer comes back as it is: no redirect followed, no body decoded, nothing read whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from portex_pay.domain.application import Bot
from portex_pay.domain.star_ledger import StarAmount, read_star_amount
from portex_pay.domain.telegram import (
    BotProfile,
    ChargeAlreadyRefunded,
    ForwardRefused,
    ForwardRequest,
    ForwardResponse,
    InvoiceRequest,
    TelegramApiError,
    TelegramNetworkError,
    TelegramTooManyRequests,
)
from portex_pay.service.ports import NO_METRICS, Metrics

# Optional createInvoiceLink fields, sent only when set.
_PHOTO_FIELDS = (
    "photo_url",
    "photo_size",
    "photo_width",
    "photo_height",
    "subscription_period",
)
_CHUNK = 64 * 1024  # forwarded bodies are streamed in pieces of at most this size
_CONNECT_TIMEOUT = 10.0  # seconds to connect for a forwarded request
# What a forwarded query string is sent on with: its own percent-escapes, and nothing that is not
# URL text.
_QUERY_SAFE = "!$&'()*+,;=:@/?%"


class BotApiClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        timeout: float,
        *,
        test_environment: bool = False,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._metrics = metrics
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        # Telegram's test environment puts `/test` after the token: /bot{token}/test/{method}.
        self._method_prefix = "test/" if test_environment else ""

    def method_url(self, token: str, method: str) -> str:
        """`{base}/bot{token}/{method}`, with `test/` before the method in the test environment
        (unless the method path has it already). Holds the token: never log it."""
        prefix = "" if method.startswith("test/") else self._method_prefix
        return f"{self._base_url}/bot{token}/{prefix}{method}"

    def file_url(self, token: str, path: str) -> str:
        """`{base}/file/bot{token}/{path}` (Bot API, getFile). Holds the token: never log it."""
        prefix = "" if path.startswith("test/") else self._method_prefix
        return f"{self._base_url}/file/bot{token}/{prefix}{path}"

    @contextlib.asynccontextmanager
    async def forward(
        self, request: ForwardRequest, *, read_timeout: float
    ) -> AsyncIterator[ForwardResponse]:
        """Sends the app bot's request on as it came and yields Telegram's answer as it comes
        (service/ports.py, BotApiForwarder); the connection is released when the block ends."""
        token = request.bot.token
        if request.target == "method":
            name = request.path
            url, prefix = self.method_url(token, request.path), f"/bot{token}"
        else:
            name = "file"
            url, prefix = self.file_url(token, request.path), f"/file/bot{token}"
        target = _outgoing(url, prefix, request.path, request.raw_query)
        if target is None:  # the URL built is another one than the path checked: send nothing
            raise ForwardRefused(name)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=_CONNECT_TIMEOUT, sock_read=read_timeout
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                upstream = await stack.enter_async_context(
                    self._session.request(
                        request.http_method,
                        target,
                        data=request.body,
                        headers=dict(request.headers),
                        timeout=timeout,
                        allow_redirects=False,
                        auto_decompress=False,
                    )
                )
            except (aiohttp.ClientError, TimeoutError) as error:
                # Never str(error): aiohttp's messages carry the URL, hence the token.
                raise TelegramNetworkError(name, type(error).__name__) from None
            body = _body(upstream, name)
            stack.push_async_callback(body.aclose)
            yield ForwardResponse(upstream.status, upstream.reason, upstream.headers, body)

    async def call(
        self, token: str, method: str, params: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Calls `method` (one of ours: it labels the calls' counter) and returns its result;
        TelegramError when there is none."""
        try:
            result = await self._call(token, method, params, timeout)
        except TelegramTooManyRequests:
            self._metrics.telegram_called(method, "rate_limited")
            raise
        except TelegramApiError:
            self._metrics.telegram_called(method, "error")
            raise
        except TelegramNetworkError:
            self._metrics.telegram_called(method, "network")
            raise
        self._metrics.telegram_called(method, "ok")
        return result

    async def _call(
        self, token: str, method: str, params: dict[str, Any], timeout: float | None
    ) -> Any:
        url = self.method_url(token, method)
        limit = aiohttp.ClientTimeout(total=self._timeout if timeout is None else timeout)
        try:
            async with self._session.post(url, json=params, timeout=limit) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    raise TelegramNetworkError(
                        method, f"HTTP {response.status} with a body that is not JSON"
                    ) from None
                status = response.status
        except TimeoutError:
            raise TelegramNetworkError(method, "timed out") from None
        except aiohttp.ClientError as error:
            # str(error) of some aiohttp errors contains the URL, hence the token.
            raise TelegramNetworkError(method, type(error).__name__) from None
        if not isinstance(body, dict):
            raise TelegramNetworkError(method, f"HTTP {status} with an unexpected body")
        if body.get("ok") is True:
            return body.get("result")
        # Nothing in an error answer is coerced: a field of the wrong type is treated as absent.
        error_code = body.get("error_code")
        if type(error_code) is not int:
            error_code = status
        parameters = body.get("parameters")
        retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
        description = body.get("description")
        text = description if isinstance(description, str) else ""
        wait = retry_after if type(retry_after) is int and retry_after >= 0 else None
        if error_code == 429:
            raise TelegramTooManyRequests(method, error_code, text, 1 if wait is None else wait)
        if "CHARGE_ALREADY_REFUNDED" in text:
            raise ChargeAlreadyRefunded(method, error_code, text, wait)
        raise TelegramApiError(method, error_code, text, wait)

    async def get_me(self, token: str) -> BotProfile:
        result = await self.call(token, "getMe", {})
        if not isinstance(result, dict) or type(result.get("id")) is not int:
            raise TelegramNetworkError("getMe", "the result is not a user")
        username = result.get("username")
        return BotProfile(result["id"], username if isinstance(username, str) else None)

    async def create_invoice_link(
        self, bot: Bot, invoice: InvoiceRequest, *, timeout: float | None = None
    ) -> str:
        params: dict[str, Any] = {
            "title": invoice.title,
            "description": invoice.description,
            "payload": invoice.payload,
            "currency": "XTR",
            "prices": [{"label": invoice.label, "amount": invoice.amount}],
        }
        for field in _PHOTO_FIELDS:
            value = getattr(invoice, field)
            if value is not None:
                params[field] = value
        result = await self.call(bot.token, "createInvoiceLink", params, timeout=timeout)
        if not isinstance(result, str):
            raise TelegramNetworkError("createInvoiceLink", "the result is not a link")
        return result

    async def answer_pre_checkout_query(
        self,
        bot: Bot,
        query_id: str,
        *,
        ok: bool,
        error_message: str | None = None,
        timeout: float | None = None,
    ) -> None:
        params: dict[str, Any] = {"pre_checkout_query_id": query_id, "ok": ok}
        if not ok:
            params["error_message"] = error_message
        await self.call(bot.token, "answerPreCheckoutQuery", params, timeout=timeout)

    async def refund_star_payment(self, token: str, user_id: int, charge_id: str) -> None:
        """Raises ChargeAlreadyRefunded when the charge was refunded before."""
        await self.call(
            token,
            "refundStarPayment",
            {"user_id": user_id, "telegram_payment_charge_id": charge_id},
        )

    async def edit_user_star_subscription(
        self, token: str, user_id: int, charge_id: str, *, is_canceled: bool
    ) -> None:
        await self.call(
            token,
            "editUserStarSubscription",
            {
                "user_id": user_id,
                "telegram_payment_charge_id": charge_id,
                "is_canceled": is_canceled,
            },
        )

    async def send_message(
        self, bot: Bot, chat_id: int, text: str, *, timeout: float | None = None
    ) -> None:
        await self.call(
            bot.token, "sendMessage", {"chat_id": chat_id, "text": text}, timeout=timeout
        )

    async def get_updates(
        self, bot: Bot, *, offset: int, timeout: int, allowed_updates: Sequence[str]
    ) -> list[Any]:
        """One long poll (`timeout` seconds at Telegram, ten more for the request); the updates,
        unparsed (the caller dead-letters what it cannot use)."""
        result = await self.call(
            bot.token,
            "getUpdates",
            {"offset": offset, "timeout": timeout, "allowed_updates": list(allowed_updates)},
            timeout=timeout + 10,
        )
        if not isinstance(result, list):
            raise TelegramNetworkError("getUpdates", "the result is not a list")
        return result

    async def set_webhook(
        self, bot: Bot, url: str, *, secret_token: str, allowed_updates: Sequence[str]
    ) -> None:
        await self.call(
            bot.token,
            "setWebhook",
            {"url": url, "secret_token": secret_token, "allowed_updates": list(allowed_updates)},
        )

    async def delete_webhook(self, bot: Bot) -> None:
        await self.call(bot.token, "deleteWebhook", {})

    async def webhook_url(self, bot: Bot) -> str | None:
        """getWebhookInfo's url: where Telegram pushes this bot's updates (None: nowhere)."""
        info = await self.call(bot.token, "getWebhookInfo", {})
        url = info.get("url") if isinstance(info, dict) else None
        return url if isinstance(url, str) and url else None

    async def run_webhook_reply(
        self, bot: Bot, method: str, body: bytes, content_type: str, *, timeout: float
    ) -> None:
        """A method call a webhook answered with, its body sent on as it came (the extra
        `method` field is ignored by Telegram); the result is discarded, as Telegram does."""
        url = self.method_url(bot.token, method)
        try:
            async with self._session.post(
                url,
                data=body,
                headers={"Content-Type": content_type},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                await response.read()
        except TimeoutError:
            raise TelegramNetworkError(method, "timed out") from None
        except aiohttp.ClientError as error:
            raise TelegramNetworkError(method, type(error).__name__) from None

    async def get_star_transactions(self, bot: Bot, *, offset: int, limit: int) -> list[Any]:
        """StarTransactions.transactions, every item as Telegram sent it: the ledger reads them
        (and counts one it cannot read, so that the checkpoint still moves past it)."""
        page = await self.call(bot.token, "getStarTransactions", {"offset": offset, "limit": limit})
        transactions = page.get("transactions") if isinstance(page, dict) else None
        if not isinstance(transactions, list):
            raise TelegramNetworkError("getStarTransactions", "the result has no transactions")
        return transactions

    async def get_my_star_balance(self, bot: Bot) -> StarAmount:
        result = await self.call(bot.token, "getMyStarBalance", {})
        amount = read_star_amount(result)
        if amount is None:
            raise TelegramNetworkError("getMyStarBalance", "the result is not a StarAmount")
        return amount


def _outgoing(url: str, prefix: str, rest: str, raw_query: str) -> URL | None:
    """The URL to send to: `url` if its path, as it will be sent, ends with the checked
    `{prefix}/{rest}` (or `{prefix}/test/{rest}`, in Telegram's test environment), with the
    request's own query string; else None."""
    target = URL(url)
    tails = (f"{prefix}/{rest}", f"{prefix}/test/{rest}")
    if not target.raw_path.endswith(tails) or target.raw_query_string or target.raw_fragment:
        return None
    return URL.build(
        scheme=target.scheme,
        authority=target.raw_authority,
        path=target.raw_path,
        query_string=quote(raw_query, safe=_QUERY_SAFE),
        encoded=True,
    )


async def _body(response: aiohttp.ClientResponse, name: str) -> AsyncGenerator[bytes, None]:
    """The answer's body as it arrives; a cut-off answer is TelegramNetworkError."""
    try:
        async for chunk in response.content.iter_chunked(_CHUNK):
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as error:
        raise TelegramNetworkError(name, type(error).__name__) from None


async def new_session() -> aiohttp.ClientSession:
    """A session for Bot API calls: pooled keep-alive connections, no cookies."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
    )


__all__ = ["BotApiClient", "new_session"]
