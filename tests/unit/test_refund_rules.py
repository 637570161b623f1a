"""The refund's states and their transition table (domain/refunds.py): what the adapter's
compare-and-set guards are derived from, written out by hand here so that a change to the table
shows up as a change to what the database accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from portex_pay.domain.refunds import (
    DUE,
    RETRYABLE,
    TRANSITIONS,
    RefundState,
    allows,
    attempt_sources,
    sources,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        (RefundState.PENDING, ["pending", "failed"]),
        (RefundState.SUCCEEDED, ["pending", "failed"]),
        (RefundState.FAILED, ["pending"]),
    ],
)
def test_the_states_a_refund_may_change_from_come_from_the_table(target, allowed) -> None:
    assert sources(target) == allowed
    assert [state.value for state in RefundState if allows(state, target)] == allowed


def test_a_succeeded_refund_is_settled_for_good() -> None:
    assert TRANSITIONS[RefundState.SUCCEEDED] == frozenset()


def test_a_failed_refund_succeeds_on_telegrams_word_or_is_retried() -> None:
    assert TRANSITIONS[RefundState.FAILED] == {RefundState.SUCCEEDED, RefundState.PENDING}


def test_the_worker_attempts_only_pending_refunds() -> None:
    assert {RefundState.PENDING} == DUE


def test_retry_refund_sends_again_only_failed_refunds() -> None:
    assert {RefundState.FAILED} == RETRYABLE


def test_a_late_failed_attempt_never_revives_a_failed_refund() -> None:
    """An attempt's failure moves only a refund the worker sends (pending): a failed one stays
    failed, although the table lets RetryRefund make it pending."""
    assert attempt_sources(RefundState.PENDING) == ["pending"]
    assert attempt_sources(RefundState.FAILED) == ["pending"]


def test_the_ledger_store_writes_no_refund_state_guard_of_its_own() -> None:
    """A `state IN (...)`, `state = '<literal>'` or `state <> ...` condition in the ledger's SQL
    would be a second copy of a table; its guards are `state = ANY($n)` with `sources()`."""
    for name in ("ledger_store.py", "refunds.py"):
        text = (ROOT / "server/portex_pay/adapters/postgres" / name).read_text()
        assert not re.findall(r"(?:WHERE|AND)\s+state\s*(?:IN\s*\(|=\s*'|<>)", text)
