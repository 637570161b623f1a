"""The hot-path lookup cache (service/cache.py): entries expire, the least recently used goes
first, and answers that found nothing can never push the found ones out."""

from __future__ import annotations

from portex_pay.service.cache import LookupCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Store:
    def __init__(self, known: dict[str, str]) -> None:
        self.known = known
        self.loads: list[str] = []

    async def load(self, key: str) -> str | None:
        self.loads.append(key)
        return self.known.get(key)


async def test_an_answer_is_reused_for_ttl_seconds_then_loaded_again() -> None:
    clock, store = Clock(), Store({"a": "app-a"})
    cache = LookupCache(store.load, 5.0, clock=clock)
    assert await cache.get("a") == "app-a"
    assert await cache.get("nope") is None
    clock.now = 4.9
    assert await cache.get("a") == "app-a" and await cache.get("nope") is None
    assert store.loads == ["a", "nope"]
    store.known["nope"] = "created since"  # e.g. the operator added it
    clock.now = 5.1
    assert await cache.get("nope") == "created since"
    assert await cache.get("a") == "app-a"
    assert store.loads == ["a", "nope", "nope", "a"]


async def test_a_flood_of_unknown_keys_never_evicts_the_known_ones() -> None:
    store = Store({f"live-{i}": f"app-{i}" for i in range(3)})
    cache = LookupCache(store.load, 60.0, clock=Clock(), found_max=3, missing_max=10)
    for i in range(3):
        await cache.get(f"live-{i}")
    for i in range(10_000):
        assert await cache.get(f"random-{i}") is None
    store.loads.clear()
    for i in range(3):
        assert await cache.get(f"live-{i}") == f"app-{i}"
    assert store.loads == []  # all three still cached


async def test_when_full_the_least_recently_used_answer_goes() -> None:
    store = Store({k: k.upper() for k in "abc"})
    cache = LookupCache(store.load, 60.0, clock=Clock(), found_max=2)
    await cache.get("a")
    await cache.get("b")
    await cache.get("a")  # a is now more recent than b
    await cache.get("c")  # evicts b
    store.loads.clear()
    await cache.get("a")
    await cache.get("b")
    assert store.loads == ["b"]


async def test_peek_answers_what_is_remembered_without_ever_loading() -> None:
    clock, store = Clock(), Store({"a": "app-a"})
    cache = LookupCache(store.load, 5.0, clock=clock)
    assert cache.peek("a") is None  # never asked: not loaded by peeking either
    assert store.loads == []
    await cache.get("a")
    await cache.get("nope")
    assert (cache.peek("a"), cache.peek("nope")) == ("app-a", None)
    clock.now = 5.1
    assert cache.peek("a") is None  # expired
    assert store.loads == ["a", "nope"]
