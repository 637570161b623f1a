"""The demo Mini App in headless chromium against a real `portex-pay dev`: a purchase paid in
the sandbox's invoice dialog, a cancelled one resumed, a tampered price refused by the edge, and
one user's orders never shown to another. Everything the page does goes through the JavaScript
client and the real edge; the only stand-in is the sandbox (the fake Bot API)."""

from __future__ import annotations

import json

import grpc
from playwright.async_api import Page, Route, expect

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.browser.conftest import SCREENSHOT_DIR, DemoServer

ITEM = "li[data-item='item']"


async def buy(page: Page) -> int:
    """Presses Buy on the dev item; the new order's id once its row shows (the invoice is open)."""
    await page.click(f"{ITEM} button")
    await expect(page.locator("#invoice")).to_be_visible()
    row = page.locator("#orders tr").first
    await expect(row).to_have_attribute("data-order", _digits())
    return int(await row.get_attribute("data-order") or 0)


def _digits():  # type: ignore[no-untyped-def]
    import re

    return re.compile(r"^\d+$")


def status_cell(page: Page, order_id: int):  # type: ignore[no-untyped-def]
    return page.locator(f"#orders tr[data-order='{order_id}'] td.status")


async def query_order(demo_server: DemoServer, order_id: int) -> payment_pb2.Order:
    async with grpc.aio.insecure_channel(demo_server.grpc_target) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        return await stub.QueryOrder(
            payment_pb2.QueryOrderRequest(tg_payment_id=order_id),
            metadata=(("authorization", f"Bearer {demo_server.api_key}"),),
        )


async def test_an_item_bought_and_paid_in_the_sandbox_dialog_shows_paid_and_is_paid(
    page: Page, demo_server: DemoServer
) -> None:
    """Buy, Pay in the invoice dialog: the page follows the order to "paid", gRPC says PAID."""
    await expect(page.locator(ITEM)).to_contain_text("5 Stars")
    order_id = await buy(page)
    await page.click("#invoice-pay")
    await expect(status_cell(page, order_id)).to_have_text("paid")
    await expect(page.locator("#resume")).to_be_hidden()
    order = await query_order(demo_server, order_id)
    assert (order.state, order.tg_use_id, order.amount) == (payment_pb2.Order.PAID, 42, 5)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "demo-paid.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the paid state: {shot}")
    assert shot.stat().st_size > 0
