"""Bounded steps of a broker's close (brokers/closing.py): no Redis needed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sanic_feeds.brokers.closing import cancel_within, finish_within


async def test_a_step_that_hangs_is_left_behind_after_its_bound() -> None:
    began = asyncio.get_running_loop().time()
    await finish_within(asyncio.sleep(3600), "a hung step", timeout_s=0.05)
    assert asyncio.get_running_loop().time() - began < 1


async def test_a_step_that_fails_with_a_bug_is_logged_and_the_close_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise ValueError("a bug")

    with caplog.at_level(logging.ERROR, logger="sanic_feeds.broker"):
        await finish_within(broken(), "the broken step")  # does not raise
    assert "the broken step failed while closing" in caplog.text
    assert "ValueError: a bug" in caplog.text


async def test_a_task_that_ignores_its_cancellation_does_not_hold_the_close() -> None:
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue  # as a cancellation swallowed by a timeout would

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    began = asyncio.get_running_loop().time()
    await cancel_within((task, None), "a stubborn task", timeout_s=0.05)
    assert asyncio.get_running_loop().time() - began < 1
    assert not task.done()
    released.set()
    await task
