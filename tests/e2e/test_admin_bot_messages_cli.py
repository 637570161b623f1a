"""`portex-pay admin show-bot-messages / set-bot-messages` as an operator runs them (real
processes): one JSON object on success, one `error: ...` line (exit 1) otherwise."""

from __future__ import annotations

from portex_pay.app import PortexApp
from tests.e2e.test_admin_edge_cli import admin, new_app, refused


async def test_show_and_set_bot_messages(database_url, fake_telegram, service: PortexApp):
    app_id, _ = await new_app(database_url, fake_telegram)
    code, shown, err = await admin(
        database_url, fake_telegram, "show-bot-messages", "--app", app_id
    )
    assert code == 0, err
    assert shown["application_id"] == app_id and shown["support_text_default"] is True
    assert shown["buyer_messages"] is False
    code, changed, err = await admin(
        database_url, fake_telegram, "set-bot-messages", "--app", app_id,
        "--support-text", "Mail help@example.com", "--buyer-messages", "on",
        "--paid-message", "Thanks for {title}",
    )  # fmt: skip
    assert code == 0, err
    assert changed["support_text"] == "Mail help@example.com"
    assert changed["buyer_messages"] is True and changed["paid_message"] == "Thanks for {title}"
    stored = await service.pool.fetchrow(
        "SELECT support_text, buyer_messages, paid_message FROM applications WHERE id = $1::uuid",
        app_id,
    )
    assert stored is not None
    assert tuple(stored) == ("Mail help@example.com", True, "Thanks for {title}")
    code, reset, err = await admin(
        database_url, fake_telegram, "set-bot-messages", "--app", app_id,
        "--default", "support-text", "--default", "paid-message",
    )  # fmt: skip
    assert code == 0, err
    assert reset["support_text_default"] and reset["paid_message_default"]
    assert reset["buyer_messages"] is True  # unchanged


async def test_bad_bot_messages_are_refused_with_one_line(database_url, fake_telegram):
    app_id, _ = await new_app(database_url, fake_telegram)
    error = await refused(
        database_url, fake_telegram, "set-bot-messages", "--app", app_id,
        "--terms-text", "x" * 4097,
    )  # fmt: skip
    assert "--terms-text" in error and "4096" in error
    error = await refused(database_url, fake_telegram, "set-bot-messages", "--app", app_id)
    assert "nothing to change" in error
    error = await refused(
        database_url, fake_telegram, "set-bot-messages", "--app", app_id,
        "--terms-text", "T", "--default", "terms-text",
    )  # fmt: skip
    assert "--terms-text" in error
    missing = "00000000-0000-0000-0000-000000000000"
    error = await refused(database_url, fake_telegram, "show-bot-messages", "--app", missing)
    assert f"no application {missing}" in error
