"""``Expiry``: one timer for every deadline of the process, on a fake clock."""

from __future__ import annotations

import asyncio

from sanic_feeds.server.expiry import Expiry


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0.02)


async def test_each_item_is_due_once_when_its_deadline_passes() -> None:
    clock, due = Clock(), []
    expiry: Expiry[str] = Expiry(asyncio.get_running_loop(), due.append, clock)
    expiry.set("b", 1000.02)
    expiry.set("a", 1000.01)
    expiry.set("later", 2000.0)
    clock.now_s = 1000.03
    await settle()
    assert due == ["a", "b"]
    assert len(expiry) == 1
    expiry.close()


async def test_a_moved_or_discarded_deadline_does_not_fire() -> None:
    clock, due = Clock(), []
    expiry: Expiry[str] = Expiry(asyncio.get_running_loop(), due.append, clock)
    expiry.set("refreshed", 1000.01)
    expiry.set("closed", 1000.01)
    expiry.set("refreshed", 5000.0)
    expiry.discard("closed")
    clock.now_s = 1000.05
    await settle()
    assert due == []
    clock.now_s = 5000.0
    expiry.set("poke", 1000.0)  # an earlier deadline resets the timer
    await settle()
    assert due == ["poke", "refreshed"]
    expiry.close()


async def test_one_timer_however_many_deadlines() -> None:
    clock = Clock()
    expiry: Expiry[int] = Expiry(asyncio.get_running_loop(), lambda _: None, clock)
    for n in range(1000):
        expiry.set(n, 2000.0 + n)
    handles = [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    assert len([h for h in handles if getattr(h, "_callback", None) == expiry._fire]) == 1
    expiry.close()


async def test_stale_entries_are_dropped_as_items_come_and_go() -> None:
    clock = Clock()
    expiry: Expiry[int] = Expiry(asyncio.get_running_loop(), lambda _: None, clock)
    for n in range(10_000):
        expiry.set(n, 5000.0)
        expiry.discard(n)
    assert len(expiry) == 0
    assert len(expiry._heap) < 200
    expiry.close()


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    clock, due = Clock(), []

    def on_due(item: str) -> None:
        if item == "bad":
            raise RuntimeError("boom")
        due.append(item)

    expiry: Expiry[str] = Expiry(asyncio.get_running_loop(), on_due, clock)
    expiry.set("bad", 1000.0)
    expiry.set("good", 1000.0)
    await settle()
    assert due == ["good"]
    expiry.close()
