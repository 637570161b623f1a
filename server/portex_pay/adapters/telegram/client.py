"""A small Bot API client on aiohttp: `POST {base}/bot{token}/{method}` with a JSON body.

Answers are `{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description",
"parameters": {"retry_after"}}` (Bot API, "Making requests"). The token sits in the URL path, so
no exception or log line produced here carries the URL: errors are rebuilt from the method name
and Telegram's description only.
"""

from __future__ import annotations

from typing import Any

import aiohttp


class TelegramApiError(Exception):
    """Telegram answered `ok: false`."""

    def __init__(self, method: str, error_code: int, description: str, retry_after: int | None):
        super().__init__(f"{method}: {error_code} {description}")
        self.method = method
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after


class TelegramNetworkError(Exception):
    """No usable answer: timeout, connection error or a non-JSON (e.g. proxy 5xx) response."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(f"{method}: {reason}")
        self.method = method
        self.reason = reason


class BotApiClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        timeout: float,
        *,
        test_environment: bool = False,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        # Telegram's test environment puts `/test` after the token: /bot{token}/test/{method}.
        self._method_prefix = "test/" if test_environment else ""

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session (the Bot API proxy forwards requests through it)."""
        return self._session

    def method_url(self, token: str, method: str) -> str:
        """`{base}/bot{token}/{method}`, with `test/` before the method in the test environment
        (unless the method path has it already). Holds the token: never log it."""
        prefix = "" if method.startswith("test/") else self._method_prefix
        return f"{self._base_url}/bot{token}/{prefix}{method}"

    def file_url(self, token: str, path: str) -> str:
        """`{base}/file/bot{token}/{path}` (Bot API, getFile). Holds the token: never log it."""
        prefix = "" if path.startswith("test/") else self._method_prefix
        return f"{self._base_url}/file/bot{token}/{prefix}{path}"

    async def call(
        self, token: str, method: str, params: dict[str, Any], *, timeout: float | None = None
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
        raise TelegramApiError(
            method,
            error_code,
            description if isinstance(description, str) else "",
            retry_after if type(retry_after) is int and retry_after >= 0 else None,
        )

    async def get_me(self, token: str) -> dict[str, Any]:
        result = await self.call(token, "getMe", {})
        assert isinstance(result, dict)
        return result

    async def create_invoice_link(
        self, token: str, params: dict[str, Any], *, timeout: float | None = None
    ) -> str:
        result = await self.call(token, "createInvoiceLink", params, timeout=timeout)
        if not isinstance(result, str):
            raise TelegramNetworkError("createInvoiceLink", "the result is not a link")
        return result


async def new_session() -> aiohttp.ClientSession:
    """A session for Bot API calls: pooled keep-alive connections, no cookies."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
    )


__all__ = ["BotApiClient", "TelegramApiError", "TelegramNetworkError", "new_session"]
