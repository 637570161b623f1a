"""Settings from the environment: defaults, and every problem reported at once."""

from __future__ import annotations

import pytest

from portex_pay.config import ConfigError, Settings

BASE = {"DATABASE_URL": "postgresql://u@localhost/db", "PORTEX_PAYLOAD_SECRET": "s" * 32}


def test_defaults_match_the_readme() -> None:
    settings = Settings.from_env(BASE)
    assert settings.grpc_addr == "127.0.0.1:50051"
    assert settings.http_addr == "127.0.0.1:8080"
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.max_amount == 10_000
    assert settings.order_ttl_seconds == 3600
    assert settings.idempotency_ttl_seconds >= 86_400


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "PORTEX_MAX_AMOUNT": "50",
            "PORTEX_ORDER_TTL": "60",
            "PORTEX_GRPC_ADDR": "0.0.0.0:1",
        }
    )
    assert (settings.max_amount, settings.order_ttl_seconds) == (50, 60)
    assert settings.grpc_addr == "0.0.0.0:1"


def test_every_problem_is_listed() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {
                "PORTEX_MAX_AMOUNT": "lots",
                "PORTEX_GRPC_ADDR": "nowhere",
                "PORTEX_LOG_FORMAT": "xml",
                "PORTEX_IDEMPOTENCY_TTL": "60",
            }
        )
    message = str(raised.value)
    for name in (
        "DATABASE_URL",
        "PORTEX_PAYLOAD_SECRET",
        "PORTEX_MAX_AMOUNT",
        "PORTEX_GRPC_ADDR",
        "PORTEX_LOG_FORMAT",
        "PORTEX_IDEMPOTENCY_TTL",
    ):
        assert name in message


def test_admin_commands_need_no_payload_secret() -> None:
    settings = Settings.from_env({"DATABASE_URL": BASE["DATABASE_URL"]}, serving=False)
    assert settings.database_url == BASE["DATABASE_URL"]


def test_repr_shows_no_secret() -> None:
    settings = Settings.from_env({**BASE, "DATABASE_URL": "postgresql://u:hunter2@localhost/db"})
    assert "hunter2" not in repr(settings)
    assert "s" * 32 not in repr(settings)


def test_update_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "PORTEX_TELEGRAM_UPDATES": "webhook",
            "PORTEX_PUBLIC_URL": "https://pay.example.com",
            "PORTEX_TELEGRAM_POLLERS": "false",
            "PORTEX_AUTO_REFUND": "no",
        }
    )
    assert (settings.telegram_updates, settings.public_url) == (
        "webhook",
        "https://pay.example.com",
    )
    assert (settings.telegram_pollers, settings.auto_refund) == (False, False)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {
                **BASE,
                "PORTEX_TELEGRAM_UPDATES": "carrier-pigeon",
                "PORTEX_TELEGRAM_POLLERS": "maybe",
                "PORTEX_POLL_TIMEOUT": "30",
                "PORTEX_POLL_LEASE": "20",
            }
        )
    for name in ("PORTEX_TELEGRAM_UPDATES", "PORTEX_TELEGRAM_POLLERS", "PORTEX_POLL_LEASE"):
        assert name in str(raised.value)


def test_grpc_receive_limit_is_read_and_bounded_below() -> None:
    assert Settings.from_env(BASE).grpc_max_receive_bytes == 65_536
    settings = Settings.from_env({**BASE, "PORTEX_GRPC_MAX_RECEIVE_BYTES": "16384"})
    assert settings.grpc_max_receive_bytes == 16_384
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, "PORTEX_GRPC_MAX_RECEIVE_BYTES": "16383"})
    assert "PORTEX_GRPC_MAX_RECEIVE_BYTES must be >= 16384" in str(raised.value)


def test_update_attempts_are_read_and_bounded_below() -> None:
    assert Settings.from_env(BASE).update_max_attempts == 10
    assert Settings.from_env({**BASE, "PORTEX_UPDATE_MAX_ATTEMPTS": "3"}).update_max_attempts == 3
    with pytest.raises(ConfigError):
        Settings.from_env({**BASE, "PORTEX_UPDATE_MAX_ATTEMPTS": "0"})


def test_edge_settings_and_the_init_data_key() -> None:
    from portex_pay.domain.init_data import PRODUCTION_PUBLIC_KEY, TEST_PUBLIC_KEY

    settings = Settings.from_env(BASE)
    assert settings.edge and settings.init_data_max_age == 86_400
    assert settings.init_data_key() == PRODUCTION_PUBLIC_KEY
    test_env = Settings.from_env({**BASE, "PORTEX_TELEGRAM_TEST_ENV": "true"})
    assert test_env.init_data_key() == TEST_PUBLIC_KEY
    own = Settings.from_env({**BASE, "PORTEX_INIT_DATA_PUBLIC_KEY": "ab" * 32})
    assert own.init_data_key() == bytes.fromhex("ab" * 32)
    assert Settings.from_env({**BASE, "PORTEX_INIT_DATA_PUBLIC_KEY": ""}).init_data_key() is None
    off = Settings.from_env({**BASE, "PORTEX_EDGE": "false", "PORTEX_EDGE_USER_RATE": "1"})
    assert (off.edge, off.edge_user_rate) == (False, 1.0)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {**BASE, "PORTEX_INIT_DATA_PUBLIC_KEY": "abcd", "PORTEX_EDGE_USER_BURST": "0"}
        )
    assert "PORTEX_INIT_DATA_PUBLIC_KEY" in str(raised.value)
    assert "PORTEX_EDGE_USER_BURST" in str(raised.value)


def test_the_edge_preflight_limit_is_read_and_bounded_below() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.edge_preflight_rate, settings.edge_preflight_burst) == (50.0, 200)
    own = Settings.from_env(
        {**BASE, "PORTEX_EDGE_PREFLIGHT_RATE": "2.5", "PORTEX_EDGE_PREFLIGHT_BURST": "7"}
    )
    assert (own.edge_preflight_rate, own.edge_preflight_burst) == (2.5, 7)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {**BASE, "PORTEX_EDGE_PREFLIGHT_RATE": "0", "PORTEX_EDGE_PREFLIGHT_BURST": "0"}
        )
    assert "PORTEX_EDGE_PREFLIGHT_RATE" in str(raised.value)
    assert "PORTEX_EDGE_PREFLIGHT_BURST" in str(raised.value)
