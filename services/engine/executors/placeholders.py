"""Placeholder executors for step types other services run.

``workflow`` (a sub-workflow: ``uses: <name>``) is run by the scheduler itself -- it starts a
child run and never looks an executor up for the type -- and ``resource`` (provision /
deprovision) by the resources service. Until those register their own executors
(``registry.register(executor, replace=True)``), these stand in so that definitions using the
types load, and anything that does call one fails clearly with StepFailed(kind="not_wired",
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


def resource_placeholder() -> NotWiredExecutor:
    return NotWiredExecutor("resource", "the resources service")
