"""Fault injection: make the next calls of a method fail with an error, wait, or lose their
connection (`fail_next`, `delay`, `drop_connection`); the server applies them to each request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class _Fault:
    kind: Literal["fail", "delay", "drop"]
    method: str  # lower-case method name, or "*" for every method
    token: str | None
    remaining: int | None  # None: until cleared
    error_code: int = 0
    description: str = ""
    retry_after: int | None = None
    seconds: float = 0.0

    def matches(self, method: str, token: str) -> bool:
        return (self.method in ("*", method.lower())) and self.token in (None, token)


class _Faults:
    """The faults waiting for their calls; `_take_fault` uses one up."""

    def __init__(self) -> None:
        self._faults: list[_Fault] = []

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
        token: str | None = None,
    ) -> None:
        """The next `times` calls of `method` ("*" = any) answer this error instead of running."""
        if not 400 <= error_code <= 599:
            raise ValueError("error_code must be an HTTP error status (400-599)")
        if times < 1:
            raise ValueError("times must be at least 1")
        self._faults.append(
            _Fault(
                "fail",
                method.lower(),
                token,
                times,
                error_code=error_code,
                description=description,
                retry_after=retry_after,
            )
        )

    def delay(
        self, method: str, seconds: float, times: int | None = None, *, token: str | None = None
    ) -> None:
        """Holds the answer of `method` for `seconds` (`times` calls; None = until cleared)."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        self._faults.append(_Fault("delay", method.lower(), token, times, seconds=seconds))

    def drop_connection(self, method: str, times: int = 1, *, token: str | None = None) -> None:
        """Closes the TCP connection of the next `times` calls without answering."""
        if times < 1:
            raise ValueError("times must be at least 1")
        self._faults.append(_Fault("drop", method.lower(), token, times))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, kind: str, method: str, token: str) -> _Fault | None:
        for fault in self._faults:
            if fault.kind == kind and fault.matches(method, token):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None
