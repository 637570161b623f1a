"""`portex-pay admin ...` as an operator runs it: a real process, JSON out, tokens masked."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

import aiohttp
import grpc
import pytest

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.app import PortexApp
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEY, PAYLOAD_SECRET, TestApp, new_bot_token, stored_secret
from tests.integration.helpers import eventually, pay_request


async def admin(
    database_url: str, fake: FakeBotApi, *args: str, env: dict[str, str] | None = None
) -> tuple[int, Any, str]:
    extra = env or {}
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORTEX_TELEGRAM_API_URL": fake.base_url,
        "PORTEX_LOG_FORMAT": "json",
        "PORTEX_PAYLOAD_SECRET": PAYLOAD_SECRET,
        "PORTEX_DATA_KEY": DATA_KEY,
        **extra,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portex_pay", "admin", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    text = out.decode()
    return process.returncode, json.loads(text) if text.strip() else None, err.decode()


async def test_create_app_prints_its_id_and_a_working_key_and_checks_the_token(
    database_url, fake_telegram, stub
):
    token = new_bot_token()
    fake_telegram.add_bot(token, username="shop_bot")
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code, created, err = await admin(
        database_url, fake_telegram, "create-app", "--name", name, "--bot-token", token
    )
    assert code == 0, err
    assert set(created) == {"application_id", "api_key"}
    assert created["api_key"].startswith("ppk_")
    assert fake_telegram.calls_for("getMe", token=token)
    metadata = (("authorization", f"Bearer {created['api_key']}"),)
    resumed = await stub.ResumePayment(
        payment_pb2.ResumePaymentRequest(tg_use_id=1), metadata=metadata
    )
    assert not resumed.has_pending_payment


async def test_an_invalid_bot_token_is_refused_and_nothing_is_created(
    database_url, fake_telegram, service: PortexApp
):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code, out, err = await admin(
        database_url, fake_telegram, "create-app", "--name", name, "--bot-token", new_bot_token()
    )
    assert code == 1
    assert out is None
    assert "Unauthorized" in err
    assert (
        await service.pool.fetchval("SELECT count(*) FROM applications WHERE name = $1", name) == 0
    )


async def test_list_apps_masks_tokens_and_shows_key_ids(database_url, fake_telegram):
    token = new_bot_token()
    fake_telegram.add_bot(token)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code, created, _ = await admin(
        database_url, fake_telegram, "create-app", "--name", name, "--bot-token", token
    )
    assert code == 0
    code, apps, _ = await admin(database_url, fake_telegram, "list-apps")
    assert code == 0
    mine = next(a for a in apps if a["application_id"] == created["application_id"])
    assert mine["name"] == name
    assert mine["bot_token"] == f"{token.split(':')[0]}:…{token[-4:]}"
    assert len(mine["api_keys"]) == 1 and mine["api_keys"][0]["key_id"].startswith("key_")
    assert token.split(":")[1] not in json.dumps(apps)
    assert created["api_key"] not in json.dumps(apps)


async def test_rotate_then_revoke_keys_from_the_command_line(database_url, fake_telegram, service):
    token = new_bot_token()
    fake_telegram.add_bot(token)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _, created, _ = await admin(
        database_url, fake_telegram, "create-app", "--name", name, "--bot-token", token
    )
    app_id = created["application_id"]
    code, rotated, _ = await admin(database_url, fake_telegram, "rotate-key", "--app", app_id)
    assert code == 0 and rotated["api_key"] != created["api_key"]
    _, apps, _ = await admin(database_url, fake_telegram, "list-apps")
    keys = next(a for a in apps if a["application_id"] == app_id)["api_keys"]
    assert len(keys) == 2
    first_key_id = keys[0]["key_id"]
    code, revoked, _ = await admin(
        database_url, fake_telegram, "revoke-key", "--app", app_id, "--key-id", first_key_id
    )
    assert (code, revoked["revoked"]) == (0, first_key_id)
    code, _, err = await admin(
        database_url, fake_telegram, "revoke-key", "--app", app_id, "--key-id", first_key_id
    )
    assert code == 1 and "no live key" in err
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        await stub.ResumePayment(
            payment_pb2.ResumePaymentRequest(tg_use_id=1),
            metadata=(("authorization", f"Bearer {rotated['api_key']}"),),
        )

        async def refused() -> bool:
            try:
                await stub.ResumePayment(
                    payment_pb2.ResumePaymentRequest(tg_use_id=1),
                    metadata=(("authorization", f"Bearer {created['api_key']}"),),
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                return True
            return False

        # Revocation reaches the server within its auth cache TTL (0.2 s here).
        await eventually(refused, timeout=2.0, interval=0.05, what="the revoked key refused")


async def test_set_bot_token_checks_it_with_getme_and_binds_it(
    database_url, fake_telegram, service
):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code, created, _ = await admin(database_url, fake_telegram, "create-app", "--name", name)
    assert code == 0
    token = new_bot_token()
    code, _, err = await admin(
        database_url, fake_telegram, "set-bot-token", "--app", created["application_id"],
        "--bot-token", token,
    )  # fmt: skip
    assert code == 1 and "Unauthorized" in err
    fake_telegram.add_bot(token, username="bound_bot")
    code, bound, err = await admin(
        database_url, fake_telegram, "set-bot-token", "--app", created["application_id"],
        "--bot-token", token,
    )  # fmt: skip
    assert code == 0, err
    assert (bound["bot_id"], bound["bot_username"]) == (int(token.split(":")[0]), "bound_bot")
    assert token not in json.dumps(bound)


@pytest.mark.parametrize("args", [["rotate-key", "--app", "not-a-uuid"], ["create-app"]])
async def test_bad_arguments_exit_2_with_usage(database_url, fake_telegram, args):
    code, _, err = await admin(database_url, fake_telegram, *args)
    assert code == 2
    assert "usage:" in err


async def test_signing_secret_prints_the_key_that_signs_callbacks(
    database_url, fake_telegram, service
):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _, created, _ = await admin(database_url, fake_telegram, "create-app", "--name", name)
    code, shown, _ = await admin(
        database_url, fake_telegram, "signing-secret", "--app", created["application_id"]
    )
    stored = await stored_secret(service.pool, created["application_id"], "signing_secret")
    assert (code, shown["signing_secret"]) == (0, stored)


async def test_reconcile_records_a_payment_whose_update_never_reached_us(
    database_url, fake_telegram, stub, make_app
):
    # Polling mode, and no poller runs here: the bot's updates stay at Telegram, unseen.
    app: TestApp = await make_app(updates="polling")
    paid = await stub.Pay(pay_request(tg_use_id=8080), metadata=app.metadata)
    paying = asyncio.ensure_future(fake_telegram.pay_invoice(paid.tg_payment_url, 8080))
    # Someone else answers the checkout (another bot instance, say), so Telegram charges.
    bot = f"{fake_telegram.base_url}/bot{app.bot_token}"
    async with aiohttp.ClientSession() as session:
        query = None
        while query is None:
            async with session.post(f"{bot}/getUpdates", json={"timeout": 5}) as response:
                updates = (await response.json())["result"]
            query = next(
                (u["pre_checkout_query"] for u in updates if "pre_checkout_query" in u), None
            )
        async with session.post(
            f"{bot}/answerPreCheckoutQuery", json={"pre_checkout_query_id": query["id"], "ok": True}
        ) as response:
            assert (await response.json())["ok"] is True
    assert (await paying).approved

    code, report, err = await admin(database_url, fake_telegram, "reconcile", "--app", app.id)
    assert code == 0, err
    assert (report["payments"], report["recorded"], report["already_known"]) == (1, 1, 0)
    assert (report["start"], report["checkpoint"], report["pages"]) == (0, 1, 1)
    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=paid.tg_payment_id), metadata=app.metadata
    )
    assert (order.state, order.status) == (payment_pb2.Order.PAID, 1)

    # The ledger's checkpoint is in PostgreSQL: the next run reads on from it, finding nothing.
    code, again, _ = await admin(database_url, fake_telegram, "reconcile", "--app", app.id)
    assert (code, again["transactions"], again["recorded"], again["start"]) == (0, 0, 0, 1)
    offsets = [
        int(call.params["offset"])
        for call in fake_telegram.calls_for("getStarTransactions", token=app.bot_token)
    ]
    assert offsets == [0, 1]


async def test_set_webhook_registers_our_url_secret_and_update_kinds(
    database_url, fake_telegram, service
):
    token = new_bot_token()
    fake_telegram.add_bot(token)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _, created, _ = await admin(
        database_url, fake_telegram, "create-app", "--name", name, "--bot-token", token
    )
    app_id = created["application_id"]
    code, _, err = await admin(database_url, fake_telegram, "set-webhook", "--app", app_id)
    assert code == 1 and "PORTEX_PUBLIC_URL" in err
    code, set_, err = await admin(
        database_url, fake_telegram, "set-webhook", "--app", app_id,
        env={"PORTEX_PUBLIC_URL": "https://pay.example.com/"},
    )  # fmt: skip
    assert code == 0, err
    assert set_["webhook_url"] == f"https://pay.example.com/telegram/webhook/{app_id}"
    call = fake_telegram.calls_for("setWebhook", token=token)[-1]
    secret = await stored_secret(service.pool, app_id, "webhook_secret")
    assert call.params["secret_token"] == secret
    assert set(call.params["allowed_updates"]) >= {"message", "pre_checkout_query"}

    code, mode, _ = await admin(
        database_url, fake_telegram, "set-updates", "--app", app_id, "--mode", "polling"
    )
    assert (code, mode["updates"]) == (0, "polling")
    stored = await service.pool.fetchval(
        "SELECT updates_mode FROM applications WHERE id = $1::uuid", app_id
    )
    assert stored == "polling"


async def test_binding_a_bot_in_webhook_mode_registers_the_webhook(database_url, fake_telegram):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _, created, _ = await admin(database_url, fake_telegram, "create-app", "--name", name)
    app_id = created["application_id"]
    await admin(database_url, fake_telegram, "set-updates", "--app", app_id, "--mode", "webhook")
    token = new_bot_token()
    fake_telegram.add_bot(token)
    code, bound, err = await admin(
        database_url, fake_telegram, "set-bot-token", "--app", app_id, "--bot-token", token,
        env={"PORTEX_PUBLIC_URL": "https://pay.example.com"},
    )  # fmt: skip
    assert code == 0, err
    assert bound["webhook_url"] == f"https://pay.example.com/telegram/webhook/{app_id}"
    assert fake_telegram.calls_for("setWebhook", token=token)


# --- Conflicts and bad input are one clear line, never a traceback (issue 7, defects 3 and 11) ---


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


async def _app_with_bot(database_url: str, fake: FakeBotApi) -> tuple[str, str, str, str]:
    """(application id, name, bot token, bot username) of a new application with its own bot."""
    token = new_bot_token()
    username = f"b{uuid.uuid4().hex[:8]}_bot"
    fake.add_bot(token, username=username)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code, created, err = await admin(
        database_url, fake, "create-app", "--name", name, "--bot-token", token
    )
    assert code == 0, err
    return created["application_id"], name, token, username


async def test_set_bot_token_of_a_bot_bound_elsewhere_names_the_conflict(
    database_url, fake_telegram, service: PortexApp
):
    holder_id, holder_name, token, username = await _app_with_bot(database_url, fake_telegram)
    _, other, _ = await admin(
        database_url, fake_telegram, "create-app", "--name", f"cli-{uuid.uuid4().hex[:8]}"
    )
    code, out, err = await admin(
        database_url, fake_telegram, "set-bot-token", "--app", other["application_id"],
        "--bot-token", token,
    )  # fmt: skip
    assert (code, out) == (1, None)
    bot_id = int(token.split(":")[0])
    assert _one_error_line(err) == (
        f"error: bot @{username} (id {bot_id}) is already bound to application "
        f"{holder_id} ({holder_name!r})"
    )
    assert token.split(":")[1] not in err
    bound = await service.pool.fetchval(
        "SELECT bot_id FROM applications WHERE id = $1::uuid", other["application_id"]
    )
    assert bound is None


async def test_create_app_with_a_bot_bound_elsewhere_names_the_conflict(
    database_url, fake_telegram, service: PortexApp
):
    holder_id, holder_name, token, username = await _app_with_bot(database_url, fake_telegram)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code, out, err = await admin(
        database_url, fake_telegram, "create-app", "--name", name, "--bot-token", token
    )
    assert (code, out) == (1, None)
    assert _one_error_line(err) == (
        f"error: bot @{username} (id {token.split(':')[0]}) is already bound to application "
        f"{holder_id} ({holder_name!r})"
    )
    assert token.split(":")[1] not in err
    assert (
        await service.pool.fetchval("SELECT count(*) FROM applications WHERE name = $1", name) == 0
    )


@pytest.mark.parametrize("name", ["evil\x1b[2Jname", "two\nlines", "del\x7f", "   "])
async def test_create_app_refuses_a_name_with_control_characters(
    database_url, fake_telegram, service: PortexApp, name: str
):
    code, out, err = await admin(database_url, fake_telegram, "create-app", "--name", name)
    assert (code, out) == (1, None)
    assert _one_error_line(err).startswith("error: invalid application name: ")
    assert (
        await service.pool.fetchval("SELECT count(*) FROM applications WHERE name = $1", name) == 0
    )


async def test_the_unfulfilled_order_policy_is_set_shown_and_switched_off(
    database_url, fake_telegram, service
):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _, created, _ = await admin(database_url, fake_telegram, "create-app", "--name", name)
    app_id = created["application_id"]

    async def listed() -> dict[str, Any]:
        code, apps, _ = await admin(database_url, fake_telegram, "list-apps")
        assert code == 0
        mine: dict[str, Any] = next(a for a in apps if a["application_id"] == app_id)
        return mine

    assert (await listed())["unfulfilled_refund_after"] is None  # off by default
    code, shown, err = await admin(
        database_url, fake_telegram, "set-unfulfilled-refund", "--app", app_id, "--after", "72h"
    )
    assert code == 0, err
    assert (shown["application_id"], shown["unfulfilled_refund_after"]) == (app_id, "3d")
    since = shown["unfulfilled_refund_since"]
    assert since is not None
    # A new deadline keeps the time the policy was switched on.
    code, changed, _ = await admin(
        database_url, fake_telegram, "set-unfulfilled-refund", "--app", app_id, "--after", "1d12h"
    )
    assert (code, changed["unfulfilled_refund_after"]) == (0, "1d12h")
    assert changed["unfulfilled_refund_since"] == since
    mine = await listed()
    assert (mine["unfulfilled_refund_after"], mine["unfulfilled_refund_since"]) == ("1d12h", since)
    stored = await service.pool.fetchval(
        "SELECT extract(epoch FROM unfulfilled_refund_after) FROM applications WHERE id = $1::uuid",
        app_id,
    )
    assert stored == 36 * 3600

    code, off, _ = await admin(
        database_url, fake_telegram, "set-unfulfilled-refund", "--app", app_id, "--off"
    )
    assert (code, off["unfulfilled_refund_after"], off["unfulfilled_refund_since"]) == (
        0,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["--after", "72"], 1, "invalid deadline"),
        (["--after", "400d"], 1, "invalid deadline"),
        (["--after", "72h", "--off"], 2, "not allowed with"),
        ([], 2, "one of the arguments"),
    ],
)
async def test_a_bad_unfulfilled_order_policy_is_refused(
    database_url, fake_telegram, args, exit_code, message
):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _, created, _ = await admin(database_url, fake_telegram, "create-app", "--name", name)
    code, _, err = await admin(
        database_url,
        fake_telegram,
        "set-unfulfilled-refund",
        "--app",
        created["application_id"],
        *args,
    )
    assert code == exit_code
    assert message in err


async def test_the_unfulfilled_order_policy_of_no_application_is_refused(
    database_url, fake_telegram
):
    missing = str(uuid.uuid4())
    code, _, err = await admin(
        database_url, fake_telegram, "set-unfulfilled-refund", "--app", missing, "--after", "3d"
    )
    assert code == 1
    assert f"no application {missing}" in err
