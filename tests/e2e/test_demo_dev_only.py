"""The demo Mini App is development only: `serve` never has its routes."""

from __future__ import annotations

import aiohttp

from tests.e2e.conftest import ServerFactory


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
