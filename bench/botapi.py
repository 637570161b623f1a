"""The Bot API proxy and its relay, measured side by side with the fake Bot API itself.

- Proxy overhead: the same forwarded methods (getMe, sendMessage) called directly at the fake Bot
  API and through portex-pay's proxy, in alternating rounds with the same concurrency.
- Relay latency: from a user's message entering Telegram (the fake) to its receipt by the app's
  bot long-polling portex-pay (Telegram -> portex-pay's webhook -> PostgreSQL -> NOTIFY -> the
  bot's getUpdates), beside a bot long-polling the fake directly, one message at a time,
  alternating.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.serving import DATA_KEY, DATA_KEYS
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay.config import Settings
from portex_pay_devtools.fake_bot_api import FakeBotApi

CONCURRENCY = 16
ROUNDS = 4
CALLS_PER_ROUND = 400
MESSAGES = 150
USER = 4242


def _token() -> str:
    return f"{uuid.uuid4().int % 10**9 + 10**9}:{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000


def _figures(latencies: list[float]) -> str:
    return (
        f"p50 {_percentile(latencies, 0.5):6.2f} ms   p99 {_percentile(latencies, 0.99):6.2f} ms"
        f"   max {max(latencies) * 1000:7.2f} ms"
    )


async def _measure(
    calls: int, call: Callable[[], Awaitable[None]], concurrency: int = CONCURRENCY
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = iter(range(calls))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started), latencies


class Poller:
    """A bot long-polling a Bot API (the proxy or the fake), noting when each text arrives."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self._http = http
        self._url = f"{base}/bot{token}/getUpdates"
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._task: asyncio.Task[None] | None = None

    def expect(self, text: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[text] = future
        return future

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        offset = 0
        while True:
            async with self._http.post(self._url, json={"offset": offset, "timeout": 10}) as r:
                body: dict[str, Any] = await r.json()
            received = time.perf_counter()
            if not body.get("ok"):
                raise RuntimeError(f"getUpdates: {body}")
            for update in body["result"]:
                offset = max(offset, update["update_id"] + 1)
                text = update.get("message", {}).get("text")
                future = self._waiting.pop(text, None)
                if future is not None and not future.done():
                    future.set_result(received)


async def run_botapi_bench(dsn: str, _tmp: Path) -> None:
    fake = FakeBotApi()
    await fake.start()
    settings = Settings().replace(
        db_url=dsn,
        payload_secret="bench-" + "s" * 32,
        data_key=DATA_KEY,
        grpc_addr="127.0.0.1:0",
        http_addr="127.0.0.1:0",
        telegram_api_url=fake.base_url,
        log_format="json",
        log_level="warning",
        telegram_updates="webhook",
        telegram_pollers=False,
        callback_allow_private=True,
    )
    app = PortexApp(settings)
    await app.start()
    session = await new_session()
    http = aiohttp.ClientSession()
    pollers: list[Poller] = []
    try:
        token, direct_token = _token(), _token()
        fake.add_bot(token)
        fake.add_bot(direct_token)
        admin = application_admin(
            app.pool, BotApiClient(session, fake.base_url, 5), data_keys=DATA_KEYS
        )
        application, _key = await admin.create_app(f"bench-bot-{uuid.uuid4().hex[:8]}", token)
        await admin.register_webhook(application.id, f"http://127.0.0.1:{app.http_port}")
        await fake.send_user_message(token, USER, "hi")  # opens the chat (not relayed yet)
        await fake.drain(token)
        proxy_base = f"http://127.0.0.1:{app.http_port}"

        # --- proxy overhead on forwarded methods
        results: dict[str, tuple[list[float], list[float]]] = {}
        for _round in range(ROUNDS):
            for label, base in (("direct", fake.base_url), ("proxy", proxy_base)):
                for method, body, concurrency in (
                    ("getMe", {}, 1),
                    ("getMe", {}, CONCURRENCY),
                    ("sendMessage", {"chat_id": USER, "text": "bench"}, CONCURRENCY),
                ):
                    url = f"{base}/bot{token}/{method}"

                    async def call(url: str = url, body: dict[str, Any] = body) -> None:
                        async with http.post(url, json=body) as response:
                            await response.read()
                            if response.status != 200:
                                raise RuntimeError(f"{response.status}")

                    rate, latencies = await _measure(CALLS_PER_ROUND, call, concurrency)
                    name = f"{method} x{concurrency} [{label}]"
                    rates, all_latencies = results.setdefault(name, ([], []))
                    rates.append(rate)
                    all_latencies.extend(latencies)
        print(f"\nBot API proxy: {ROUNDS} alternating rounds (xN: N concurrent callers)\n")
        for name, (rates, latencies) in results.items():
            rates.sort()
            print(f"  {name:28s} {rates[len(rates) // 2]:8.0f}/s   {_figures(latencies)}")
        for method in ("getMe x1", f"getMe x{CONCURRENCY}", f"sendMessage x{CONCURRENCY}"):
            direct = results[f"{method} [direct]"][1]
            proxied = results[f"{method} [proxy]"][1]
            extra50 = _percentile(proxied, 0.5) - _percentile(direct, 0.5)
            extra99 = _percentile(proxied, 0.99) - _percentile(direct, 0.99)
            print(f"  {method}: proxy adds {extra50:+.2f} ms at p50, {extra99:+.2f} ms at p99")

        # --- relay latency: Telegram's delivery to the app bot's receipt
        relayed = Poller(http, proxy_base, token)
        direct_poller = Poller(http, fake.base_url, direct_token)
        async with http.post(f"{proxy_base}/bot{token}/getWebhookInfo") as response:
            await response.read()  # turns the relay on
        pollers = [relayed, direct_poller]
        for poller in pollers:
            poller.start()
        await asyncio.sleep(0.5)
        latencies_by: dict[str, list[float]] = {"relayed": [], "direct": []}
        for index in range(MESSAGES):
            for label, poller, bot_token in (
                ("relayed", relayed, token),
                ("direct", direct_poller, direct_token),
            ):
                text = f"m{index}-{label}"
                arrival = poller.expect(text)
                sent = time.perf_counter()
                await fake.send_user_message(bot_token, USER, text)
                received = await asyncio.wait_for(arrival, 15)
                latencies_by[label].append(received - sent)
        print(f"\nRelay latency: {MESSAGES} messages, one at a time, alternating\n")
        print(f"  app bot via portex-pay (webhook + relay)   {_figures(latencies_by['relayed'])}")
        print(f"  bot polling the fake Bot API directly      {_figures(latencies_by['direct'])}")
        added = _percentile(latencies_by["relayed"], 0.5) - _percentile(latencies_by["direct"], 0.5)
        print(f"  the relay adds {added:+.2f} ms at p50")
    finally:
        for poller in pollers:
            await poller.stop()
        await http.close()
        await session.close()
        await app.stop()
        await fake.stop()
