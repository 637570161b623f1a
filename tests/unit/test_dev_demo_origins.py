"""`make run`'s dev application: the demo page's origins replace earlier runs' instead of
piling up (set_origins caps an application's origins, so `make run` would stop at start)."""

from __future__ import annotations

from portex_pay_devtools.run import _with_demo_origins

OTHERS = ["https://game.example.com", "https://other.example.com"]


def demo(port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]


def test_each_runs_demo_origins_replace_the_last_runs_and_keep_the_others() -> None:
    allowed = [*OTHERS]
    for port in range(8000, 8100):  # 100 runs, an HTTP port of their own each
        allowed = _with_demo_origins(allowed, demo(port))
    assert allowed == [*OTHERS, *demo(8099)]


def test_an_ipv6_loopback_origin_is_a_demo_origin_too_and_https_ones_are_kept() -> None:
    allowed = ["http://[::1]:8080", "https://localhost:8443", *OTHERS]
    assert _with_demo_origins(allowed, demo(9000)) == [
        "https://localhost:8443",
        *OTHERS,
        *demo(9000),
    ]


def test_without_a_demo_the_origins_are_left_alone() -> None:
    allowed = [*OTHERS, *demo(8080)]
    assert _with_demo_origins(allowed, []) == allowed


def test_a_run_on_the_same_port_changes_nothing() -> None:
    allowed = [*OTHERS, *demo(8080)]
    assert _with_demo_origins(allowed, demo(8080)) == allowed
