"""Settings from the environment: defaults, and every problem reported at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from portex_pay.config import ConfigError, Settings
from portex_pay.config import fields as settings_fields

BASE = {
    "DATABASE_URL": "postgresql://u@localhost/db",
    "PORTEX_PAYLOAD_SECRET": "s" * 32,
    "PORTEX_DATA_KEY": "a2V5LW9mLXRoaXJ0eS10d28tYnl0ZXMtZm9yLXRlc3Q=",
}


def test_defaults_match_the_readme() -> None:
    settings = Settings.from_env(BASE)
    assert settings.grpc.addr == "127.0.0.1:50051"
    assert settings.http.addr == "127.0.0.1:8080"
    assert settings.telegram.api_url == "https://api.telegram.org"
    assert settings.payments.max_amount == 10_000
    assert settings.payments.order_ttl_seconds == 3600
    assert settings.payments.idempotency_ttl_seconds >= 86_400


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "PORTEX_MAX_AMOUNT": "50",
            "PORTEX_ORDER_TTL": "60",
            "PORTEX_GRPC_ADDR": "0.0.0.0:1",
        }
    )
    assert (settings.payments.max_amount, settings.payments.order_ttl_seconds) == (50, 60)
    assert settings.grpc.addr == "0.0.0.0:1"


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
    assert settings.db.url == BASE["DATABASE_URL"]


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
    assert (settings.telegram.updates, settings.http.public_url) == (
        "webhook",
        "https://pay.example.com",
    )
    assert (settings.telegram.pollers, settings.payments.auto_refund) == (False, False)
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
    assert Settings.from_env(BASE).grpc.max_receive_bytes == 65_536
    settings = Settings.from_env({**BASE, "PORTEX_GRPC_MAX_RECEIVE_BYTES": "16384"})
    assert settings.grpc.max_receive_bytes == 16_384
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, "PORTEX_GRPC_MAX_RECEIVE_BYTES": "16383"})
    assert "PORTEX_GRPC_MAX_RECEIVE_BYTES must be >= 16384" in str(raised.value)


def test_workers_are_one_per_core_unless_set_and_at_least_one() -> None:
    """Unset, `serve` starts one worker per core (None here); a number is at least 1."""
    assert Settings.from_env(BASE).grpc.workers is None
    assert Settings.from_env({**BASE, "PORTEX_WORKERS": "3"}).grpc.workers == 3
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, "PORTEX_WORKERS": "0"})
    assert "PORTEX_WORKERS must be >= 1" in str(raised.value)


def test_update_attempts_are_read_and_bounded_below() -> None:
    assert Settings.from_env(BASE).payments.update_max_attempts == 10
    assert (
        Settings.from_env({**BASE, "PORTEX_UPDATE_MAX_ATTEMPTS": "3"}).payments.update_max_attempts
        == 3
    )
    with pytest.raises(ConfigError):
        Settings.from_env({**BASE, "PORTEX_UPDATE_MAX_ATTEMPTS": "0"})


def test_edge_settings_and_the_init_data_key() -> None:
    from portex_pay.domain.init_data import PRODUCTION_PUBLIC_KEY, TEST_PUBLIC_KEY

    settings = Settings.from_env(BASE)
    assert settings.edge.enabled and settings.edge.init_data_max_age == 86_400
    assert settings.init_data_key() == PRODUCTION_PUBLIC_KEY
    test_env = Settings.from_env({**BASE, "PORTEX_TELEGRAM_TEST_ENV": "true"})
    assert test_env.init_data_key() == TEST_PUBLIC_KEY
    own = Settings.from_env({**BASE, "PORTEX_INIT_DATA_PUBLIC_KEY": "ab" * 32})
    assert own.init_data_key() == bytes.fromhex("ab" * 32)
    assert Settings.from_env({**BASE, "PORTEX_INIT_DATA_PUBLIC_KEY": ""}).init_data_key() is None
    off = Settings.from_env({**BASE, "PORTEX_EDGE": "false", "PORTEX_EDGE_USER_RATE": "1"})
    assert (off.edge.enabled, off.edge.user_rate) == (False, 1.0)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {**BASE, "PORTEX_INIT_DATA_PUBLIC_KEY": "abcd", "PORTEX_EDGE_USER_BURST": "0"}
        )
    assert "PORTEX_INIT_DATA_PUBLIC_KEY" in str(raised.value)
    assert "PORTEX_EDGE_USER_BURST" in str(raised.value)


def test_the_edge_preflight_limit_is_read_and_bounded_below() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.edge.preflight_rate, settings.edge.preflight_burst) == (50.0, 200)
    own = Settings.from_env(
        {**BASE, "PORTEX_EDGE_PREFLIGHT_RATE": "2.5", "PORTEX_EDGE_PREFLIGHT_BURST": "7"}
    )
    assert (own.edge.preflight_rate, own.edge.preflight_burst) == (2.5, 7)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {**BASE, "PORTEX_EDGE_PREFLIGHT_RATE": "0", "PORTEX_EDGE_PREFLIGHT_BURST": "0"}
        )
    assert "PORTEX_EDGE_PREFLIGHT_RATE" in str(raised.value)
    assert "PORTEX_EDGE_PREFLIGHT_BURST" in str(raised.value)


# Read by `make run` (devtools), not by the service: documented in the same table.
DEVTOOLS_VARIABLES = {"PORTEX_SANDBOX_ADDR", "PORTEX_DEV_BOT_TOKEN"}


def readme_table() -> dict[str, str | None]:
    """The README's configuration table: each variable and the literal default it shows (None
    where the default is described in words: a required value, one computed, none)."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str | None] = {}
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z_]+)`", cells[0])
        defaults = cells[1].split(" / ") if len(names) > 1 else [cells[1]]
        assert len(defaults) == len(names), row
        for name, default in zip(names, defaults, strict=True):
            assert name not in table, f"{name} is in the table twice"
            literal = re.match(r"`([^`]*)`", default)
            table[name] = literal.group(1) if literal else None
    return table


def shown(default: object) -> str | None:
    if default is None or default == "":
        return None
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def test_the_readme_table_is_the_settings() -> None:
    """Every variable the service reads is in the README's table with its default, and the
    table has no variable the service does not read (but `make run`'s own)."""
    table = readme_table()
    declared = {}
    for group, name, variable in settings_fields():
        default = getattr(getattr(Settings(), group), name)
        declared[variable.name] = shown(default)
    assert set(table) - DEVTOOLS_VARIABLES == set(declared)
    for name, default in declared.items():
        assert table[name] == default, name


def test_settings_are_replaced_by_group_and_field_or_by_a_field_name_of_its_own() -> None:
    settings = Settings().replace(http_read_timeout=2.0, max_amount=7, edge_enabled=False)
    assert (settings.http.read_timeout, settings.payments.max_amount) == (2.0, 7)
    assert settings.edge.enabled is False and Settings().edge.enabled is True
    with pytest.raises(TypeError):
        Settings().replace(timeout=1.0)  # the telegram's, the poll's or the callback's?


def test_the_ledger_lease_must_outlast_a_telegram_call() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, "PORTEX_LEDGER_LEASE": "5", "PORTEX_TELEGRAM_TIMEOUT": "10"})
    assert "PORTEX_LEDGER_LEASE must be longer than PORTEX_TELEGRAM_TIMEOUT" in str(raised.value)
    settings = Settings.from_env({**BASE, "PORTEX_LEDGER_INTERVAL": "60", "PORTEX_LEDGER": "0"})
    assert (settings.ledger.enabled, settings.ledger.interval) == (False, 60.0)


def test_retired_payload_secrets_are_read_into_the_key_ring() -> None:
    old, older = "o" * 32, "p" * 40
    settings = Settings.from_env({**BASE, "PORTEX_PAYLOAD_SECRETS_RETIRED": f"{old}, {older},"})
    assert settings.payments.retired_payload_secrets() == (old, older)
    keys = settings.payments.payload_keys()
    assert (keys.current, keys.retired) == (b"s" * 32, (old.encode(), older.encode()))
    assert Settings.from_env(BASE).payments.payload_keys().retired == ()


def test_a_short_or_current_retired_secret_is_refused_without_showing_it() -> None:
    short, current = "short-secret-of-25-chars.", BASE["PORTEX_PAYLOAD_SECRET"]
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {**BASE, "PORTEX_PAYLOAD_SECRETS_RETIRED": f"{'o' * 32},{short},{current}"}
        )
    message = str(raised.value)
    assert "PORTEX_PAYLOAD_SECRETS_RETIRED: secret 2 is shorter than 32 characters" in message
    assert "PORTEX_PAYLOAD_SECRETS_RETIRED: secret 3 is PORTEX_PAYLOAD_SECRET itself" in message
    assert short not in message and current not in message and "o" * 32 not in message
    # Admin commands do not need the current secret, but a bad retired one is still refused.
    with pytest.raises(ConfigError, match="secret 1 is shorter"):
        Settings.from_env(
            {"DATABASE_URL": BASE["DATABASE_URL"], "PORTEX_PAYLOAD_SECRETS_RETIRED": short},
            serving=False,
        )


def test_tls_files_go_together_and_must_be_there_to_serve(tmp_path: Path) -> None:
    pem = tmp_path / "server.pem"
    pem.write_text("PEM")
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, "PORTEX_GRPC_TLS_CERT": str(pem)})
    assert "PORTEX_GRPC_TLS_CERT and PORTEX_GRPC_TLS_KEY go together" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, "PORTEX_GRPC_TLS_CLIENT_CA": str(pem)})
    assert "PORTEX_GRPC_TLS_CLIENT_CA needs PORTEX_GRPC_TLS_CERT" in str(raised.value)
    missing = {**BASE, "PORTEX_GRPC_TLS_CERT": str(pem), "PORTEX_GRPC_TLS_KEY": "/nowhere.key"}
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(missing)
    assert "PORTEX_GRPC_TLS_KEY: /nowhere.key is not a readable file" in str(raised.value)
    # Admin commands do not listen: they do not look for the files.
    assert Settings.from_env(missing, serving=False).grpc.tls_key == "/nowhere.key"
    both = {**BASE, "PORTEX_GRPC_TLS_CERT": str(pem), "PORTEX_GRPC_TLS_KEY": str(pem)}
    assert Settings.from_env(both).grpc.tls_cert == str(pem)


def test_the_metrics_listener_is_off_by_default_and_never_the_public_address() -> None:
    assert Settings.from_env(BASE).metrics.addr == ""
    settings = Settings.from_env({**BASE, "PORTEX_METRICS_ADDR": "127.0.0.1:9464"})
    assert settings.metrics.addr == "127.0.0.1:9464"
    for addr in ("127.0.0.1:8080", "127.0.0.1:50051", "nowhere"):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({**BASE, "PORTEX_METRICS_ADDR": addr})
        assert "PORTEX_METRICS_ADDR" in str(raised.value)
