"""FakeBotApi itself: the aiohttp server (start/stop, its routes, the Bot API endpoint that
records each call, applies injected faults and dispatches to a method), what tests read back,
and the command line (`python -m portex_pay_devtools.fake_bot_api`).

The class is put together from one mixin per job: methods.py (the Bot API methods), users.py (the
simulated users), delivery.py (webhook and getUpdates delivery), faults.py (fault injection), all
on state.py's shared state; control.py's `_ControlApi` serves the `/_fake/` control routes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from aiohttp import ClientSession, web

from portex_pay_devtools.fake_bot_api.control import _ControlApi
from portex_pay_devtools.fake_bot_api.errors import BotApiError
from portex_pay_devtools.fake_bot_api.faults import _Faults
from portex_pay_devtools.fake_bot_api.methods import _Methods
from portex_pay_devtools.fake_bot_api.model import (
    MAX_UPLOAD_SIZE,
    Charge,
    Invoice,
    ReceivedRequest,
    RecordedCall,
    _Ok,
)
from portex_pay_devtools.fake_bot_api.state import _State, log
from portex_pay_devtools.fake_bot_api.users import _Users
from portex_pay_devtools.fake_bot_api.wire import (
    _Args,
    _error_response,
    _ok_response,
    _read_params,
)

# Other form fields (caption, reply_markup, ...) travel beside an upload in the same body.
_FORM_OVERHEAD: Final = 1 << 20


class FakeBotApi(_Methods, _Users, _Faults):
    """The fake server: `async with FakeBotApi() as fake:`, or `await start()` / `await stop()`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        accept_any_token: bool = False,
        *,
        webhook_attempts: int = 3,
        webhook_retry_delay: float = 0.05,
        webhook_timeout: float = 10.0,
    ) -> None:
        if webhook_attempts < 1:
            raise ValueError("webhook_attempts must be at least 1")
        _State.__init__(
            self,
            accept_any_token=accept_any_token,
            webhook_attempts=webhook_attempts,
            webhook_retry_delay=webhook_retry_delay,
            webhook_timeout=webhook_timeout,
        )
        _Faults.__init__(self)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._stop_event = asyncio.Event()
        self._bound_port: int | None = None
        self._methods = self._method_table()
        self._control = _ControlApi(self)

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("fake Bot API already started")
        self._stopping = False
        self._stop_event = asyncio.Event()
        # aiohttp's default body limit is 1 MiB; Telegram takes 50 MB uploads (and their form).
        app = web.Application(
            client_max_size=MAX_UPLOAD_SIZE + _FORM_OVERHEAD, middlewares=[self._record_request]
        )
        self._control.add_routes(app.router)
        # Bot API: "https://api.telegram.org/file/bot<token>/<file_path>" (GET, and so HEAD).
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file_download)
        # The test environment's path, `/bot{token}/test/{method}`, maps to the same fake.
        app.router.add_route("*", "/bot{token}/test/{method}", self._handle_bot_request)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_bot_request)
        app.router.add_route("*", "/{tail:.*}", self._handle_not_found)
        # No access log: the request path carries the bot token, which must never be logged.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        self._session = ClientSession()

    async def stop(self) -> None:
        runner, session = self._runner, self._session
        if runner is None:
            return
        self._stopping = True
        self._stop_event.set()
        for query in self._queries.values():
            if not query.future.done():
                query.future.cancel()
        workers = list(self._tasks)
        for bot in self._bots.values():
            bot.worker = None
            bot.notify()  # long polls see `_stopping` and answer at once
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await runner.cleanup()
        if session is not None:
            await session.close()
        self._runner = None
        self._session = None

    async def __aenter__(self) -> FakeBotApi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("fake Bot API not started")
        return self._bound_port

    @property
    def base_url(self) -> str:
        host = self._host
        if host in ("0.0.0.0", "", "::"):  # noqa: S104 - mapping a wildcard bind to loopback
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # ---------------------------------------------------------------------- introspection

    @property
    def invoices(self) -> list[Invoice]:
        """Every invoice, by link (createInvoiceLink) or sent (sendInvoice), oldest first."""
        invoices = [*self._invoices.values(), *self._sent_invoices.values()]
        return sorted(invoices, key=lambda invoice: invoice.created_at)

    def sent_messages(self, token: str, chat_id: int | None = None) -> list[dict[str, Any]]:
        """The messages the bot sent (sendMessage, sendDocument, sendInvoice results, as the bot
        got them), oldest first; only those in `chat_id` if given. Deleted ones stay listed."""
        bot = self._bot_for(token)
        return [
            copy.deepcopy(message)
            for message in bot.sent
            if chat_id is None or message["chat"]["id"] == chat_id
        ]

    def uploaded_file(self, file_id: str) -> bytes:
        """The bytes of a file a bot uploaded (LookupError for unknown ids and for files sent by
        URL, which the fake never fetches)."""
        stored = self._files.get(file_id)
        if stored is None or stored.data is None:
            raise LookupError(f"no uploaded file {file_id!r}")
        return stored.data

    @property
    def charges(self) -> list[Charge]:
        return list(self._charges.values())

    def reset(self) -> None:
        """Forgets calls, requests, invoices, charges, faults, webhooks, queued updates, chats,
        messages, files and commands; bots stay registered (their tokens keep working) and update
        and message ids keep increasing, so a client that remembers its getUpdates offset is not
        confused."""
        self.calls.clear()
        self.requests.clear()
        self._invoices.clear()
        self._sent_invoices.clear()
        self._charges.clear()
        self._subscriptions.clear()
        self._user_stars.clear()
        self._files.clear()
        self._file_paths.clear()
        self._first_names.clear()
        for query in self._queries.values():
            if not query.future.done():
                query.future.cancel()
        self._queries.clear()
        self._faults.clear()
        for bot in self._bots.values():
            if bot.worker is not None:
                bot.worker.cancel()
                bot.worker = None
            bot.clear_state()

    # -------------------------------------------------------------------- HTTP: Bot API

    @web.middleware
    async def _record_request(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Records every request as it arrived (`requests`), before routing."""
        self.requests.append(ReceivedRequest(request.method, request.raw_path, time.time()))
        return await handler(request)

    async def _handle_not_found(self, request: web.Request) -> web.Response:
        return _error_response(BotApiError(404, "Not Found"))

    async def _handle_file_download(self, request: web.Request) -> web.Response:
        bot = self._resolve_token(request.match_info["token"])
        if bot is None:
            return _error_response(BotApiError(401, "Unauthorized"))
        # The test environment's files live under /file/bot{token}/test/{file_path}.
        path = request.match_info["file_path"]
        stored = self._file_paths.get((bot.id, path)) or self._file_paths.get(
            (bot.id, path.removeprefix("test/"))
        )
        if stored is None or stored.data is None:
            return _error_response(BotApiError(404, "Not Found"))
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _handle_bot_request(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        bot = self._resolve_token(token)
        if bot is None:
            return _error_response(BotApiError(401, "Unauthorized"))
        try:
            raw = await _read_params(request)
        except BotApiError as exc:
            return _error_response(exc)
        requested = request.match_info["method"]
        # Bot API: "All methods in the Bot API are case-insensitive."
        entry = self._methods.get(requested.lower())
        method = entry[0] if entry else requested
        test_environment = request.path.endswith(f"/test/{requested}")
        self._record(RecordedCall(method, token, raw, time.time(), False, test_environment))

        delay = self._take_fault("delay", method, token)
        if delay is not None:
            # stop() cuts the delay short so that shutdown is not held up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay.seconds)
        if self._take_fault("drop", method, token) is not None:
            # Close without an answer: the client sees a dropped connection, as when Telegram's
            # front end resets it. Returning afterwards is safe: aiohttp notices the closed
            # transport and writes nothing.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        fail = self._take_fault("fail", method, token)
        if fail is not None:
            return _error_response(BotApiError(fail.error_code, fail.description, fail.retry_after))

        if entry is None:
            return _error_response(BotApiError(404, "Not Found: method not found"))
        try:
            result = await entry[1](bot, _Args(raw))
        except BotApiError as exc:
            return _error_response(exc)
        except Exception:
            log.exception("bot %d: %s failed inside the fake", bot.id, method)
            return _error_response(BotApiError(500, "Internal Server Error"))
        if isinstance(result, _Ok):
            return _ok_response(result.result, result.description)
        return _ok_response(result)


# ------------------------------------------------------------------------------------ CLI


async def _serve(host: str, port: int, accept_any_token: bool) -> None:
    fake = FakeBotApi(host, port, accept_any_token)
    await fake.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    display_host = f"[{host}]" if ":" in host else host
    # Parent processes wait for this exact line before they start talking to the fake.
    print(f"fake Bot API listening on http://{display_host}:{fake.port}", flush=True)
    try:
        await stopped.wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m portex_pay_devtools.fake_bot_api",
        description="Run the fake Telegram Bot API (the local Telegram sandbox).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument(
        "--accept-any-token",
        action="store_true",
        help=r"register any well-formed token (\d+:[A-Za-z0-9_-]{30,}) on first use",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(args.host, args.port, args.accept_any_token))
    return 0
