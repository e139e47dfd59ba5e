"""``approval``: a gate a person decides; it never blocks a worker.

Contract with the scheduler
---------------------------
``ApprovalExecutor.run`` raises :class:`ApprovalRequired` carrying the gate's settings (the
step's resolved ``with:``; the step's own ``approval:`` block stays with the scheduler, which
has it in ``StepDef.approval``). ``ApprovalRequired`` is NOT a StepFailed: the scheduler
recognises it by class name (``innominatus.engine.scheduler._is_approval``), commits the step
as WAITING_APPROVAL and gives its lease back. Nothing is retried and no worker is held.

The executor is not run again for the gate: the approve/reject operation (policy-gated)
settles the step in the scheduler, with outputs shaped like :func:`approved_outputs`
(``{approved: true, by, reason}``) or a failure of kind "rejected" (:func:`rejected_error`;
never retried). The gate's ``timeout`` is enforced by the scheduler while it waits.

::

    - id: prod-gate
      type: approval
      approval:                              # the step's gate settings (workflow schema)
        message: "Deploy ${params.version} to production?"
        approvers: [group:sre, alice]        # who may decide (checked by the policy gate)
        timeout: 24h
"""

from __future__ import annotations

from typing import Any, Mapping

from innominatus.engine.model import StepContext, StepFailed


class ApprovalRequired(Exception):
    """Raised by the ``approval`` executor: the step waits for a person's decision."""

    def __init__(self, settings: Mapping[str, Any], *, run_id: str = "", step_id: str = "") -> None:
        self.settings = dict(settings)
        self.run_id = run_id
        self.step_id = step_id
        self.message = str(self.settings.get("message") or f"approve step {step_id} of run {run_id}")
        approvers = self.settings.get("approvers") or []
        self.approvers = [str(a) for a in approvers] if isinstance(approvers, list) else [str(approvers)]
        timeout = self.settings.get("timeout")
        self.timeout = float(timeout) if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else None
        super().__init__(f"approval required: {self.message}")


def approved_outputs(by: str, reason: str = "") -> dict[str, Any]:
    """The outputs of an approved gate (the shape the scheduler records)."""
    return {"approved": True, "by": by, "reason": reason}


def rejected_error(by: str, reason: str = "") -> StepFailed:
    """The failure of a rejected gate: kind "rejected", never retried."""
    return StepFailed(f"rejected by {by or 'someone'}" + (f": {reason}" if reason else ""),
                      kind="rejected", retryable=False)


class ApprovalExecutor:
    type = "approval"
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "message": {"type": "string"},
            "approvers": {"type": "array", "items": {"type": "string"}},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "min_approvals": {"type": "integer", "minimum": 1},
        },
    }

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        settings = dict(ctx.inputs or {})
        await ctx.log("waiting for approval")
        raise ApprovalRequired(settings, run_id=ctx.run_id, step_id=ctx.step_id)
