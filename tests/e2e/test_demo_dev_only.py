"""The demo Mini App is development only: `serve` never has its routes."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import free_port, new_bot_token
from tests.e2e.conftest import ServerFactory, start_dev


async def test_serve_answers_404_for_the_demo_page_and_its_helpers(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    base = f"http://127.0.0.1:{server.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200  # the HTTP server is up, so a 404 means "no route"
        answers = []
        for method, path in [
            ("GET", "/demo/"),
            ("GET", "/demo"),
            ("GET", "/demo/catalog"),
            ("GET", "/demo/portex-pay.js"),
            ("POST", "/demo/init-data"),
            ("POST", "/demo/invoice"),
        ]:
            async with session.request(method, f"{base}{path}", json={"user_id": 42}) as response:
                answers.append((path, response.status))
    assert answers == [
        ("/demo/", 404),
        ("/demo", 404),
        ("/demo/catalog", 404),
        ("/demo/portex-pay.js", 404),
        ("/demo/init-data", 404),
        ("/demo/invoice", 404),
    ]


async def test_dev_without_the_sandbox_serves_no_demo(
    tmp_path: Path, empty_db: str, fake_telegram: FakeBotApi
) -> None:
    """`portex-pay dev` pointed at a Telegram of its own (PORTEX_TELEGRAM_API_URL set: here the
    test's fake Bot API standing in for api.telegram.org, with a bot of ours) starts no sandbox,
    so it mounts no demo page and its banner offers none."""
    token = new_bot_token()
    fake_telegram.add_bot(token)
    grpc_port, http_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PORTEX_") and key != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=empty_db,
        PORTEX_TELEGRAM_API_URL=fake_telegram.base_url,
        PORTEX_DEV_BOT_TOKEN=token,
        PORTEX_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
        PORTEX_HTTP_ADDR=f"127.0.0.1:{http_port}",
        PORTEX_LOG_FORMAT="json",
    )
    server = await start_dev(tmp_path, env, tmp_path / "dev.log")
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{http_port}"
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base}/demo/") as response:
                assert response.status == 404
        assert "Demo Mini App" not in server.log_text()
        assert "application id" in server.log_text()  # the banner was printed, without it
    finally:
        server.kill()


async def test_dev_with_the_sandbox_and_a_bot_token_of_its_own_serves_no_demo(
    tmp_path: Path, empty_db: str
) -> None:
    """`portex-pay dev` running the sandbox but given PORTEX_DEV_BOT_TOKEN (which may be a real
    bot's) mounts no demo page: the demo signs initData for any user with the bot's token, so it
    is offered only with the sandbox's own bot."""
    grpc_port, http_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PORTEX_") and key != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=empty_db,
        PORTEX_SANDBOX_ADDR=f"127.0.0.1:{free_port()}",
        PORTEX_DEV_BOT_TOKEN=new_bot_token(),
        PORTEX_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
        PORTEX_HTTP_ADDR=f"127.0.0.1:{http_port}",
        PORTEX_LOG_FORMAT="json",
    )
    server = await start_dev(tmp_path, env, tmp_path / "dev.log")
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{http_port}"
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            for path in ("/demo/", "/demo/catalog"):
                async with session.get(f"{base}{path}") as response:
                    assert response.status == 404, path
        assert "Demo Mini App" not in server.log_text()
        assert "Telegram sandbox" in server.log_text()  # the sandbox did run
    finally:
        server.kill()
