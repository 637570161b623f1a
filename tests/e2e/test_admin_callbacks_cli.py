"""The callback operator commands as an operator runs them (real processes, JSON out):
`portex-pay admin rotate-signing-secret`, `admin callbacks --failed` and `admin replay-callback`.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from portex_pay.app import PortexApp
from tests.e2e.test_admin_cli import admin


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
    assert (row["signing_secret"], row["previous_signing_secret"]) == (new, old)
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
