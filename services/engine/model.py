"""The workflow model every part of the engine shares.

``definition.py`` loads and validates workflow YAML into these types; the scheduler
(``scheduler.py``) runs them durably; executors (``executors/``) run single steps. Keeping
the types here lets the three evolve independently.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

WORKFLOW_API_VERSION = "innominatus.dev/v1"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1  # 1 = no retry
    initial_interval: float = 1.0  # seconds
    multiplier: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.0  # 0..1, fraction of the delay added or removed at random
    non_retryable: tuple[str, ...] = ()  # StepFailed.kind values that stop at once

    def delay(self, attempt: int) -> float:
        """Base delay before attempt ``attempt + 1`` (attempt counts from 1), without jitter."""
        return min(self.initial_interval * self.multiplier ** (attempt - 1), self.max_interval)


@dataclass(frozen=True)
class StepDef:
    id: str
    type: str
    with_: dict[str, Any] = field(default_factory=dict)  # `with:` inputs, placeholders unresolved
    depends_on: tuple[str, ...] = ()
    # CEL expressions; `when`/`if` run the step when true, `unless` skips it when true.
    when: str | None = None
    unless: str | None = None
    retry: RetryPolicy = RetryPolicy()
    timeout: float | None = None  # seconds per attempt
    outputs: dict[str, str] = field(default_factory=dict)  # name -> expression/placeholder over the result
    for_each: str | None = None  # expression yielding a list; the step fans out, one item each
    uses: str | None = None  # sub-workflow name (type "workflow")
    on_failure: tuple["StepDef", ...] = ()  # compensation steps, run in reverse completion order
    approval: dict[str, Any] | None = None  # approval gate settings (type "approval")
    line: int = 0  # where it was defined, for findings
    column: int = 0


@dataclass(frozen=True)
class ParamDef:
    name: str
    schema: dict[str, Any]  # JSON schema of the value
    default: Any = None
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class WorkflowDef:
    name: str
    version: str
    steps: tuple[StepDef, ...]
    params: tuple[ParamDef, ...] = ()
    variables: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 0  # max steps running at once in one run; 0 = unlimited
    # spec.concurrency_group: placeholders over params/vars/workflow fields, resolved when a run
    # starts; runs of one resolved group run one at a time, oldest first. "" = no group.
    concurrency_group: str = ""
    deadline: float | None = None  # seconds for the whole run
    description: str = ""
    source: str = ""  # the YAML it came from
    tags: tuple[str, ...] = ()  # metadata.tags (golden-path catalog)
    owner: str = ""  # metadata.owner (golden-path catalog)


class StepFailed(Exception):
    """A step attempt failed. ``kind`` is matched against RetryPolicy.non_retryable."""

    def __init__(self, message: str, kind: str = "error", retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable


@dataclass
class StepContext:
    """What an executor gets for one attempt of one step."""

    run_id: str
    step_id: str
    attempt: int
    # Stable across attempts of the same step: executors pass it to external systems so a
    # retried attempt after a crash does not repeat a change.
    idempotency_key: str
    inputs: dict[str, Any]  # `with:` with every placeholder resolved
    workdir: str
    cancelled: asyncio.Event
    log: Callable[[str], Awaitable[None]]
    services: dict[str, Any] = field(default_factory=dict)  # clients the platform lends (policy, resources, ...)


class StepExecutor(Protocol):
    type: str

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        """Do the step; return its outputs. Raise StepFailed on failure."""
        ...
