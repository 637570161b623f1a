"""Prometheus metrics: the series, how they are recorded cheaply, and the text a scrape gets.

One `PrometheusMetrics` per process (made by the composition root, app.py) owns a registry of its
own, so that servers started side by side in one interpreter (the tests) count apart. It records
the grpc-ecosystem series (go-grpc-prometheus's names and labels, `grpc_code` spelled as Go's
`codes.Code.String()`: `OK`, `NotFound`) for the gRPC interceptor, and the service's own through
the use cases' `Metrics` port (service/ports.py). What the hot paths record is bound to its labels
once (per method, per outcome), so that a call pays an increment or an observe, not a label
lookup. Sampled values (outbox depth and age, stream subscribers and lag, the pool) are set by the
`metrics` job (service/metrics.py), never on a request's path.

`serve --workers N` runs N processes: prometheus-client's multiprocess mode, chosen by the
supervisor setting PROMETHEUS_MULTIPROC_DIR for its workers (processes.py). Every worker then
writes its values to its own memory-mapped files there, and whichever worker a scrape reaches
(the metrics port is shared like the others, SO_REUSEPORT) answers with every worker's values
added up (gauges: the sum over live workers, or the most of them for the sampled database values,
which every worker reads alike).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from portex_pay.processes import MULTIPROCESS_DIR_VARIABLE

__all__ = [
    "CONTENT_TYPE_LATEST",
    "UNRECORDED",
    "PrometheusMetrics",
    "RpcSeries",
    "UnrecordedSeries",
]


# go-grpc-prometheus labels codes with Go's names (codes.Code.String()); dashboards and alerts
# written for it (grpc_code!="OK") work unchanged.
_GO_CODE_NAMES = {
    code: "Canceled"
    if code is grpc.StatusCode.CANCELLED
    else "".join(part.title() for part in code.name.split("_"))
    for code in grpc.StatusCode
}
_GO_CODE_NAMES[grpc.StatusCode.OK] = "OK"

# Answering a pre-checkout query has a 10 s limit (Bot API): buckets up to it, finer below 1 s.
_CHECKOUT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_mode() -> bool:
    """Whether values go to PROMETHEUS_MULTIPROC_DIR (set before prometheus-client is imported:
    it chooses how values are stored at import)."""
    return MULTIPROCESS_DIR_VARIABLE in os.environ


class _Uncounted:
    """A counter that counts nothing: a method's series while metrics are off."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass


class UnrecordedSeries:
    """`RpcSeries` with metrics off (PORTEX_METRICS_ADDR unset): a call records nothing."""

    __slots__ = ()
    started = received = sent = _Uncounted()

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        pass


UNRECORDED = UnrecordedSeries()


class RpcSeries:
    """One gRPC method's series, bound to its labels: what one call of it records."""

    __slots__ = (
        "_handled",
        "_handled_counter",
        "_labels",
        "received",
        "seconds",
        "sent",
        "started",
    )

    def __init__(self, metrics: PrometheusMetrics, labels: tuple[str, str, str]) -> None:
        self._labels = labels
        self.started = metrics.grpc_started.labels(*labels)
        self.received = metrics.grpc_msg_received.labels(*labels)
        self.sent = metrics.grpc_msg_sent.labels(*labels)
        self.seconds = metrics.grpc_handling_seconds.labels(*labels)
        self._handled_counter = metrics.grpc_handled
        # Bound on first use per code (most methods see a handful of codes).
        self._handled: dict[grpc.StatusCode, Counter] = {}

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = self._handled_counter.labels(
                *self._labels, _GO_CODE_NAMES[code]
            )
        counter.inc()
        self.seconds.observe(seconds)


class PrometheusMetrics:
    """Every series this process records, and the scrape's text (`exposition`). Implements the
    use cases' Metrics port (service/ports.py)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=False)
        rpc = ("grpc_type", "grpc_service", "grpc_method")
        self.grpc_started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            rpc,
            registry=registry,
        )
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*rpc, "grpc_code"),
            registry=registry,
        )
        self.grpc_handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            rpc,
            registry=registry,
        )
        self.grpc_msg_received = Counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            rpc,
            registry=registry,
        )
        self.grpc_msg_sent = Counter(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            rpc,
            registry=registry,
        )
        self._service_series(registry)
        self._sampled_series(registry)
        self._payments: dict[str, Counter] = {}
        self._refunds: dict[str, Counter] = {}
        self._checkouts = {
            ok: self.pre_checkout_seconds.labels("ok" if ok else "declined") for ok in (True, False)
        }
        self._telegram: dict[tuple[str, str], Counter] = {}
        self._http: dict[tuple[str, int], Counter] = {}

    def _service_series(self, registry: CollectorRegistry) -> None:
        self.payments = Counter(
            "portex_payments",
            "Successful payments recorded, by outcome (accepted, renewal, duplicate, anomaly).",
            ("outcome",),
            registry=registry,
        )
        self.refunds = Counter(
            "portex_refunds",
            "Refund attempts sent to Telegram, by outcome (succeeded, "
            "already_refunded, retrying, failed).",
            ("outcome",),
            registry=registry,
        )
        self.pre_checkout_seconds = Histogram(
            "portex_pre_checkout_answer_seconds",
            "Seconds from a pre-checkout query's arrival to Telegram's answer to "
            "answerPreCheckoutQuery, by decision (ok, declined).",
            ("decision",),
            buckets=_CHECKOUT_BUCKETS,
            registry=registry,
        )
        self.telegram_calls = Counter(
            "portex_telegram_requests",
            "Bot API calls made, by method and result (ok, error, rate_limited, network).",
            ("method", "result"),
            registry=registry,
        )
        self.http_requests = Counter(
            "portex_http_requests",
            "HTTP requests answered on PORTEX_HTTP_ADDR (webhooks, the "
            "edge, the Bot API proxy), by route template and status.",
            ("route", "status"),
            registry=registry,
        )

    def _sampled_series(self, registry: CollectorRegistry) -> None:
        # Every worker reads the same database: the most any live one saw, not their sum.
        self.outbox_depth = Gauge(
            "portex_outbox_depth",
            "Rows waiting in an outbox (refunds, callbacks, relay).",
            ("outbox",),
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.outbox_age = Gauge(
            "portex_outbox_oldest_age_seconds",
            "Age of the oldest row waiting in an outbox (0 when it is empty).",
            ("outbox",),
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.stream_subscribers = Gauge(
            "portex_stream_subscribers",
            "StreamInvoiceEvents subscribers connected.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.stream_lag = Gauge(
            "portex_stream_lag_events",
            "Events waiting in the fullest subscriber's queue.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.stream_overflowed = Gauge(
            "portex_stream_overflowed_subscribers",
            "Subscribers too slow for the live feed, catching up from the events table.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_size = Gauge(
            "portex_db_pool_connections",
            "Connections open in the PostgreSQL pool.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_in_use = Gauge(
            "portex_db_pool_connections_in_use",
            "Pool connections in use (not idle).",
            multiprocess_mode="livesum",
            registry=registry,
        )

    def rpc(self, grpc_type: str, method: str) -> RpcSeries:
        """The series of one gRPC method (`/package.Service/Method`), its counters at 0."""
        service, _, name = method.lstrip("/").rpartition("/")
        return RpcSeries(self, (grpc_type, service, name))

    def http_request(self, route: str, status: int) -> None:
        key = (route, status)  # routes are our templates, statuses HTTP's: a bounded set
        counter = self._http.get(key)
        if counter is None:
            counter = self._http[key] = self.http_requests.labels(route, str(status))
        counter.inc()

    # The use cases' Metrics port (service/ports.py).

    def payment_recorded(self, outcome: str) -> None:
        counter = self._payments.get(outcome)
        if counter is None:
            counter = self._payments[outcome] = self.payments.labels(outcome)
        counter.inc()

    def pre_checkout_answered(self, ok: bool, seconds: float) -> None:
        self._checkouts[ok].observe(seconds)

    def refund_attempted(self, outcome: str) -> None:
        counter = self._refunds.get(outcome)
        if counter is None:
            counter = self._refunds[outcome] = self.refunds.labels(outcome)
        counter.inc()

    def telegram_called(self, method: str, result: str) -> None:
        key = (method, result)
        counter = self._telegram.get(key)
        if counter is None:
            counter = self._telegram[key] = self.telegram_calls.labels(method, result)
        counter.inc()

    def outbox_sampled(self, outbox: str, depth: int, oldest_age_seconds: float) -> None:
        self.outbox_depth.labels(outbox).set(depth)
        self.outbox_age.labels(outbox).set(oldest_age_seconds)

    def stream_sampled(self, subscribers: int, queue_sizes: Sequence[int], overflowed: int) -> None:
        self.stream_subscribers.set(subscribers)
        self.stream_lag.set(max(queue_sizes, default=0))
        self.stream_overflowed.set(overflowed)

    def pool_sampled(self, size: int, in_use: int) -> None:
        self.pool_size.set(size)
        self.pool_in_use.set(in_use)

    def exposition(self) -> bytes:
        """The scrape's text: this process's registry, or in multiprocess mode every worker's
        files added up (read anew on every scrape)."""
        if multiprocess_mode():
            registry = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
