"""Secrets at rest: what a database dump of a running service holds, `admin rotate-data-key` as an
operator runs it, and a start with a wrong or missing data key.

Each test has a database of its own (`empty_db`): rotating re-seals every row of a database, which
the session's shared service must not see.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.relay import RelayRepository
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay.domain.sealing import DataKeys, SealingError, new_data_key
from portex_pay.domain.telegram import bot_id_of_token
from portex_pay_devtools.fake_bot_api import FakeBotApi
from portex_pay_devtools.pgcluster import find_postgres_bindir
from tests.conftest import DATA_KEY, DATA_KEYS, make_settings, new_bot_token
from tests.e2e.test_admin_cli import admin

pytestmark = pytest.mark.timeout(120)

NEW_KEY = new_data_key()
NEW_KEYS = DataKeys(base64.b64decode(NEW_KEY))


@asynccontextmanager
async def serving(database_url: str, fake: FakeBotApi, data_key: str) -> AsyncIterator[PortexApp]:
    app = PortexApp(make_settings(database_url, fake.base_url, data_key=data_key))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def pg_dump(database_url: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(find_postgres_bindir() / "pg_dump"), "--data-only", f"--dbname={database_url}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


def leaked(dump: str, secrets: list[str]) -> list[str]:
    """The secrets found in the dump as they are or in base64 (standard or URL-safe)."""
    forms = {}
    for secret in secrets:
        encoded = base64.b64encode(secret.encode())
        for form in (secret, encoded.decode(), base64.urlsafe_b64encode(secret.encode()).decode()):
            forms[form.rstrip("=")] = secret
    return sorted({secret for form, secret in forms.items() if form in dump})


async def stored_secrets(app: PortexApp, keys: DataKeys, fake: FakeBotApi) -> list[str]:
    """An application with a bot and a relay webhook, made through the real use cases, its
    signing secret rotated once; every plaintext secret it stored (bot token, webhook secret,
    the current and the previous signing secret, relay webhook secret)."""
    token = new_bot_token()
    fake.add_bot(token)
    session = await new_session()
    try:
        admin_case = application_admin(
            app.pool, BotApiClient(session, fake.base_url, 5.0), data_keys=keys
        )
        created, _key = await admin_case.create_app(f"sealed-{uuid.uuid4().hex[:8]}", token)
        previous = await admin_case.signing_secret(created.id)
        signing, _until = await admin_case.rotate_signing_secret(created.id, "24h")
    finally:
        await session.close()
    relay_secret = f"relay-{uuid.uuid4().hex}"
    relay = RelayRepository(app.pool, keys)
    bot_id = bot_id_of_token(token)
    assert bot_id is not None
    await relay.enable(bot_id, created.id)
    await relay.set_webhook(bot_id, "https://bot.example/hook", relay_secret, drop_pending=False)
    return [
        token,
        token.partition(":")[2],
        created.webhook_secret,
        signing,
        relay_secret,
        previous,
    ]


async def test_a_dump_holds_no_secret_in_plain_text_also_after_rotate_data_key(
    empty_db: str, fake_telegram: FakeBotApi
):
    """pg_dump --data-only of a running service's database shows no bot token, webhook secret,
    signing secret (current or previous) or relay webhook secret, nor their base64; after
    `admin rotate-data-key` (old key retired) neither, every value is sealed under the new key,
    and a service that holds only the new key serves them."""
    async with serving(empty_db, fake_telegram, DATA_KEY) as app:
        secrets = await stored_secrets(app, DATA_KEYS, fake_telegram)
        assert leaked(await pg_dump(empty_db), secrets) == []

        code, rotated, err = await admin(
            empty_db, fake_telegram, "rotate-data-key",
            env={"PORTEX_DATA_KEY": NEW_KEY, "PORTEX_DATA_KEYS_RETIRED": DATA_KEY},
        )  # fmt: skip
        assert code == 0, err
        assert rotated == {"resealed": 5, "key_id": NEW_KEYS.current_id}
        dump = await pg_dump(empty_db)
        assert leaked(dump, secrets) == []
        assert f"v1.{DATA_KEYS.current_id}." not in dump
        assert f"v1.{NEW_KEYS.current_id}." in dump
        code, again, err = await admin(
            empty_db, fake_telegram, "rotate-data-key",
            env={"PORTEX_DATA_KEY": NEW_KEY, "PORTEX_DATA_KEYS_RETIRED": DATA_KEY},
        )  # fmt: skip
        assert (code, again) == (0, {"resealed": 0, "key_id": NEW_KEYS.current_id}), err

    async with serving(empty_db, fake_telegram, NEW_KEY) as app:
        bot_id = bot_id_of_token(secrets[0])
        assert bot_id is not None
        application = await app.wiring.applications.get_by_bot_id(bot_id)
        assert application is not None and application.bot is not None
        assert (application.bot.token, application.webhook_secret) == (secrets[0], secrets[2])
        relay_bot = await RelayRepository(app.pool, NEW_KEYS).get(bot_id)
        assert relay_bot is not None and relay_bot.webhook_secret == secrets[4]


async def test_plaintext_left_by_an_earlier_version_is_sealed_at_start(
    empty_db: str, fake_telegram: FakeBotApi
):
    """Rows written in plain text before sealing existed are sealed by the next start, and read
    back as they were."""
    async with serving(empty_db, fake_telegram, DATA_KEY) as app:
        token = new_bot_token()
        application_id = await app.pool.fetchval(
            "INSERT INTO applications (name, bot_token, bot_id, webhook_secret, signing_secret)"
            " VALUES ('old', $1, $2, 'old-webhook-secret', 'old-signing-secret') RETURNING id",
            token,
            bot_id_of_token(token),
        )
    async with serving(empty_db, fake_telegram, DATA_KEY) as app:
        row = await app.pool.fetchrow(
            "SELECT bot_token, webhook_secret, signing_secret FROM applications WHERE id = $1",
            application_id,
        )
        assert row is not None
        assert all(value.startswith(f"v1.{DATA_KEYS.current_id}.") for value in row.values())
        loaded = await ApplicationRepository(app.pool, DATA_KEYS).get(application_id)
        assert loaded is not None and loaded.bot is not None
        assert (loaded.bot.token, loaded.webhook_secret) == (token, "old-webhook-secret")
        assert leaked(await pg_dump(empty_db), [token, "old-webhook-secret"]) == []


async def test_a_ciphertext_copied_to_another_application_does_not_open(
    empty_db: str, fake_telegram: FakeBotApi
):
    """Each sealed value is bound to its row: one application's sealed token written into
    another's row is refused when read, not taken for that application's token."""
    async with serving(empty_db, fake_telegram, DATA_KEY) as app:
        await stored_secrets(app, DATA_KEYS, fake_telegram)
        await stored_secrets(app, DATA_KEYS, fake_telegram)
        first, second = await app.pool.fetch("SELECT id, bot_token FROM applications ORDER BY id")
        await app.pool.execute(
            "UPDATE applications SET bot_token = $2 WHERE id = $1", second["id"], first["bot_token"]
        )
        repository = ApplicationRepository(app.pool, DATA_KEYS)
        with pytest.raises(SealingError, match="copied from another row"):
            await repository.get(second["id"])
        assert await repository.get(first["id"]) is not None


async def serve_exit(database_url: str, fake: FakeBotApi, **env: str) -> tuple[int, str]:
    """`portex-pay serve` with these variables: its exit code and stderr (it must not start).
    No PORTEX_* variable is inherited (an exported PORTEX_DATA_KEY would fill the missing key)."""
    inherited = {name: val for name, val in os.environ.items() if not name.startswith("PORTEX_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portex_pay", "serve", "--workers", "1",
        env={
            **inherited,
            "DATABASE_URL": database_url,
            "PORTEX_TELEGRAM_API_URL": fake.base_url,
            "PORTEX_PAYLOAD_SECRET": "p" * 32,
            "PORTEX_GRPC_ADDR": "127.0.0.1:0",
            "PORTEX_HTTP_ADDR": "127.0.0.1:0",
            **env,
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_missing_or_wrong_data_key_stops_the_start_with_a_clear_message(
    empty_db: str, fake_telegram: FakeBotApi
):
    """No key, a malformed key, or a key that does not open the stored secrets: `serve` exits
    at start with a message naming the problem (the missing key by its id), never the key."""
    code, err = await serve_exit(empty_db, fake_telegram)
    assert code == 2 and "PORTEX_DATA_KEY is required" in err
    code, err = await serve_exit(empty_db, fake_telegram, PORTEX_DATA_KEY="not-a-key")
    assert code == 2 and "PORTEX_DATA_KEY must be 32 bytes in base64" in err
    assert "not-a-key" not in err

    async with serving(empty_db, fake_telegram, DATA_KEY) as app:
        await stored_secrets(app, DATA_KEYS, fake_telegram)
    code, err = await serve_exit(empty_db, fake_telegram, PORTEX_DATA_KEY=NEW_KEY)
    assert code == 1, err
    missing = f"PORTEX_DATA_KEYS_RETIRED do not hold: {DATA_KEYS.current_id} (5 values)"
    assert missing in err
    assert DATA_KEY not in err and NEW_KEY not in err
