"""The Mini App edge beside gRPC: createTgPayment and getTgPayment over HTTP, with initData
verified on every call (HMAC with the bot token), measured in the same rounds as Pay and
QueryOrder by bench/__main__.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from portex_pay.domain.init_data import init_data_fields, sign_init_data

Call = Callable[[int], Awaitable[object]]


def signed_init_data(bot_token: str, user_id: int) -> str:
    user = {"id": user_id, "first_name": "Bench"}
    return sign_init_data(init_data_fields(user, auth_date=datetime.now(UTC)), bot_token=bot_token)


class EdgeClient:
    def __init__(self, session: aiohttp.ClientSession, http_port: int, app_id: str) -> None:
        self._session = session
        self._base = f"http://127.0.0.1:{http_port}/v1"
        self._app_id = app_id

    async def post(self, route: str, init_data: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"X-App-Id": self._app_id, "X-Tg-InitData": init_data}
        async with self._session.post(f"{self._base}/{route}", json=body, headers=headers) as r:
            answer: dict[str, Any] = await r.json()
            if r.status != 200:
                raise RuntimeError(f"{route}: {r.status} {answer}")
            return answer["result"]  # type: ignore[no-any-return]


async def edge_calls(
    client: EdgeClient, bot_token: str, *, first_user: int, users: int
) -> list[tuple[str, Call]]:
    """(name, call) pairs: a new order per call (a distinct user each, catalog pricing), and
    the owner reading one order back."""
    buyers = [signed_init_data(bot_token, first_user + n) for n in range(users)]
    reader = signed_init_data(bot_token, first_user + users)
    item = {"label": "item", "amount": 5, "title": "Book", "description": "Magic"}
    order = await client.post("createTgPayment", reader, item)
    query = {"tg_payment_id": order["tg_payment_id"]}

    async def create(index: int) -> object:
        return await client.post("createTgPayment", buyers[index], item)

    async def get(_: int) -> object:
        return await client.post("getTgPayment", reader, query)

    return [("edge getTgPayment", get), ("edge createTgPayment (new order)", create)]
