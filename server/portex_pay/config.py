"""Settings: one typed object read from the environment at start, validated, with defaults.

The settings come in named groups (`settings.db`, `settings.telegram`, `settings.edge`, ...), as
temporalio's client config does, so that a service is handed its group and a reader finds a
setting by what it is about. Each field declares its environment variable, default and bounds
once, in its `setting(...)`; reading, checking and the README's configuration table all follow
from that one declaration (tests/unit/test_config.py holds the README to it). Nothing reads the
environment at import time; `Settings.from_env()` is called by the entrypoints, and invalid values
stop the process with one message listing every problem.

No library earns its place here: pydantic-settings would bring pydantic for a few dozen scalar
fields, and derives variable names from field paths while ours are a published contract.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from portex_pay.domain.init_data import PRODUCTION_PUBLIC_KEY, TEST_PUBLIC_KEY
from portex_pay.domain.pay import PAYLOAD_KEY_MIN_CHARS, PayloadKeys
from portex_pay.domain.retry import CALLBACK_MAX_ATTEMPTS
from portex_pay.domain.sealing import DataKeys, decode_data_key

DEFAULT_GRPC_ADDR = "127.0.0.1:50051"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """The environment does not describe a valid configuration."""


# `make run`'s state (its private PostgreSQL, the sandbox bot's token, the dev API key), relative
# to the checkout it runs in.
DEV_DATA_DIR = Path(".data")


@dataclass(frozen=True, slots=True)
class Variable:
    """How a field is read: its environment variable, the type its text is parsed as, the least
    value a number may take, and the values a text may take."""

    name: str
    kind: type
    minimum: float | None = None
    choices: tuple[str, ...] | None = None


def setting(
    env: str,
    default: Any,
    *,
    kind: type | None = None,
    minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A settings field read from `env` (its type: the default's, or `kind`)."""
    variable = Variable(env, kind or type(default), minimum, choices)
    return field(default=default, metadata={"variable": variable})


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = setting("DATABASE_URL", "")
    pool_min: int = setting("PORTEX_DB_POOL_MIN", 2, minimum=0)
    pool_max: int = setting("PORTEX_DB_POOL_MAX", 10, minimum=1)
    connect_timeout: float = setting("PORTEX_DB_CONNECT_TIMEOUT", 30.0, minimum=0)
    health_interval: float = setting("PORTEX_HEALTH_INTERVAL", 1.0, minimum=0.05)


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    addr: str = setting("PORTEX_GRPC_ADDR", DEFAULT_GRPC_ADDR)
    # The largest valid request (a Pay with every field at its limit in four-byte characters) is
    # about 22 KB; gRPC's own default is 4 MiB.
    max_receive_bytes: int = setting("PORTEX_GRPC_MAX_RECEIVE_BYTES", 65_536, minimum=16_384)
    shutdown_grace: float = setting("PORTEX_SHUTDOWN_GRACE", 10.0, minimum=0)
    # `serve` runs its event loop on uvloop when it imports (faster I/O for gRPC and HTTP alike).
    uvloop: bool = setting("PORTEX_UVLOOP", True)
    # `serve`'s processes sharing the gRPC and HTTP ports (SO_REUSEPORT); unset: one per core.
    workers: int | None = setting("PORTEX_WORKERS", None, kind=int, minimum=1)
    # TLS (PEM files, both or neither; reloaded when they change) and, with a client CA, mTLS.
    tls_cert: str = setting("PORTEX_GRPC_TLS_CERT", "")
    tls_key: str = setting("PORTEX_GRPC_TLS_KEY", "")
    tls_client_ca: str = setting("PORTEX_GRPC_TLS_CLIENT_CA", "")
    # What `portex-pay healthcheck` trusts the server's certificate with ("": that certificate).
    tls_ca: str = setting("PORTEX_GRPC_TLS_CA", "")
    # Requests per second per application (and its burst), per process; unset: no limit.
    app_rate: float | None = setting("PORTEX_GRPC_APP_RATE", None, kind=float, minimum=0.01)
    app_burst: int = setting("PORTEX_GRPC_APP_BURST", 100, minimum=1)

    def tls_problems(self, *, serving: bool) -> list[str]:
        """What is wrong with the TLS settings; the files are looked for only by a server."""
        problems = []
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append(
                "PORTEX_GRPC_TLS_CERT and PORTEX_GRPC_TLS_KEY go together: set both or neither"
            )
        elif not self.tls_cert:
            for name, value in (
                ("PORTEX_GRPC_TLS_CLIENT_CA", self.tls_client_ca),
                ("PORTEX_GRPC_TLS_CA", self.tls_ca),
            ):
                if value:
                    problems.append(f"{name} needs PORTEX_GRPC_TLS_CERT and PORTEX_GRPC_TLS_KEY")
        if serving:
            for name, value in (
                ("PORTEX_GRPC_TLS_CERT", self.tls_cert),
                ("PORTEX_GRPC_TLS_KEY", self.tls_key),
                ("PORTEX_GRPC_TLS_CLIENT_CA", self.tls_client_ca),
            ):
                if value and not (os.path.isfile(value) and os.access(value, os.R_OK)):
                    problems.append(f"{name}: {value} is not a readable file")
        return problems


@dataclass(frozen=True, slots=True)
class HttpSettings:
    addr: str = setting("PORTEX_HTTP_ADDR", "127.0.0.1:8080")
    # Seconds a client has to send a request's headers (also how long an idle keep-alive
    # connection stays open) and, from then, its body, plus a second a BODY_MIN_RATE bytes.
    read_timeout: float = setting("PORTEX_HTTP_READ_TIMEOUT", 30.0, minimum=0.1)
    public_url: str = setting("PORTEX_PUBLIC_URL", "")  # where Telegram reaches the webhooks


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    api_url: str = setting("PORTEX_TELEGRAM_API_URL", "https://api.telegram.org")
    timeout: float = setting("PORTEX_TELEGRAM_TIMEOUT", 10.0, minimum=0.1)
    test_environment: bool = setting("PORTEX_TELEGRAM_TEST_ENV", False)
    # For applications without their own choice.
    updates: str = setting("PORTEX_TELEGRAM_UPDATES", "polling", choices=("webhook", "polling"))
    pollers: bool = setting("PORTEX_TELEGRAM_POLLERS", True)  # this replica runs long pollers


@dataclass(frozen=True, slots=True)
class PollSettings:
    timeout: int = setting("PORTEX_POLL_TIMEOUT", 10, minimum=0)
    lease_seconds: float = setting("PORTEX_POLL_LEASE", 30.0, minimum=1)


@dataclass(frozen=True, slots=True)
class LogSettings:
    format: str = setting("PORTEX_LOG_FORMAT", "auto", choices=("auto", "json", "console"))
    level: str = setting("PORTEX_LOG_LEVEL", "info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True, slots=True)
class PaymentsSettings:
    payload_secret: str = setting("PORTEX_PAYLOAD_SECRET", "")
    # Earlier payload secrets, comma-separated: they no longer sign, but still verify the
    # payloads they signed (open invoices, live subscriptions) until removed from this list.
    payload_secrets_retired: str = setting("PORTEX_PAYLOAD_SECRETS_RETIRED", "")
    max_amount: int = setting("PORTEX_MAX_AMOUNT", 10_000, minimum=1)
    order_ttl_seconds: int = setting("PORTEX_ORDER_TTL", 3600, minimum=1)
    idempotency_ttl_seconds: int = setting("PORTEX_IDEMPOTENCY_TTL", 86_400, minimum=86_400)
    checkout_decision_timeout: float = setting("PORTEX_CHECKOUT_DECISION_TIMEOUT", 3.0, minimum=0.1)
    auto_refund: bool = setting("PORTEX_AUTO_REFUND", True)
    update_max_attempts: int = setting("PORTEX_UPDATE_MAX_ATTEMPTS", 10, minimum=1)
    expiry_interval: float = setting("PORTEX_EXPIRY_INTERVAL", 5.0, minimum=0.05)

    def retired_payload_secrets(self) -> tuple[str, ...]:
        """PORTEX_PAYLOAD_SECRETS_RETIRED's secrets: split at commas, each without surrounding
        whitespace (so "a, b" works), empty entries (a trailing comma) and repeats dropped."""
        entries = (entry.strip() for entry in self.payload_secrets_retired.split(","))
        return tuple(dict.fromkeys(entry for entry in entries if entry))

    def payload_keys(self) -> PayloadKeys:
        """The key ring invoice payloads are signed (current) and verified (all) with."""
        retired = tuple(secret.encode() for secret in self.retired_payload_secrets())
        return PayloadKeys(self.payload_secret.encode(), retired)

    def payload_secret_problems(self, *, serving: bool) -> list[str]:
        """What is wrong with the payload secrets (never quoting one: they are credentials)."""
        problems = []
        if serving and len(self.payload_secret) < PAYLOAD_KEY_MIN_CHARS:
            problems.append(
                f"PORTEX_PAYLOAD_SECRET is required: at least {PAYLOAD_KEY_MIN_CHARS} characters, "
                "the same on every replica (it signs the invoice payloads sent to Telegram)"
            )
        for position, secret in enumerate(self.retired_payload_secrets(), start=1):
            if len(secret) < PAYLOAD_KEY_MIN_CHARS:
                problems.append(
                    f"PORTEX_PAYLOAD_SECRETS_RETIRED: secret {position} is shorter than "
                    f"{PAYLOAD_KEY_MIN_CHARS} characters (secrets are separated by commas, so a "
                    "secret that contains one cannot be listed)"
                )
            elif secret == self.payload_secret:
                problems.append(
                    f"PORTEX_PAYLOAD_SECRETS_RETIRED: secret {position} is PORTEX_PAYLOAD_SECRET "
                    "itself; list only the secrets it replaced"
                )
        return problems


@dataclass(frozen=True, slots=True)
class SealingSettings:
    """The data keys the stored secrets (bot tokens, webhook and signing secrets) are sealed
    with in PostgreSQL (domain/sealing.py): base64 of 32 random bytes each."""

    data_key: str = setting("PORTEX_DATA_KEY", "")
    # Earlier data keys, comma-separated: they seal nothing new, but open what they sealed until
    # `portex-pay admin rotate-data-key` has re-sealed it under PORTEX_DATA_KEY.
    data_keys_retired: str = setting("PORTEX_DATA_KEYS_RETIRED", "")

    def data_keys(self) -> DataKeys:
        """The ring; ConfigError when PORTEX_DATA_KEY is unset (only serving requires it up
        front: of the other commands, those that read or write an application call this)."""
        current = decode_data_key(self.data_key)
        if current is None:
            raise ConfigError("\n  ".join(["invalid configuration:", *self.problems(True)]))
        retired = (decode_data_key(text) for text in self.data_keys_retired.split(","))
        return DataKeys(current, tuple(dict.fromkeys(key for key in retired if key)))

    def key_texts(self) -> tuple[str, ...]:
        """The keys as written in the environment (redacted from the logs at start)."""
        entries = (self.data_key, *self.data_keys_retired.split(","))
        return tuple(entry.strip() for entry in entries if entry.strip())

    def problems(self, required: bool) -> list[str]:
        """What is wrong with the data keys (never quoting one: they are credentials)."""
        problems = []
        current = decode_data_key(self.data_key)
        if self.data_key and current is None:
            problems.append(f"PORTEX_DATA_KEY must be {_DATA_KEY_FORM}")
        elif required and not self.data_key:
            problems.append(
                f"PORTEX_DATA_KEY is required: {_DATA_KEY_FORM}, the same on every replica (it "
                "seals the bot tokens and secrets stored in PostgreSQL; make run generates one)"
            )
        entries = [entry.strip() for entry in self.data_keys_retired.split(",")]
        for position, entry in enumerate((entry for entry in entries if entry), start=1):
            key = decode_data_key(entry)
            if key is None:
                problems.append(f"PORTEX_DATA_KEYS_RETIRED: key {position} is not {_DATA_KEY_FORM}")
            elif key == current:
                problems.append(
                    f"PORTEX_DATA_KEYS_RETIRED: key {position} is PORTEX_DATA_KEY itself; list "
                    "only the keys it replaced"
                )
        return problems


_DATA_KEY_FORM = "32 bytes in base64 (`openssl rand -base64 32`)"


@dataclass(frozen=True, slots=True)
class AuthSettings:
    cache_ttl: float = setting("PORTEX_AUTH_CACHE_TTL", 5.0, minimum=0)


@dataclass(frozen=True, slots=True)
class RefundSettings:
    max_attempts: int = setting("PORTEX_REFUND_MAX_ATTEMPTS", 12, minimum=1)
    lease_seconds: float = setting("PORTEX_REFUND_LEASE", 60.0, minimum=1)
    interval: float = setting("PORTEX_REFUND_INTERVAL", 2.0, minimum=0.05)
    # How often the applications' unfulfilled-order policies are swept for orders to refund.
    unfulfilled_interval: float = setting("PORTEX_UNFULFILLED_REFUND_INTERVAL", 60.0, minimum=0.05)


@dataclass(frozen=True, slots=True)
class CallbackSettings:
    delivery: bool = setting("PORTEX_CALLBACKS", True)  # this replica delivers callbacks
    timeout: float = setting("PORTEX_CALLBACK_TIMEOUT", 5.0, minimum=0.1)
    # The default spans over three days of retries (domain/retry.py).
    max_attempts: int = setting("PORTEX_CALLBACK_MAX_ATTEMPTS", CALLBACK_MAX_ATTEMPTS, minimum=1)
    # Deliver callbacks to loopback, private, link-local and other non-global addresses too.
    allow_private: bool = setting("PORTEX_CALLBACK_ALLOW_PRIVATE", False)
    interval: float = setting("PORTEX_CALLBACK_INTERVAL", 1.0, minimum=0.05)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    heartbeat: float = setting("PORTEX_STREAM_HEARTBEAT", 15.0, minimum=0.05)
    buffer: int = setting("PORTEX_STREAM_BUFFER", 256, minimum=1)
    poll_interval: float = setting("PORTEX_STREAM_POLL_INTERVAL", 1.0, minimum=0.05)
    event_retention_days: float = setting("PORTEX_EVENT_RETENTION_DAYS", 30.0, minimum=0.0001)


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    """The Mini App edge (/v1/ on the HTTP address, for the Portex JS SDK)."""

    enabled: bool = setting("PORTEX_EDGE", True)
    init_data_max_age: float = setting("PORTEX_INIT_DATA_MAX_AGE", 86_400.0, minimum=1)
    # Hex Ed25519 key for Telegram's third-party initData signature; "" disables that check.
    # Unset: Telegram's production key, or its test-environment key with PORTEX_TELEGRAM_TEST_ENV.
    init_data_public_key: str | None = setting("PORTEX_INIT_DATA_PUBLIC_KEY", None, kind=str)
    user_rate: float = setting("PORTEX_EDGE_USER_RATE", 5.0, minimum=0.01)
    user_burst: int = setting("PORTEX_EDGE_USER_BURST", 20, minimum=1)
    app_rate: float = setting("PORTEX_EDGE_APP_RATE", 200.0, minimum=0.01)
    app_burst: int = setting("PORTEX_EDGE_APP_BURST", 400, minimum=1)
    # Per client address: preflights and refusals before an application is known.
    preflight_rate: float = setting("PORTEX_EDGE_PREFLIGHT_RATE", 50.0, minimum=0.01)
    preflight_burst: int = setting("PORTEX_EDGE_PREFLIGHT_BURST", 200, minimum=1)
    dedupe_window: float = setting("PORTEX_EDGE_DEDUPE_WINDOW", 300.0, minimum=1)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """The Bot API proxy (/bot{token}/{method} on the HTTP address) and its relay of updates to
    the application's own bot."""

    bot_proxy: bool = setting("PORTEX_BOT_PROXY", True)
    webhook_timeout: float = setting("PORTEX_RELAY_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
    interval: float = setting("PORTEX_RELAY_INTERVAL", 1.0, minimum=0.05)


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """The Star ledger: each bot's getStarTransactions read incrementally and reconciled."""

    enabled: bool = setting("PORTEX_LEDGER", True)  # this replica reads the bots' ledgers
    # Seconds between two reads of a bot once it is caught up (one run an interval, whichever
    # replica makes it); a full page is followed by the next at once.
    interval: float = setting("PORTEX_LEDGER_INTERVAL", 300.0, minimum=0.05)
    # Seconds a reader's lease on a bot lasts unless renewed (each page renews it): another
    # replica takes the bot over this long after its reader died.
    lease_seconds: float = setting("PORTEX_LEDGER_LEASE", 60.0, minimum=1)


@dataclass(frozen=True, slots=True)
class HousekeepingSettings:
    # Idempotency keys, events and relayed updates past their time are deleted this often.
    prune_interval: float = setting("PORTEX_PRUNE_INTERVAL", 600.0, minimum=1)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Prometheus metrics, on an address of their own (never the public HTTP one)."""

    # HOST:PORT of the /metrics listener; "" (the default): no metrics listener.
    addr: str = setting("PORTEX_METRICS_ADDR", "")
    # Seconds between two samples of the outboxes, the event stream and the pool.
    interval: float = setting("PORTEX_METRICS_INTERVAL", 15.0, minimum=0.05)


@dataclass(frozen=True, slots=True)
class Settings:
    db: DatabaseSettings = field(default_factory=DatabaseSettings)
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    poll: PollSettings = field(default_factory=PollSettings)
    log: LogSettings = field(default_factory=LogSettings)
    payments: PaymentsSettings = field(default_factory=PaymentsSettings)
    sealing: SealingSettings = field(default_factory=SealingSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    refund: RefundSettings = field(default_factory=RefundSettings)
    callback: CallbackSettings = field(default_factory=CallbackSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    housekeeping: HousekeepingSettings = field(default_factory=HousekeepingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    def init_data_key(self) -> bytes | None:
        """The Ed25519 public key initData signatures are checked with (None: HMAC only)."""
        key = self.edge.init_data_public_key
        if key is None:
            return TEST_PUBLIC_KEY if self.telegram.test_environment else PRODUCTION_PUBLIC_KEY
        return bytes.fromhex(key) if key else None

    def __repr__(self) -> str:
        # The DSN may carry a password and the payload secret is a credential: never print them.
        return f"Settings(grpc={self.grpc.addr!r}, http={self.http.addr!r}, ...)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, serving: bool = True) -> Settings:
        """Reads and validates the settings. `serving=False` (admin commands, migrate) does not
        require the secrets that only a serving process uses."""
        env = os.environ if env is None else env
        problems: list[str] = []
        groups: dict[str, dict[str, object]] = {}
        for group, name, variable in fields():
            if variable.name in env:
                value = _parse(env[variable.name], variable, problems)
                if value is not None:
                    groups.setdefault(group, {})[name] = value
        settings = cls(
            **{
                group.name: _group_class(group)(**groups.get(group.name, {}))
                for group in dataclasses.fields(cls)
            }
        )
        problems.extend(settings.problems(serving=serving))
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        return settings

    def problems(self, *, serving: bool = True) -> list[str]:
        """What is wrong with a combination of values (each value alone was checked as read)."""
        problems = []
        if not self.db.url:
            problems.append("DATABASE_URL is required (make run starts a private PostgreSQL)")
        elif urlsplit(self.db.url).scheme not in ("postgres", "postgresql"):
            problems.append("DATABASE_URL must be a postgresql:// URL")
        problems.extend(self.payments.payload_secret_problems(serving=serving))
        problems.extend(self.grpc.tls_problems(serving=serving))
        problems.extend(self.sealing.problems(required=serving))
        for name, value in (
            ("PORTEX_GRPC_ADDR", self.grpc.addr),
            ("PORTEX_HTTP_ADDR", self.http.addr),
        ):
            if not _is_host_port(value):
                problems.append(f"{name} must be HOST:PORT")
        metrics_addr = self.metrics.addr
        if metrics_addr and not _is_host_port(metrics_addr):
            problems.append("PORTEX_METRICS_ADDR must be HOST:PORT or empty")
        elif metrics_addr in (self.grpc.addr, self.http.addr) and not metrics_addr.endswith(":0"):
            # Metrics tell business volumes: never on the public webhook/edge port.
            problems.append("PORTEX_METRICS_ADDR must be an address of its own")
        api = urlsplit(self.telegram.api_url)
        if api.scheme not in ("http", "https") or not api.netloc:
            problems.append("PORTEX_TELEGRAM_API_URL must be an absolute http(s) URL")
        public = self.http.public_url
        if public and (urlsplit(public).scheme != "https" and not public.startswith("http://")):
            problems.append("PORTEX_PUBLIC_URL must be an absolute URL (https for Telegram)")
        if self.poll.lease_seconds <= self.poll.timeout:
            # The lease is renewed once per getUpdates call: it must outlast the long poll.
            problems.append("PORTEX_POLL_LEASE must be longer than PORTEX_POLL_TIMEOUT")
        if self.ledger.lease_seconds <= self.telegram.timeout:
            # The lease is renewed once per page: it must outlast a getStarTransactions call.
            problems.append("PORTEX_LEDGER_LEASE must be longer than PORTEX_TELEGRAM_TIMEOUT")
        if self.db.pool_min > self.db.pool_max:
            problems.append("PORTEX_DB_POOL_MIN must not exceed PORTEX_DB_POOL_MAX")
        key = self.edge.init_data_public_key
        if key:
            try:
                if len(bytes.fromhex(key)) != 32:
                    raise ValueError(key)
            except ValueError:
                problems.append("PORTEX_INIT_DATA_PUBLIC_KEY must be 64 hex digits (32 bytes)")
        return problems

    def secret_texts(self) -> tuple[str, ...]:
        """Every secret the settings hold (payload secrets, data keys as configured), for the
        log redaction registry."""
        return (
            self.payments.payload_secret,
            *self.payments.retired_payload_secrets(),
            *self.sealing.key_texts(),
        )

    def replace(self, **changes: object) -> Settings:
        """A copy with fields changed, each named `<group>_<field>` (`http_read_timeout`,
        `edge_user_rate`) or by its field name alone where no other group has one of that name
        (`max_amount`)."""
        updated: dict[str, dict[str, object]] = {}
        for key, value in changes.items():
            group, name = _locate(key)
            updated.setdefault(group, {})[name] = value
        return dataclasses.replace(
            self,
            **{
                group: dataclasses.replace(getattr(self, group), **values)
                for group, values in updated.items()
            },
        )


def fields() -> Iterator[tuple[str, str, Variable]]:
    """Every setting: its group's name, its field's name and how it is read, in order."""
    for group in dataclasses.fields(Settings):
        for item in dataclasses.fields(_group_class(group)):
            yield group.name, item.name, item.metadata["variable"]


def _group_class(group: dataclasses.Field[Any]) -> type:
    """The class of a group of settings (its field's default factory)."""
    assert isinstance(group.default_factory, type)
    return group.default_factory


def _locate(key: str) -> tuple[str, str]:
    by_field: dict[str, list[str]] = {}
    for group, name, _variable in fields():
        if key == f"{group}_{name}":
            return group, name
        by_field.setdefault(name, []).append(group)
    groups = by_field.get(key, [])
    if len(groups) != 1:
        raise TypeError(f"no single setting is named {key!r}")
    return groups[0], key


def _parse(text: str, variable: Variable, problems: list[str]) -> object:
    name, kind = variable.name, variable.kind
    if kind is bool:
        flag = text.strip().lower()
        if flag not in _TRUE + _FALSE:
            problems.append(f"{name} must be true or false")
        return flag in _TRUE
    if kind is str:
        if variable.choices is not None and text.lower() not in variable.choices:
            problems.append(f"{name} must be {_one_of(variable.choices)}")
        return text
    try:
        number = kind(text)
    except ValueError:
        problems.append(f"{name}={text!r} is not a {kind.__name__}")
        return None
    if variable.minimum is not None and number < variable.minimum:
        problems.append(f"{name} must be >= {variable.minimum}")
    return number


def _one_of(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep) and bool(host) and port.isdigit() and 0 <= int(port) <= 65535
