"""The demo Mini App in headless chromium against a real `portex-pay dev`: a purchase paid in
the sandbox's invoice dialog, a cancelled one resumed, a tampered price refused by the edge, and
one user's orders never shown to another. Everything the page does goes through the JavaScript
client and the real edge; the only stand-in is the sandbox (the fake Bot API)."""

from __future__ import annotations

import json

import grpc
from playwright.async_api import Locator, Page, Route, expect

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.browser.conftest import SCREENSHOT_DIR, DemoServer

ITEM = "li[data-item='item']"


async def buy(page: Page) -> int:
    """Presses Buy on the dev item; the new order's id once its row shows (the invoice is open)."""
    rows = await page.locator("#orders tr").count()
    await page.click(f"{ITEM} button")
    await expect(page.locator("#invoice")).to_be_visible()
    await expect(page.locator("#orders tr")).to_have_count(rows + 1)
    return int(await page.locator("#orders tr").first.get_attribute("data-order") or 0)


def status_cell(page: Page, order_id: int) -> Locator:
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


async def test_a_cancelled_payment_is_resumable_and_resumed_payment_pays(
    page: Page, demo_server: DemoServer
) -> None:
    """Cancel: the order stays pending behind the resume banner; a failed payment (no Stars)
    leaves it so too; resumed and paid, it is paid and the banner goes."""
    order_id = await buy(page)
    await page.click("#invoice-cancel")
    await expect(page.locator("#resume")).to_be_visible()
    await expect(status_cell(page, order_id)).to_have_text("pending")
    await page.click("#resume-button")
    await page.click("#invoice-fail")
    await expect(page.locator("#invoice")).to_be_hidden()
    await expect(page.locator("#resume")).to_be_visible()
    assert (await query_order(demo_server, order_id)).state == payment_pb2.Order.PENDING
    await page.click("#resume-button")
    await page.click("#invoice-pay")
    await expect(status_cell(page, order_id)).to_have_text("paid")
    await expect(page.locator("#resume")).to_be_hidden()
    assert (await query_order(demo_server, order_id)).state == payment_pb2.Order.PAID
    await expect(page.locator("#orders tr")).to_have_count(1)  # resumed, not bought again


async def test_a_price_tampered_in_the_pages_request_is_refused_with_the_catalogs_reason(
    page: Page,
) -> None:
    """The browser asks 1 Star for a 5-Star item: the edge refuses it (PRICE_MISMATCH), the page
    says why, and no order is made."""
    sent: list[dict[str, object]] = []

    async def cheaper(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        sent.append({**body, "amount": 1})
        await route.continue_(post_data=json.dumps(sent[-1]))

    await page.route("**/v1/createTgPayment", cheaper)
    await page.click(f"{ITEM} button")
    await expect(page.locator("#error")).to_contain_text("PRICE_MISMATCH")
    assert [(body["label"], body["amount"]) for body in sent] == [("item", 1)]
    await expect(page.locator("#invoice")).to_be_hidden()
    await expect(page.locator("#orders tr")).to_have_count(0)
    await expect(page.locator("#resume")).to_be_hidden()


async def test_a_second_user_on_the_same_page_never_sees_the_first_users_orders(
    page: Page, demo_server: DemoServer
) -> None:
    """User 42 buys and leaves the payment pending; user 43 on the same page sees no order and
    no banner, even when the page is made to ask the edge for 42's order by id."""
    order_id = await buy(page)
    await page.click("#invoice-cancel")
    await expect(page.locator("#resume")).to_be_visible()
    # The page remembers its orders per user; put 42's order in 43's list, so that only the
    # edge's owner-only reads stand between 43 and it.
    key = f"portex-demo:orders:{demo_server.application_id}:43"
    await page.evaluate(
        "([k, id]) => localStorage.setItem(k, JSON.stringify([id]))", [key, order_id]
    )
    await page.select_option("#user", "43")
    await page.wait_for_selector("body[data-user='43']")
    await expect(page.locator("#no-orders")).to_be_visible()
    await expect(page.locator("#orders tr")).to_have_count(0)
    await expect(page.locator("#resume")).to_be_hidden()
    await expect(page.locator("#error")).to_be_hidden()
    await page.select_option("#user", "42")
    await page.wait_for_selector("body[data-user='42']")
    await expect(status_cell(page, order_id)).to_have_text("pending")
    await expect(page.locator("#resume")).to_be_visible()


async def test_the_banner_prints_the_demo_pages_address_first(demo_server: DemoServer) -> None:
    """`make run`'s banner opens with the page's address, and that address serves the page."""
    banner = [line for line in demo_server.process.log_text().splitlines() if line.strip()]
    first = next(line for line in banner if not line.startswith("{"))  # log lines are JSON
    assert first.split()[:3] == ["Demo", "Mini", "App"] and demo_server.page_url in first
