"""The callback operator commands as an operator runs them (real processes, JSON out):
`portex-pay admin rotate-signing-secret`, `admin callbacks --failed` and `admin replay-callback`.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import standardwebhooks
from aiohttp import web

from portex_pay.adapters.http_guard import HttpPoster
from portex_pay.adapters.postgres.callbacks import CallbackRepository
from portex_pay.app import PortexApp
from portex_pay.domain.callbacks import standard_webhooks_secret
from portex_pay.service.callbacks import CallbackDispatcher
from tests.conftest import DATA_KEYS, TestApp, stored_secret
from tests.e2e.test_admin_cli import admin
from tests.integration.helpers import pay_request


async def _new_app(database_url: str, fake_telegram) -> str:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code, created, err = await admin(database_url, fake_telegram, "create-app", "--name", name)
    assert code == 0, err
    application_id: str = created["application_id"]
    return application_id


async def test_rotate_signing_secret_prints_the_new_secret_and_keeps_the_old_one_for_the_overlap(
    database_url, fake_telegram, service: PortexApp
):
    app_id = await _new_app(database_url, fake_telegram)
    _, before, _ = await admin(database_url, fake_telegram, "signing-secret", "--app", app_id)
    old = before["signing_secret"]
    assert base64.b64decode(before["standard_webhooks_secret"].removeprefix("whsec_")) == (
        old.encode()
    )

    code, rotated, err = await admin(
        database_url, fake_telegram, "rotate-signing-secret", "--app", app_id, "--overlap", "24h"
    )
    assert code == 0, err
    new = rotated["signing_secret"]
    assert set(rotated) == {
        "application_id",
        "signing_secret",
        "standard_webhooks_secret",
        "previous_signs_until",
    }
    assert new != old and rotated["application_id"] == app_id
    assert rotated["standard_webhooks_secret"] == (
        "whsec_" + base64.b64encode(new.encode()).decode()
    )
    row = await service.pool.fetchrow(
        "SELECT signing_secret, previous_signing_secret, previous_signing_secret_until"
        " FROM applications WHERE id = $1::uuid",
        app_id,
    )
    assert row is not None
    # Stored sealed (neither secret is in the row as it is), each opening to its secret.
    assert old not in row.values() and new not in row.values()
    assert await stored_secret(service.pool, app_id, "signing_secret") == new
    assert await stored_secret(service.pool, app_id, "previous_signing_secret") == old
    until = datetime.fromisoformat(rotated["previous_signs_until"])
    assert until == row["previous_signing_secret_until"]
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(hours=24)
    _, after, _ = await admin(database_url, fake_telegram, "signing-secret", "--app", app_id)
    assert after["signing_secret"] == new
    assert new not in err and old not in err  # printed once, on stdout; never logged


async def test_an_overlap_of_zero_retires_a_leaked_secret_at_once(
    database_url, fake_telegram, service: PortexApp
):
    app_id = await _new_app(database_url, fake_telegram)
    code, rotated, err = await admin(
        database_url, fake_telegram, "rotate-signing-secret", "--app", app_id, "--overlap", "0"
    )
    assert code == 0, err
    still_signing = await service.pool.fetchval(
        "SELECT previous_signing_secret_until > now() FROM applications WHERE id = $1::uuid",
        app_id,
    )
    assert still_signing is False
    assert datetime.fromisoformat(rotated["previous_signs_until"]) <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("overlap", "message"),
    [("24", "invalid --overlap"), ("-1h", "invalid --overlap"), ("400d", "invalid --overlap")],
)
async def test_a_bad_overlap_is_refused_and_nothing_rotates(
    database_url, fake_telegram, service: PortexApp, overlap: str, message: str
):
    app_id = await _new_app(database_url, fake_telegram)
    code, _, err = await admin(
        database_url,
        fake_telegram,
        "rotate-signing-secret",
        "--app",
        app_id,
        f"--overlap={overlap}",
    )
    assert (code, message in err) == (1, True), err
    previous = await service.pool.fetchval(
        "SELECT previous_signing_secret FROM applications WHERE id = $1::uuid", app_id
    )
    assert previous is None


async def test_rotating_the_secret_of_no_application_is_refused(database_url, fake_telegram):
    missing = str(uuid.uuid4())
    code, _, err = await admin(
        database_url, fake_telegram, "rotate-signing-secret", "--app", missing
    )
    assert code == 1
    assert f"no application {missing}" in err


class Receiver:
    """A callback receiver on a loopback port answering `status` (the test changes it)."""

    def __init__(self) -> None:
        self.status = 503
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), dict(request.headers)))
        return web.Response(status=self.status)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/cb", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/cb"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def _deliver_all(service: PortexApp) -> None:
    """One dispatcher, one attempt per delivery (max_attempts=1: a failure gives up), until
    nothing is due."""
    async with aiohttp.ClientSession() as session:
        dispatcher = CallbackDispatcher(
            CallbackRepository(service.pool, DATA_KEYS),
            HttpPoster(session),
            timeout=5.0,
            max_attempts=1,
        )
        for _ in range(10):
            if await dispatcher.step() == 0:
                return
    raise AssertionError("deliveries still due after 10 batches")


async def test_failed_deliveries_are_listed_replayed_once_and_delivered_ones_refused(
    database_url, fake_telegram, service: PortexApp, stub, app: TestApp, make_app
):
    other = await make_app()
    # Deliveries other tests left pending are parked out of this test's dispatcher's reach.
    await service.pool.execute(
        "UPDATE callback_deliveries SET next_attempt_at = 'infinity' WHERE state = 'pending'"
    )
    async with Receiver() as receiver:
        paid = await stub.Pay(pay_request(callback_url=receiver.url), metadata=app.metadata)
        await _deliver_all(service)  # created, then invoice_created: both given up
        first, second = [
            row["id"]
            for row in await service.pool.fetch(
                "SELECT id FROM events WHERE tg_payment_id = $1 ORDER BY id", paid.tg_payment_id
            )
        ]

        code, listed, err = await admin(
            database_url, fake_telegram, "callbacks", "--failed", "--app", app.id
        )
        assert code == 0, err
        assert [c["event_id"] for c in listed["failed"]] == [str(second), str(first)]
        assert listed["next_before"] is None
        shown = listed["failed"][1]
        assert (shown["application_id"], shown["url"], shown["event_type"]) == (
            app.id,
            receiver.url,
            "order.created",
        )
        assert (shown["attempts"], shown["last_status"], shown["last_error"]) == (
            1,
            503,
            "HTTP 503",
        )
        assert shown["failed_at"] is not None and shown["occurred_at"] is not None

        # Keyset pages of one; the listing of all applications has them too.
        _, page, _ = await admin(
            database_url, fake_telegram, "callbacks", "--failed", "--app", app.id, "--limit", "1"
        )
        assert ([c["event_id"] for c in page["failed"]], page["next_before"]) == (
            [str(second)],
            str(second),
        )
        _, rest, _ = await admin(
            database_url, fake_telegram, "callbacks", "--failed", "--app", app.id,
            "--limit", "1", "--before", page["next_before"],
        )  # fmt: skip
        assert [c["event_id"] for c in rest["failed"]] == [str(first)]
        _, everyone, _ = await admin(database_url, fake_telegram, "callbacks", "--failed")
        assert {str(first), str(second)} <= {c["event_id"] for c in everyone["failed"]}

        # Another application sees none of them, and cannot replay them.
        _, theirs, _ = await admin(
            database_url, fake_telegram, "callbacks", "--failed", "--app", other.id
        )
        assert theirs == {"failed": [], "next_before": None}
        code, _, err = await admin(
            database_url, fake_telegram, "replay-callback", str(first), "--app", other.id
        )
        assert code == 1
        assert f"no callback delivery for event {first} of application {other.id}" in err

        # Replayed: due now with a fresh schedule; a second replay changes nothing.
        replays = [
            await admin(database_url, fake_telegram, "replay-callback", str(first), "--app", app.id)
            for _ in range(2)
        ]
        assert [(code, out) for code, out, _ in replays] == [
            (0, {"event_id": str(first), "requeued": True, "state": "pending"}),
            (0, {"event_id": str(first), "requeued": False, "state": "pending"}),
        ]
        row = await service.pool.fetchrow(
            "SELECT state, attempts, failed_at FROM callback_deliveries WHERE event_id = $1", first
        )
        assert row is not None
        assert (row["state"], row["attempts"], row["failed_at"]) == ("pending", 0, None)

        receiver.status = 200
        await _deliver_all(service)
        body, headers = receiver.received[-1]
        assert headers["webhook-id"] == str(first)
        secret = await stored_secret(service.pool, app.id, "signing_secret")
        standardwebhooks.Webhook(standard_webhooks_secret(secret)).verify(body, headers)
        state = await service.pool.fetchval(
            "SELECT state FROM callback_deliveries WHERE event_id = $1", first
        )
        assert state == "delivered"

    # A delivered callback is not sent again; the other failed one is still listed.
    code, _, err = await admin(database_url, fake_telegram, "replay-callback", str(first))
    assert code == 1
    assert f"the callback of event {first} was delivered at" in err
    _, listed, _ = await admin(
        database_url, fake_telegram, "callbacks", "--failed", "--app", app.id
    )
    assert [c["event_id"] for c in listed["failed"]] == [str(second)]


async def test_replaying_no_such_delivery_is_refused(database_url, fake_telegram):
    code, _, err = await admin(database_url, fake_telegram, "replay-callback", str(2**62))
    assert code == 1
    assert f"no callback delivery for event {2**62}" in err


@pytest.mark.parametrize(
    "args",
    [
        ["replay-callback", "0"],
        ["replay-callback", "abc"],
        ["replay-callback", str(2**63)],
        ["callbacks"],
        ["callbacks", "--failed", "--limit", "0"],
        ["callbacks", "--failed", "--before", "x"],
        ["callbacks", "--failed", "--app", "not-a-uuid"],
    ],
)
async def test_bad_callback_command_arguments_exit_2_with_usage(
    database_url, fake_telegram, args: list[str]
):
    code, _, err = await admin(database_url, fake_telegram, *args)
    assert code == 2
    assert "usage:" in err


async def test_a_listing_page_larger_than_the_bound_is_refused(database_url, fake_telegram):
    code, _, err = await admin(
        database_url, fake_telegram, "callbacks", "--failed", "--limit", "1001"
    )
    assert code == 1
    assert "--limit must be from 1 to 1000" in err
