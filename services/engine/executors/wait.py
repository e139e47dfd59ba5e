"""``wait``: sleep for ``with: {seconds}``, waking at once when the run is cancelled.

Outputs ``{waited}`` (seconds actually slept). Cancelled -> StepFailed(kind="cancelled",
retryable=False). A durable timer that survives a worker restart is the scheduler's business
(it may persist a wake-up time and skip this executor); this one is the in-process sleep.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from innominatus.engine.model import StepContext, StepFailed

from ._process import invalid


class WaitExecutor:
    type = "wait"
    input_schema: dict[str, Any] = {
        "type": "object",
        "required": ["seconds"],
        "properties": {"seconds": {"type": "number", "minimum": 0}},
        "additionalProperties": False,
    }

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        seconds = (ctx.inputs or {}).get("seconds")
        if isinstance(seconds, str):
            try:
                seconds = float(seconds)
            except ValueError:
                pass
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0 or seconds != seconds:
            raise invalid(f"wait: `seconds` must be a number >= 0, got {seconds!r}")
        unknown = set(ctx.inputs or {}) - {"seconds"}
        if unknown:
            raise invalid(f"wait: unknown input(s) {', '.join(sorted(unknown))}")
        await ctx.log(f"waiting {seconds:g}s")
        started = time.monotonic()
        try:
            await asyncio.wait_for(ctx.cancelled.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            waited = round(time.monotonic() - started, 3)
            return {"waited": waited}
        waited = time.monotonic() - started
        await ctx.log(f"cancelled after {waited:.3f}s")
        raise StepFailed(f"wait: cancelled after {waited:.3f}s of {seconds:g}s", kind="cancelled", retryable=False)
