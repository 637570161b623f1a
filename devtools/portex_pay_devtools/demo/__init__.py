"""The demo Mini App (`/demo/`): a small shop page that `portex-pay dev` serves beside the edge
while the Telegram sandbox runs with its own bot (PORTEX_DEV_BOT_TOKEN unset), never otherwise
(`serve` does not have these routes, and the devtools are not installed in the image). The page
plays `Telegram.WebApp` itself, with three development-only helpers here: initData for a user
picked on the page, signed with the sandbox bot's token (as `portex-pay dev init-data` signs
it); the dev application's catalog (public to buyers anyway); and the invoice dialog's Pay
button, which drives the sandbox's checkout (`FakeBotApi.pay_invoice`), so that pre-checkout,
successful_payment, callbacks and events happen as they would in Telegram. The page talks to the
edge through the JavaScript client of `clients/js` (served here as `/demo/portex-pay.js`),
exactly as a Mini App would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web

from portex_pay.adapters.postgres.catalog import CatalogRepository
from portex_pay.adapters.postgres.pool import create_pool
from portex_pay.domain.init_data import init_data_fields, sign_init_data
from portex_pay_devtools.fake_bot_api import FakeBotApi

STATIC_DIR = Path(__file__).parent / "static"
# F's client, served from the checkout (the devtools are installed editable by `make venv`).
CLIENT_FILE = Path(__file__).resolve().parents[3] / "clients" / "js" / "src" / "portex-pay.js"
DEMO_USERS = (42, 43)  # the users the page's picker offers (any positive id is accepted)
_POOL = web.AppKey("demo_pool", asyncpg.Pool)
_STATIC_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}


def signed_init_data(user_id: int, bot_token: str, *, first_name: str = "Dev") -> str:
    """A Mini App launch's initData for `user_id`, signed now with `bot_token` as Telegram signs
    it (what `portex-pay dev init-data` prints). It is a credential: never log it."""
    user: dict[str, Any] = {"id": user_id, "first_name": first_name, "username": f"user{user_id}"}
    return sign_init_data(init_data_fields(user, auth_date=datetime.now(UTC)), bot_token=bot_token)


@dataclass(frozen=True)
class DemoShop:
    """What the demo's helpers need: the dev application, the sandbox bot and the sandbox."""

    application_id: str
    bot_token: str
    sandbox: FakeBotApi
    database_url: str

    def mount(self, app: web.Application) -> None:
        """Adds `/demo/` to the service's HTTP application (an app.HttpExtension)."""
        demo = web.Application()
        demo.cleanup_ctx.append(self._pool)
        demo.router.add_get("/", self._page)
        demo.router.add_get("/catalog", self._catalog)
        demo.router.add_post("/init-data", self._init_data)
        demo.router.add_post("/invoice", self._invoice)
        demo.router.add_get("/portex-pay.js", self._client)
        demo.router.add_get("/{name:[a-z-]+\\.(?:css|js)}", self._static)
        app.router.add_get("/demo", self._to_page)
        app.add_subapp("/demo/", demo)

    async def _pool(self, demo: web.Application) -> AsyncIterator[None]:
        # The catalog is read live (set-item shows on the next load); two connections at most.
        demo[_POOL] = await create_pool(self.database_url, min_size=0, max_size=2)
        yield
        await demo[_POOL].close()

    async def _to_page(self, _request: web.Request) -> web.Response:
        raise web.HTTPFound("/demo/")

    async def _page(self, _request: web.Request) -> web.FileResponse:
        return _file(STATIC_DIR / "index.html")

    async def _static(self, request: web.Request) -> web.FileResponse:
        path = STATIC_DIR / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound()
        return _file(path)

    async def _client(self, _request: web.Request) -> web.FileResponse:
        if not CLIENT_FILE.is_file():
            raise web.HTTPNotFound(text=f"the JavaScript client is missing: {CLIENT_FILE}")
        return _file(CLIENT_FILE)

    async def _catalog(self, request: web.Request) -> web.Response:
        """{"application_id", "users", "items": [{key, amount, title, description, photo_url}]}."""
        items = await CatalogRepository(request.app[_POOL]).list(UUID(self.application_id))
        return web.json_response(
            {
                "application_id": self.application_id,
                "users": list(DEMO_USERS),
                "items": [
                    {
                        "key": item.key,
                        "amount": item.amount,
                        "title": item.title or item.key,
                        "description": item.description or item.title or item.key,
                        "photo_url": item.photo_url,
                    }
                    for item in items
                ],
            }
        )

    async def _init_data(self, request: web.Request) -> web.Response:
        """{"user_id"} -> {"init_data"}: what Telegram would hand the Mini App for that user."""
        user_id = _positive_int(await _body(request), "user_id")
        return web.json_response({"init_data": signed_init_data(user_id, self.bot_token)})

    async def _invoice(self, request: web.Request) -> web.Response:
        """{"link", "user_id"} -> {"status"}: the invoice dialog's Pay button, paying `link` as
        `user_id` in the sandbox (its other buttons, closing it "cancelled" or "failed", involve
        no one: Telegram tells the bot nothing)."""
        body = await _body(request)
        link, user_id = body.get("link"), _positive_int(body, "user_id")
        if not isinstance(link, str):
            raise web.HTTPBadRequest(text='give "link"')
        try:
            approved = (await self.sandbox.pay_invoice(link, user_id)).approved
        except LookupError:
            raise web.HTTPNotFound(text="the sandbox has no such invoice") from None
        # Telegram's openInvoice statuses: "paid" once the payment went through.
        return web.json_response({"status": "paid" if approved else "failed"})


def _file(path: Path) -> web.FileResponse:
    # The page is edited while `make run` serves it: never cached.
    return web.FileResponse(
        path,
        headers={"Content-Type": _STATIC_TYPES[path.suffix], "Cache-Control": "no-store"},
    )


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def _positive_int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**52:
        raise web.HTTPBadRequest(text=f'"{name}" must be a positive integer')
    return value
