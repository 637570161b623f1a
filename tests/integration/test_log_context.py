"""Every log line joins up with its RPC or job: the interceptor binds `method`, `request_id` and
`application_id` into structlog's context, workers bind `worker`; checked on what the real
logging set-up writes."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.app import PortexApp
from portex_pay.service.outage import StoreUnavailable
from portex_pay.service.worker import PeriodicWorker
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.integration.helpers import eventually, pay_request
from tests.integration.test_log_redaction import json_lines, rendered_logs

PAY = "/portex.payment.v1.PaymentService/Pay"
QUERY = "/portex.payment.v1.PaymentService/QueryOrder"


async def test_a_line_logged_inside_an_rpc_names_the_rpc_and_the_application(
    stub,
    service: PortexApp,
    make_app: Any,
    fake_telegram: FakeBotApi,
    capfd: pytest.CaptureFixture[str],
) -> None:
    app: TestApp = await make_app()
    fake_telegram.fail_next(
        "createInvoiceLink", error_code=400, description="Bad Request: test", token=app.bot_token
    )
    request = pay_request()
    with rendered_logs(capfd) as read:
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Pay(request, metadata=app.metadata)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.QueryOrder(
                payment_pb2.QueryOrderRequest(tg_payment_id=2**62), metadata=app.metadata
            )
        lines = json_lines(read())
    [inner] = [line for line in lines if line.get("event") == "invoice creation failed"]
    assert inner["method"] == PAY
    assert inner["application_id"] == app.id
    assert inner["request_id"] == request.request_id
    [query] = [line for line in lines if line.get("event") == "rpc" and line["method"] == QUERY]
    # A request without an idempotency key gets an id of its own.
    assert query["request_id"].startswith("rpc-") and query["application_id"] == app.id


async def test_a_workers_lines_name_the_worker(capfd: pytest.CaptureFixture[str]) -> None:
    async def failing_step() -> int:
        raise StoreUnavailable("the database is away")  # a bug would end the worker instead

    worker = PeriodicWorker("test-worker", failing_step, idle=3600)
    with rendered_logs(capfd) as read:
        task = asyncio.create_task(worker.run())
        await eventually(lambda: "worker step failed" in read())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        lines = json_lines(read())
    [failed] = [line for line in lines if line.get("event") == "worker step failed"]
    assert failed["worker"] == "test-worker"
