"""Benchmarks (`make bench`): figures printed side by side from one run, never asserted."""

from __future__ import annotations

import os

# The bench starts processes (servers, clients) while its own gRPC channels are open; gRPC's fork
# handlers would log "skipping fork() handlers" for each. Nothing here forks into gRPC code: the
# children exec at once.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def uvloop_setting() -> bool:
    """PORTEX_UVLOOP as `serve` reads it (default on): a bench process runs the loop the service
    runs on. (Only that variable is read: no DATABASE_URL needed.)"""
    from portex_pay.config import Settings

    environment = {**os.environ, "DATABASE_URL": "postgresql://bench"}
    return Settings.from_env(environment, serving=False).grpc.uvloop
