"""The placeholder executor of ``workflow`` steps.

A sub-workflow step (``uses: <name>``) is run by the scheduler itself -- it starts a child run
and never looks an executor up for the type. The placeholder lets definitions using the type
load, and anything that does call it fails clearly with StepFailed(kind="not_wired",
retryable=False) instead of an unknown-type error.
"""

from __future__ import annotations

from typing import Any

from innominatus.engine.model import StepContext, StepFailed


class NotWiredExecutor:
    """Stands in for a step type another component must provide."""

    placeholder = True
    input_schema: dict[str, Any] = {"type": "object"}

    def __init__(self, type: str, owner: str) -> None:
        self.type = type
        self.owner = owner

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        raise StepFailed(
            f"step type {self.type!r} is not wired in this engine: it is run by {self.owner}, "
            f"which has not registered its executor",
            kind="not_wired",
            retryable=False,
        )


def workflow_placeholder() -> NotWiredExecutor:
    return NotWiredExecutor("workflow", "the workflow scheduler (sub-workflows)")
