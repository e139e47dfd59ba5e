"""Step executors and the registry the scheduler looks them up in.

An executor is any object with a ``type`` (the ``type:`` of a step) and
``async def run(ctx: StepContext) -> dict`` (see ``innominatus.engine.model.StepExecutor``).
It returns the step's outputs or raises ``StepFailed(message, kind=..., retryable=...)``;
it honours ``ctx.cancelled`` promptly, writes progress with ``await ctx.log(line)`` and never
logs secrets. Executors may also carry ``input_schema`` (a JSON schema of ``with:``) for the
definition loader.

Built-ins (:func:`default_registry`): ``shell``, ``http``, ``git``, ``wait``, ``approval``,
``policy``, ``ansible``, ``kubectl``, ``terraform``, ``tofu``, ``helm``, ``resource`` (calls the
resources service lent as ``ctx.services["resources"]``), plus the placeholder ``workflow``
(it fails with kind "not_wired" until the scheduler registers its own with ``replace=True``). See docs/step-types.md.

Two exceptions are not failures: :class:`ApprovalRequired` (raised by ``approval``; the
scheduler parks the step as WAITING) and :class:`UnknownStepType` (from :meth:`get`).
"""

from __future__ import annotations

import difflib
from typing import Any, Iterator

from innominatus.engine.model import StepExecutor

from .ansible import AnsibleExecutor
from .approval import ApprovalExecutor, ApprovalRequired, approved_outputs, rejected_error
from .git import GitExecutor
from .placeholders import NotWiredExecutor, workflow_placeholder
from .policy import PolicyExecutor
from .resource import ResourceExecutor
from .shell import ShellExecutor, script_has_placeholder
from .tools import ToolExecutor, helm, kubectl, terraform, tofu
from .wait import WaitExecutor
from .webhook import HttpExecutor

__all__ = [
    "AnsibleExecutor",
    "ApprovalExecutor",
    "ApprovalRequired",
    "ExecutorRegistry",
    "GitExecutor",
    "HttpExecutor",
    "NotWiredExecutor",
    "PolicyExecutor",
    "ResourceExecutor",
    "ShellExecutor",
    "ToolExecutor",
    "UnknownStepType",
    "WaitExecutor",
    "approved_outputs",
    "default_registry",
    "rejected_error",
    "script_has_placeholder",
]


class UnknownStepType(LookupError):
    """No executor is registered for a step type."""

    def __init__(self, type: str, known: list[str]) -> None:
        self.type = type
        self.known = known
        self.suggestions = difflib.get_close_matches(type, known, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        message = f"unknown step type {type!r}{hint} (known types: {', '.join(known) or 'none'})"
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class ExecutorRegistry:
    """Step type -> executor."""

    def __init__(self, executors: list[Any] | None = None) -> None:
        self._executors: dict[str, StepExecutor] = {}
        for executor in executors or ():
            self.register(executor)

    def register(self, executor: StepExecutor, *, replace: bool = False) -> StepExecutor:
        """Add ``executor`` under ``executor.type``. A type already taken is an error unless
        ``replace`` (how the scheduler and the resources service take over their placeholders)."""
        type_ = getattr(executor, "type", None)
        if not isinstance(type_, str) or not type_:
            raise TypeError(f"{executor!r} has no step `type`")
        if not callable(getattr(executor, "run", None)):
            raise TypeError(f"executor for {type_!r} has no run(ctx) method")
        if type_ in self._executors and not replace:
            raise ValueError(f"an executor for step type {type_!r} is already registered (pass replace=True)")
        self._executors[type_] = executor
        return executor

    def get(self, type: str) -> StepExecutor:
        try:
            return self._executors[type]
        except KeyError:
            raise UnknownStepType(type, self.types()) from None

    def types(self) -> list[str]:
        return sorted(self._executors)

    def is_placeholder(self, type: str) -> bool:
        return bool(getattr(self._executors.get(type), "placeholder", False))

    def __contains__(self, type: object) -> bool:
        return type in self._executors

    def __iter__(self) -> Iterator[str]:
        return iter(self.types())

    def __len__(self) -> int:
        return len(self._executors)


def default_registry(*, placeholders: bool = True, tool_path: str | None = None) -> ExecutorRegistry:
    """Every built-in executor. ``tool_path`` overrides the PATH the CLI-tool executors
    (kubectl, terraform, tofu, helm, ansible) are looked up on."""
    registry = ExecutorRegistry([
        ShellExecutor(),
        HttpExecutor(),
        GitExecutor(),
        WaitExecutor(),
        ApprovalExecutor(),
        PolicyExecutor(),
        AnsibleExecutor(path=tool_path),
        kubectl(path=tool_path),
        terraform(path=tool_path),
        tofu(path=tool_path),
        helm(path=tool_path),
    ])
    if placeholders:
        registry.register(workflow_placeholder())
    # `resource` steps call the resources service through ctx.services["resources"].
    registry.register(ResourceExecutor())
    return registry
