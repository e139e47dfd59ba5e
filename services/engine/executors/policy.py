"""``policy``: ask the platform's policy engine (OPA sidecar or embedded Rego) for a decision.

::

    - id: may-deploy
      type: policy
      with:
        input: {action: deploy, environment: "${params.env}", image: "${params.image}"}
        enforce: true          # default: a deny fails the step

The engine comes from ``ctx.services["policy"]`` (anything with ``async decide(input) ->
Decision``, see ``innominatus.kit.policy``) and evaluates ``data.innominatus.authz.decision``.
Outputs ``{allow, reasons, decision_id, engine}``. With ``enforce`` a deny raises
StepFailed(kind="policy_denied", retryable=False) naming the reasons; with ``enforce: false``
the step succeeds and later steps branch on ``${steps.<id>.outputs.allow}``. An engine that
gives no usable decision fails closed: kind "policy_unavailable" (retryable). No engine lent
to the step: kind "not_wired" (not retryable).
"""

from __future__ import annotations

from typing import Any

from innominatus.engine.model import StepContext, StepFailed
from innominatus.kit.policy import PolicyEngineUnavailable

from ._process import invalid


class PolicyExecutor:
    type = "policy"
    input_schema: dict[str, Any] = {
        "type": "object",
        "required": ["input"],
        "properties": {"input": {"type": "object"}, "enforce": {"type": "boolean"}},
        "additionalProperties": False,
    }

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        spec = ctx.inputs or {}
        unknown = set(spec) - {"input", "enforce"}
        if unknown:
            raise invalid(f"policy: unknown input(s) {', '.join(sorted(unknown))}")
        document = spec.get("input")
        if not isinstance(document, dict):
            raise invalid("policy: `input` must be a mapping (the Rego input document)")
        enforce = spec.get("enforce", True)
        if not isinstance(enforce, bool):
            raise invalid("policy: `enforce` must be true or false")
        engine = (ctx.services or {}).get("policy")
        if engine is None:
            raise StepFailed("policy: no policy engine is available to this step (services['policy'] is not set)",
                             kind="not_wired", retryable=False)
        if ctx.cancelled.is_set():
            raise StepFailed("policy: cancelled", kind="cancelled", retryable=False)
        try:
            decision = await engine.decide(document)
        except PolicyEngineUnavailable as exc:
            raise StepFailed(f"policy: {exc}", kind="policy_unavailable", retryable=True) from exc
        reasons = [str(r) for r in (decision.reasons or ())]
        outputs = {
            "allow": bool(decision.allow),
            "reasons": reasons,
            "decision_id": str(decision.decision_id),
            "engine": str(getattr(decision, "engine", "")),
        }
        await ctx.log(f"policy decision {outputs['decision_id']}: {'allow' if outputs['allow'] else 'deny'}"
                      + (f" ({'; '.join(reasons)})" if reasons else ""))
        if enforce and not outputs["allow"]:
            error = StepFailed("policy denied: " + ("; ".join(reasons) or "no rule allows it"),
                               kind="policy_denied", retryable=False)
            error.outputs = outputs  # type: ignore[attr-defined]
            raise error
        return outputs
