"""feeds.js and the demo page in headless Chromium, against real servers (docs/protocol.md):
two instances on Redis see each other's messages, a page whose instance is SIGKILLed gets
every message once and in order, a reloaded page recovers from sessionStorage, and one page
holds 20 subscriptions over one socket."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import BarePage

pytestmark = pytest.mark.browser

#: Long enough for a killed instance to restart and the page's backoff to come back.
RECOVERY_TIMEOUT_MS = 45_000


def publish(base_url: str, channel: str, data: Any) -> dict[str, Any]:
    """POST /api/publish; returns {"offset", "epoch"}."""
    request = urllib.request.Request(
        f"{base_url}/api/publish",
        data=json.dumps({"channel": channel, "data": data}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body: dict[str, Any] = json.loads(reply.read())
        return body


def rows(page: Any, selector: str = ".msg:not(.earlier)") -> list[tuple[int, str]]:
    """The demo page's message rows: (offset, text of the data)."""
    found: list[list[Any]] = page.eval_on_selector_all(
        selector, "rows => rows.map(r => [+r.dataset.offset, r.querySelector('.data').textContent])"
    )
    return [(offset, text) for offset, text in found]


def wait_rows(page: Any, count: int, timeout_ms: int = 15_000) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('.msg:not(.earlier)').length >= n",
        arg=count,
        timeout=timeout_ms,
    )


def wait_note(page: Any, text: str, timeout_ms: int = 15_000) -> None:
    page.wait_for_selector(f".note:has-text({json.dumps(text)})", timeout=timeout_ms)


def events(page: Any, kind: str) -> list[dict[str, Any]]:
    """What the bare page's client delivered, of one kind ("subscribed", "message")."""
    found: list[dict[str, Any]] = page.evaluate(
        "kind => window.events.filter(e => e.kind === kind)", kind
    )
    return found


def wait_events(page: Any, kind: str, count: int, timeout_ms: int = 15_000) -> None:
    page.wait_for_function(
        "([kind, n]) => (window.events || []).filter(e => e.kind === kind).length >= n",
        arg=[kind, count],
        timeout=timeout_ms,
    )


def test_the_demo_page_and_a_bare_page_on_two_instances_see_each_other(
    feeds_server_factory: Any,
    redis_url: str,
    open_page: Callable[[str], Any],
    bare_page: BarePage,
    screenshot: Callable[[Any, str], Path],
) -> None:
    one = feeds_server_factory(broker=redis_url)
    two = feeds_server_factory(broker=redis_url)
    channel = "lobby"  # every server here is new, and redis_url is flushed
    demo = open_page(f"{one.url}/#{channel}")
    wait_note(demo, "Subscribed at offset 0")
    assert demo.text_content("#state-text") == "connected"
    bare = open_page(bare_page.address(two.url, [channel]))
    wait_events(bare, "subscribed", 1)

    # The demo's publish box, on instance one, reaches the bare page on instance two.
    demo.fill("#text", '{"text": "hello from one"}')
    demo.press("#text", "Enter")
    wait_events(bare, "message", 1)
    [first] = events(bare, "message")
    assert (first["offset"], first["data"]) == (1, {"text": "hello from one"})

    # The bare page publishes through instance two; the demo page shows it, and the reply
    # carries the offset and the epoch.
    reply = bare.evaluate("([c, d]) => client.publish(c, d)", [channel, "hello from two"])
    assert reply == {"offset": 2, "epoch": first["epoch"]}
    publish(two.url, channel, {"title": "Deploy finished", "build": 4182})
    wait_rows(demo, 3)
    assert [offset for offset, _ in rows(demo)] == [1, 2, 3]
    assert rows(demo)[1] == (2, "hello from two")

    # Both pages are present on the channel, whichever instance they are on.
    demo.wait_for_function("document.querySelector('#presence-count').textContent === '2'")
    assert demo.locator(".msg[data-offset='1'] .from").text_content() == "you"
    screenshot(demo, "two-instances")


def test_a_page_whose_instance_is_killed_gets_every_message_once_in_order(
    feeds_server_factory: Any,
    redis_url: str,
    open_page: Callable[[str], Any],
    bare_page: BarePage,
    screenshot: Callable[[Any, str], Path],
) -> None:
    one = feeds_server_factory(broker=redis_url)
    two = feeds_server_factory(broker=redis_url)
    channel = "orders"
    demo = open_page(f"{one.url}/#{channel}")
    bare = open_page(bare_page.address(one.url, [channel]))
    wait_note(demo, "Subscribed at offset 0")
    wait_events(bare, "subscribed", 1)
    for n in range(1, 4):
        bare.evaluate("([c, d]) => client.publish(c, d)", [channel, f"order {n}"])
    wait_rows(demo, 3)
    wait_events(bare, "message", 3)

    # The pages' instance dies; meanwhile the channel goes on through the other one.
    one.kill()
    demo.wait_for_selector("#state[data-state='connecting']")
    for n in range(4, 9):
        publish(two.url, channel, f"order {n}")
    one.start()
    wait_note(demo, "Recovered 5 messages", RECOVERY_TIMEOUT_MS)
    wait_events(bare, "subscribed", 2, RECOVERY_TIMEOUT_MS)
    for n in range(9, 11):  # from the demo's publish box, once connected again
        demo.fill("#text", f"order {n}")
        demo.press("#text", "Enter")
        wait_rows(demo, n)
    wait_rows(demo, 10)
    wait_events(bare, "message", 10)

    expected = [(n, f"order {n}") for n in range(1, 11)]
    assert rows(demo) == expected
    assert [(e["offset"], e["data"]) for e in events(bare, "message")] == expected
    subscribed = events(bare, "subscribed")
    flags = [(e["recovered"], e["wasRecovering"], e["since"]) for e in subscribed]
    assert flags == [(False, False, None), (True, True, 3)]
    assert demo.text_content("#state-text") == "connected"
    # The presence list drops the entries the killed instance left behind.
    demo.wait_for_function(
        "document.querySelector('#presence-count').textContent === '2'", timeout=30_000
    )
    demo.set_viewport_size({"width": 1200, "height": 900})
    screenshot(demo, "recovered")


def test_a_reloaded_page_recovers_from_session_storage(
    feeds_server_factory: Any,
    open_page: Callable[[str], Any],
    bare_page: BarePage,
    screenshot: Callable[[Any, str], Path],
) -> None:
    server = feeds_server_factory()
    channel = "news"
    demo = open_page(f"{server.url}/#{channel}")
    bare = open_page(bare_page.address(server.url, [channel]))
    wait_note(demo, "Subscribed at offset 0")
    wait_events(bare, "subscribed", 1)
    for n in range(1, 3):
        publish(server.url, channel, f"news {n}")
    wait_rows(demo, 2)
    wait_events(bare, "message", 2)

    # Both pages go away; what is published before they come back is not lost to them.
    demo.evaluate("feedsDemo.client.close()")
    bare.evaluate("client.close()")
    for n in range(3, 6):
        publish(server.url, channel, f"news {n}")
    demo.reload()
    bare.reload()

    wait_note(demo, "Recovered 3 messages")
    wait_rows(demo, 3)
    assert rows(demo) == [(n, f"news {n}") for n in range(3, 6)]
    demo.wait_for_selector(".msg.earlier")
    assert [offset for offset, _ in rows(demo, ".msg.earlier")] == [1, 2]
    stored = json.loads(demo.evaluate("name => sessionStorage.getItem('feeds:' + name)", channel))
    assert stored["offset"] == 5

    wait_events(bare, "message", 3)
    [again] = events(bare, "subscribed")
    assert (again["recovered"], again["wasRecovering"], again["since"]) == (True, True, 2)
    assert [e["offset"] for e in events(bare, "message")] == [3, 4, 5]
    screenshot(demo, "reloaded")


def test_one_page_holds_twenty_subscriptions_over_one_socket(
    feeds_server_factory: Any, open_page: Callable[[str], Any], bare_page: BarePage
) -> None:
    server = feeds_server_factory()
    channels = [f"room:{n}" for n in range(20)]
    page = open_page(bare_page.address(server.url, channels))
    wait_events(page, "subscribed", 20)
    for n, channel in enumerate(channels):
        publish(server.url, channel, n)
    wait_events(page, "message", 20)

    got = {e["channel"]: e["data"] for e in events(page, "message")}
    assert got == {channel: n for n, channel in enumerate(channels)}
    # One connection has one client id, the same on every channel it holds.
    present: set[str] = set()
    for channel in channels:
        with urllib.request.urlopen(f"{server.url}/api/channels/{channel}", timeout=10) as reply:
            present |= set(json.loads(reply.read())["presence"])
    assert len(present) == 1
