"""The do-nothing bot of the payment storm (bench/storm.py): the floor the service is measured
against. A tiny aiohttp webhook app in a process of its own that approves every pre_checkout_query
and acknowledges everything else, storing nothing.

It answers the way portex-pay does (service/updates.py): answerPreCheckoutQuery as a separate HTTP
call to the Bot API, made before the webhook's 200, then an empty JSON body. It checks the webhook's
secret token as any bot should. Bots are told apart by the webhook path, `/webhook/{bot_id}`; their
tokens come in the environment (BENCH_BOT_TOKENS, a JSON object bot id -> token), not on the
command line where any `ps` shows them.

    BENCH_BOT_TOKENS='{"123": "123:abc"}' python -m bench.nothing_bot PORT BOT_API_URL SECRET
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sys

import aiohttp
from aiohttp import web

from portex_pay.adapters.telegram.client import new_session
from portex_pay.cli import run_loop
from portex_pay.config import Settings


def nothing_bot(
    session: aiohttp.ClientSession, api_url: str, secret: str, tokens: dict[str, str]
) -> web.Application:
    async def webhook(request: web.Request) -> web.Response:
        token = tokens.get(request.match_info["bot_id"])
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if token is None or not hmac.compare_digest(given.encode(), secret.encode()):
            raise web.HTTPUnauthorized()
        update = json.loads(await request.read())
        query = update.get("pre_checkout_query")
        if query is not None:
            async with session.post(
                f"{api_url}/bot{token}/answerPreCheckoutQuery",
                json={"pre_checkout_query_id": query["id"], "ok": True},
            ) as response:
                await response.read()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/webhook/{bot_id}", webhook)
    return app


async def serve(port: int, api_url: str, secret: str, tokens: dict[str, str]) -> None:
    session = await new_session()  # the service's own kind of Bot API session
    runner = web.AppRunner(nothing_bot(session, api_url, secret, tokens), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()
        await session.close()


def main(argv: list[str]) -> None:
    port, api_url, secret = argv
    tokens = json.loads(os.environ["BENCH_BOT_TOKENS"])
    # The loop `serve` runs on (PORTEX_UVLOOP): the floor gets the same event loop as the service.
    environment = {**os.environ, "DATABASE_URL": "postgresql://bench"}
    uvloop = Settings.from_env(environment, serving=False).grpc.uvloop
    run_loop(serve(int(port), api_url, secret, tokens), uvloop=uvloop)


if __name__ == "__main__":
    main(sys.argv[1:])
