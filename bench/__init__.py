"""Benchmarks (`make bench`): figures printed side by side from one run, never asserted."""

from __future__ import annotations

import os


def uvloop_setting() -> bool:
    """PORTEX_UVLOOP as `serve` reads it (default on): a bench process runs the loop the service
    runs on. (Only that variable is read: no DATABASE_URL needed.)"""
    from portex_pay.config import Settings

    environment = {**os.environ, "DATABASE_URL": "postgresql://bench"}
    return Settings.from_env(environment, serving=False).grpc.uvloop
