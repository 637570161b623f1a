"""Settings: one typed object read from the environment at start, validated, with defaults.

Every variable is documented in the README's configuration table. Nothing reads the environment at
import time; `Settings.from_env()` is called by the entrypoints, and invalid values stop the process
with one message listing every problem.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from portex_pay.domain.init_data import PRODUCTION_PUBLIC_KEY, TEST_PUBLIC_KEY

DEFAULT_GRPC_ADDR = "127.0.0.1:50051"


class ConfigError(ValueError):
    """The environment does not describe a valid configuration."""


# `make run`'s state (its private PostgreSQL, the sandbox bot's token, the dev API key), relative
# to the checkout it runs in.
DEV_DATA_DIR = Path(".data")


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    payload_secret: str
    grpc_addr: str = DEFAULT_GRPC_ADDR
    http_addr: str = "127.0.0.1:8080"
    telegram_api_url: str = "https://api.telegram.org"
    telegram_timeout: float = 10.0
    telegram_test_environment: bool = False
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_connect_timeout: float = 30.0
    max_amount: int = 10_000
    order_ttl_seconds: int = 3600
    idempotency_ttl_seconds: int = 86_400
    auth_cache_ttl: float = 5.0
    # The largest gRPC request accepted. The largest valid request (a Pay with every field at
    # its limit in four-byte characters) is about 22 KB; gRPC's own default is 4 MiB.
    grpc_max_receive_bytes: int = 65_536
    shutdown_grace: float = 10.0
    health_interval: float = 1.0
    # Seconds an HTTP client has to send a request's headers (also how long an idle keep-alive
    # connection stays open) and, from then, its body; a body gets one more second for every
    # HTTP_BODY_MIN_RATE bytes received, so large uploads pass and a trickle does not.
    http_read_timeout: float = 30.0
    public_url: str = ""
    telegram_updates: str = "polling"  # webhook | polling, for applications without their own
    telegram_pollers: bool = True  # whether this replica runs the long pollers
    poll_timeout: int = 10
    poll_lease_seconds: float = 30.0
    checkout_decision_timeout: float = 3.0
    auto_refund: bool = True
    expiry_interval: float = 5.0
    refund_max_attempts: int = 12
    update_max_attempts: int = 10
    refund_lease_seconds: float = 60.0
    callback_delivery: bool = True
    callback_timeout: float = 5.0
    callback_max_attempts: int = 15
    # Deliver callbacks to loopback, private, link-local and other non-global addresses too.
    callback_allow_private: bool = False
    stream_heartbeat: float = 15.0
    stream_buffer: int = 256
    stream_poll_interval: float = 1.0
    event_retention_days: float = 30.0
    # The Mini App edge (/v1/ on the HTTP address, for the Portex JS SDK).
    edge: bool = True
    init_data_max_age: float = 86_400.0  # seconds an initData stays valid after its auth_date
    # Hex Ed25519 key for Telegram's third-party initData signature; "" disables that check.
    # Unset: Telegram's production key, or its test-environment key with PORTEX_TELEGRAM_TEST_ENV.
    init_data_public_key: str | None = None
    edge_user_rate: float = 5.0
    edge_user_burst: int = 20
    edge_app_rate: float = 200.0
    edge_app_burst: int = 400
    edge_preflight_rate: float = 50.0  # per client address: preflights, pre-application refusals
    edge_preflight_burst: int = 200
    edge_dedupe_window: float = 300.0
    # The Bot API proxy (/bot{token}/{method} on the HTTP address) and its relay of updates to
    # the application's own bot.
    bot_proxy: bool = True
    relay_webhook_timeout: float = 10.0  # seconds the app bot's webhook has to answer
    # Background workers: seconds a worker with nothing to do waits before it looks again (a
    # request that writes work wakes its worker at once).
    refund_interval: float = 2.0
    callback_interval: float = 1.0
    relay_interval: float = 1.0
    prune_interval: float = 600.0  # idempotency keys, events, relayed updates

    def init_data_key(self) -> bytes | None:
        """The Ed25519 public key initData signatures are checked with (None: HMAC only)."""
        if self.init_data_public_key is None:
            return TEST_PUBLIC_KEY if self.telegram_test_environment else PRODUCTION_PUBLIC_KEY
        return bytes.fromhex(self.init_data_public_key) if self.init_data_public_key else None

    def __repr__(self) -> str:
        # The DSN may carry a password and the payload secret is a credential: never print them.
        return f"Settings(grpc_addr={self.grpc_addr!r}, http_addr={self.http_addr!r}, ...)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, serving: bool = True) -> Settings:
        """Reads and validates the settings. `serving=False` (admin commands, migrate) does not
        require the secrets that only a serving process uses."""
        env = os.environ if env is None else env
        problems: list[str] = []
        values: dict[str, object] = {}

        def text(name: str, field: str) -> None:
            if name in env:
                values[field] = env[name]

        def number(name: str, field: str, kind: type[int] | type[float], minimum: float) -> None:
            if name not in env:
                return
            try:
                value = kind(env[name])
            except ValueError:
                problems.append(f"{name}={env[name]!r} is not a {kind.__name__}")
                return
            if value < minimum:
                problems.append(f"{name} must be >= {minimum}")
            values[field] = value

        text("DATABASE_URL", "database_url")
        text("PORTEX_PAYLOAD_SECRET", "payload_secret")
        text("PORTEX_GRPC_ADDR", "grpc_addr")
        text("PORTEX_HTTP_ADDR", "http_addr")
        text("PORTEX_TELEGRAM_API_URL", "telegram_api_url")
        text("PORTEX_LOG_FORMAT", "log_format")
        text("PORTEX_LOG_LEVEL", "log_level")
        text("PORTEX_PUBLIC_URL", "public_url")
        text("PORTEX_TELEGRAM_UPDATES", "telegram_updates")
        for name, field in (
            ("PORTEX_TELEGRAM_POLLERS", "telegram_pollers"),
            ("PORTEX_AUTO_REFUND", "auto_refund"),
            ("PORTEX_CALLBACKS", "callback_delivery"),
            ("PORTEX_CALLBACK_ALLOW_PRIVATE", "callback_allow_private"),
            ("PORTEX_TELEGRAM_TEST_ENV", "telegram_test_environment"),
            ("PORTEX_EDGE", "edge"),
            ("PORTEX_BOT_PROXY", "bot_proxy"),
        ):
            if name in env:
                flag = env[name].strip().lower()
                if flag not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    problems.append(f"{name} must be true or false")
                values[field] = flag in ("1", "true", "yes", "on")
        number("PORTEX_POLL_TIMEOUT", "poll_timeout", int, 0)
        number("PORTEX_POLL_LEASE", "poll_lease_seconds", float, 1)
        number("PORTEX_CHECKOUT_DECISION_TIMEOUT", "checkout_decision_timeout", float, 0.1)
        number("PORTEX_EXPIRY_INTERVAL", "expiry_interval", float, 0.05)
        number("PORTEX_REFUND_MAX_ATTEMPTS", "refund_max_attempts", int, 1)
        number("PORTEX_UPDATE_MAX_ATTEMPTS", "update_max_attempts", int, 1)
        number("PORTEX_REFUND_LEASE", "refund_lease_seconds", float, 1)
        number("PORTEX_CALLBACK_TIMEOUT", "callback_timeout", float, 0.1)
        number("PORTEX_CALLBACK_MAX_ATTEMPTS", "callback_max_attempts", int, 1)
        number("PORTEX_STREAM_HEARTBEAT", "stream_heartbeat", float, 0.05)
        number("PORTEX_STREAM_BUFFER", "stream_buffer", int, 1)
        number("PORTEX_STREAM_POLL_INTERVAL", "stream_poll_interval", float, 0.05)
        number("PORTEX_EVENT_RETENTION_DAYS", "event_retention_days", float, 0.0001)
        number("PORTEX_TELEGRAM_TIMEOUT", "telegram_timeout", float, 0.1)
        number("PORTEX_DB_POOL_MIN", "db_pool_min", int, 0)
        number("PORTEX_DB_POOL_MAX", "db_pool_max", int, 1)
        number("PORTEX_DB_CONNECT_TIMEOUT", "db_connect_timeout", float, 0)
        number("PORTEX_MAX_AMOUNT", "max_amount", int, 1)
        number("PORTEX_ORDER_TTL", "order_ttl_seconds", int, 1)
        number("PORTEX_IDEMPOTENCY_TTL", "idempotency_ttl_seconds", int, 86_400)
        number("PORTEX_AUTH_CACHE_TTL", "auth_cache_ttl", float, 0)
        number("PORTEX_GRPC_MAX_RECEIVE_BYTES", "grpc_max_receive_bytes", int, 16_384)
        number("PORTEX_SHUTDOWN_GRACE", "shutdown_grace", float, 0)
        number("PORTEX_HEALTH_INTERVAL", "health_interval", float, 0.05)
        number("PORTEX_HTTP_READ_TIMEOUT", "http_read_timeout", float, 0.1)
        number("PORTEX_INIT_DATA_MAX_AGE", "init_data_max_age", float, 1)
        number("PORTEX_EDGE_USER_RATE", "edge_user_rate", float, 0.01)
        number("PORTEX_EDGE_USER_BURST", "edge_user_burst", int, 1)
        number("PORTEX_EDGE_APP_RATE", "edge_app_rate", float, 0.01)
        number("PORTEX_EDGE_APP_BURST", "edge_app_burst", int, 1)
        number("PORTEX_EDGE_PREFLIGHT_RATE", "edge_preflight_rate", float, 0.01)
        number("PORTEX_EDGE_PREFLIGHT_BURST", "edge_preflight_burst", int, 1)
        number("PORTEX_EDGE_DEDUPE_WINDOW", "edge_dedupe_window", float, 1)
        number("PORTEX_RELAY_WEBHOOK_TIMEOUT", "relay_webhook_timeout", float, 0.1)
        text("PORTEX_INIT_DATA_PUBLIC_KEY", "init_data_public_key")
        key = values.get("init_data_public_key")
        if key:
            try:
                if len(bytes.fromhex(str(key))) != 32:
                    raise ValueError(key)
            except ValueError:
                problems.append("PORTEX_INIT_DATA_PUBLIC_KEY must be 64 hex digits (32 bytes)")

        if not values.get("database_url"):
            problems.append("DATABASE_URL is required (make run starts a private PostgreSQL)")
        elif urlsplit(str(values["database_url"])).scheme not in ("postgres", "postgresql"):
            problems.append("DATABASE_URL must be a postgresql:// URL")
        secret = str(values.get("payload_secret", ""))
        if not serving:
            values.setdefault("payload_secret", "")
        elif len(secret) < 32:
            problems.append(
                "PORTEX_PAYLOAD_SECRET is required: at least 32 characters, the same on every "
                "replica (it signs the invoice payloads sent to Telegram)"
            )
        for name, field in (("PORTEX_GRPC_ADDR", "grpc_addr"), ("PORTEX_HTTP_ADDR", "http_addr")):
            if field in values and not _is_host_port(str(values[field])):
                problems.append(f"{name} must be HOST:PORT")
        api = urlsplit(str(values.get("telegram_api_url", "https://api.telegram.org")))
        if api.scheme not in ("http", "https") or not api.netloc:
            problems.append("PORTEX_TELEGRAM_API_URL must be an absolute http(s) URL")
        if values.get("telegram_updates", "polling") not in ("webhook", "polling"):
            problems.append("PORTEX_TELEGRAM_UPDATES must be webhook or polling")
        public = str(values.get("public_url", ""))
        if public and (urlsplit(public).scheme != "https" and not public.startswith("http://")):
            problems.append("PORTEX_PUBLIC_URL must be an absolute URL (https for Telegram)")
        if values.get("log_format", "auto") not in ("auto", "json", "console"):
            problems.append("PORTEX_LOG_FORMAT must be auto, json or console")
        if str(values.get("log_level", "info")).lower() not in (
            "debug",
            "info",
            "warning",
            "error",
        ):
            problems.append("PORTEX_LOG_LEVEL must be debug, info, warning or error")
        lease = float(str(values.get("poll_lease_seconds", 30.0)))
        if lease <= int(str(values.get("poll_timeout", 10))):
            # The lease is renewed once per getUpdates call: it must outlast the long poll.
            problems.append("PORTEX_POLL_LEASE must be longer than PORTEX_POLL_TIMEOUT")
        pool_min = int(str(values.get("db_pool_min", 2)))
        pool_max = int(str(values.get("db_pool_max", 10)))
        if pool_min > pool_max:
            problems.append("PORTEX_DB_POOL_MIN must not exceed PORTEX_DB_POOL_MAX")
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep) and bool(host) and port.isdigit() and 0 <= int(port) <= 65535
