"""Waiting in tests for what happens asynchronously (outbox shipping, runs, worker processes):
poll with a generous deadline instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout: float = 20.0, what: str = "condition", interval: float = 0.05
) -> T:
    """Await ``predicate()`` every ``interval`` seconds until it gives a truthy value (returned);
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
