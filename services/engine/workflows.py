"""Built-in workflows and their step executors.

``deploy`` (started by the specs service through StartRun) is built per run from the run's
inputs by :func:`deploy_workflow`: ``validate`` checks the submitted workload; one
``provision-<ref>`` step of type ``resource`` per resource the workload claims (the ``claims``
input: ``[{ref, resource, depends_on}]``) provisions it through the resources service, after the
provision steps of the resources whose outputs its params use (independent ones run in
parallel); ``render`` hands the provisioned outputs (secret outputs as ``secret://``
references) to the specs service (``FinalizeDeployment``), which renders the workload into an
immutable deployment set and commits it to the environment's GitOps repository; ``release``
records the outcome and writes the rendered Deployment manifest into the data directory; in
parallel with it, one ``release-<ref>`` `resource` step per claim the workload's new version no
longer declares (the ``dropped`` input) releases that workload's claim, once the commit is made.
The run stores its definition snapshot, so a resumed run keeps the steps it started with.

``undeploy`` is built by :func:`undeploy_workflow` from the same ``claims`` input: one
``deprovision-<ref>`` step per resource, in reverse dependency order, then ``remove``
(``FinalizeUndeploy``: the application's directory leaves the GitOps repository and its
deployments there are marked removed). It runs as the sub-workflow of the ``undeploy-app``
golden path (which the specs service's DeleteApplication starts), built by the scheduler from
the claims the path's ``undeploy.plan`` step (:func:`plan_undeploy`) got from specs.

The built-in steps are plain functions over a :class:`DeployContext`; :class:`FunctionExecutor`
adapts them to the engine's executor protocol, taking the run's params, application and
environment and earlier steps' outputs from the step's resolved ``with:`` inputs.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from ruamel.yaml import YAML

from innominatus.engine import model
from innominatus.kit.errors import FailedPrecondition, InnominatusError


@dataclass(frozen=True)
class DeployContext:
    run_id: str
    application: str
    environment: str
    inputs: dict
    outputs: dict  # outputs of earlier steps, by step name
    data_dir: Path
    services: dict = field(default_factory=dict)  # clients the scheduler lends (resources, specs, ...)
    resources: dict = field(default_factory=dict)  # provision steps' outputs, by claim ref (render)


StepFn = Callable[[DeployContext], Awaitable[dict]]


async def check_workload(ctx: DeployContext) -> dict:
    spec = ctx.inputs.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), dict) or not spec["containers"]:
        raise FailedPrecondition("the run's inputs hold no workload with containers")
    return {"workload": ctx.inputs.get("workload", ""), "containers": sorted(spec["containers"])}


async def note_resources(ctx: DeployContext) -> dict:
    claimed = ctx.inputs.get("resources") or []
    return {"claimed": list(claimed), "count": len(claimed)}


def _manifest(ctx: DeployContext) -> dict:
    spec = ctx.inputs["spec"]
    workload = ctx.inputs.get("workload") or spec.get("metadata", {}).get("name", "workload")
    containers = []
    for name, container in spec["containers"].items():
        entry = {"name": name, "image": container.get("image", "")}
        if container.get("command"):
            entry["command"] = list(container["command"])
        if container.get("args"):
            entry["args"] = list(container["args"])
        if container.get("variables"):
            entry["env"] = [{"name": k, "value": str(v)} for k, v in sorted(container["variables"].items())]
        containers.append(entry)
    labels = {"app.kubernetes.io/name": workload, "app.kubernetes.io/part-of": ctx.application}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": workload,
            "labels": labels,
            "annotations": {"innominatus.dev/run": f"runs/{ctx.run_id}", "innominatus.dev/environment": ctx.environment},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": workload}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}},
        },
    }


async def render_manifest(ctx: DeployContext) -> dict:
    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(_manifest(ctx), buffer)
    text = buffer.getvalue()
    return {"manifest": text, "sha256": hashlib.sha256(text.encode()).hexdigest()}


FINALIZE_TIMEOUT = 120.0


def claim_outputs(provisioned: dict) -> dict[str, dict]:
    """``{ref: {output: value}}`` from the provision steps' outputs: the non-secret outputs plus
    each secret output as its ``secret://`` reference (never a value)."""
    values: dict[str, dict] = {}
    for ref, step in sorted((provisioned or {}).items()):
        step = step if isinstance(step, dict) else {}
        outputs = step.get("outputs") if isinstance(step.get("outputs"), dict) else {}
        secrets = step.get("secrets") if isinstance(step.get("secrets"), dict) else {}
        values[ref] = {**outputs, **secrets}
    return values


async def call_specs(ctx: DeployContext, what: str, method: str, request) -> Any:
    """Call ``method`` of the specs service as the engine itself (subject services/engine: a
    user's token is never forwarded) for the step ``what``; failures become StepFailed, the
    transient ones (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED) retryable."""
    stub = (ctx.services or {}).get("specs")
    if stub is None:
        raise model.StepFailed(f"the {what} step needs the specs service, which this engine was not given",
                               kind="not_wired", retryable=False)
    import grpc  # noqa: PLC0415

    from innominatus.kit import context as reqctx  # noqa: PLC0415

    token = reqctx.set_current(None)
    try:
        return await getattr(stub, method)(request, timeout=FINALIZE_TIMEOUT)
    except InnominatusError as exc:  # e.g. no address configured for the specs service
        raise model.StepFailed(f"{what}: {exc.message}", kind="not_wired", retryable=False) from None
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        retryable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                             grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED)
        raise model.StepFailed(f"{what}: {exc.details() or code.name}", kind=code.name.lower(),
                               retryable=retryable) from None
    finally:
        reqctx.reset(token)


async def finalize_deployment(ctx: DeployContext) -> dict:
    """Ask the specs service to render the workload with the provisioned outputs into a
    deployment set and commit it to the environment's GitOps repository."""
    deployment = ctx.inputs.get("deployment")
    if not deployment:  # a run started without a deployment record: render locally, as before
        return await render_manifest(ctx)
    from google.protobuf import json_format, struct_pb2  # noqa: PLC0415

    from innominatus.specs.v1 import specs_pb2  # noqa: PLC0415

    outputs = struct_pb2.Struct()
    outputs.update(claim_outputs(ctx.resources))
    response = await call_specs(ctx, "render", "FinalizeDeployment", specs_pb2.FinalizeDeploymentRequest(
        name=deployment, resource_outputs=outputs, run=f"runs/{ctx.run_id}"))
    return {
        "set_hash": response.set_hash,
        "commit": response.commit,
        "workload": json_format.MessageToDict(response.workload),
        "manifest": response.manifest,
        "sha256": hashlib.sha256(response.manifest.encode()).hexdigest(),
    }


async def write_release(ctx: DeployContext) -> dict:
    rendered = ctx.outputs["render"]
    releases = (ctx.data_dir / "releases").resolve()
    target = releases / ctx.environment / ctx.application / f"{ctx.inputs.get('workload', 'workload')}.yaml"
    # Names were validated upstream; still, never write outside the releases directory.
    if not target.resolve().is_relative_to(releases) or not all((ctx.environment, ctx.application)):
        raise model.StepFailed(f"refusing to write a release outside {releases.name}/: {target}", kind="invalid_input",
                         retryable=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(rendered["manifest"], encoding="utf-8")
    tmp.replace(target)
    out = {"path": str(target.relative_to(releases.parent)), "sha256": rendered["sha256"]}
    for key in ("set_hash", "commit"):
        if rendered.get(key):
            out[key] = rendered[key]
    return out


class FunctionExecutor:
    """A deploy step function as an engine executor."""

    def __init__(self, type_: str, fn: StepFn, data_dir: Path) -> None:
        self.type = type_
        self.fn = fn
        self.data_dir = Path(data_dir)

    async def run(self, ctx: model.StepContext) -> dict[str, Any]:
        inputs = ctx.inputs
        deploy = DeployContext(
            run_id=ctx.run_id,
            application=inputs.get("application", ""),
            environment=inputs.get("environment", ""),
            inputs=inputs.get("params") or {},
            outputs=inputs.get("outputs") or {},
            data_dir=self.data_dir,
            services=ctx.services or {},
            resources=inputs.get("resources") or {},
        )
        try:
            return await self.fn(deploy)
        except InnominatusError as exc:
            # The workload itself is wrong: retrying cannot help.
            raise model.StepFailed(exc.message, kind="precondition", retryable=False) from exc


_COMMON = {"params": "${params}", "application": "${workflow.application}", "environment": "${workflow.environment}"}
# Retries cover an attempt interrupted by a worker crash; the steps are idempotent.
_RETRY = model.RetryPolicy(max_attempts=3, initial_interval=0.5, multiplier=2.0, max_interval=5.0, jitter=0.2,
                           non_retryable=("precondition",))

# The specs service records a deployment in the same transaction that starts its run: the
# render step may find it not yet committed (UNAVAILABLE) and tries again.
_RENDER_RETRY = model.RetryPolicy(max_attempts=8, initial_interval=0.5, multiplier=2.0, max_interval=5.0,
                                  jitter=0.2, non_retryable=("precondition",))
_PROVISION_RETRY = model.RetryPolicy(max_attempts=3, initial_interval=1.0, multiplier=2.0, max_interval=10.0,
                                     jitter=0.2)

# (step id, step type, function, extra `with:`)
_DEPLOY_STEPS = [
    ("validate", "workload.check", check_workload, {}),
    ("resources", "resources.note", note_resources, {}),
    ("render", "render.kubernetes", finalize_deployment, {}),
    ("release", "release.write", write_release, {"outputs": {"render": "${steps.render.outputs}"}}),
]


# The approval gate of a deployment: built from the environment's settings the specs service
# passes in (inputs.approval = {"required": bool, "approvers": [...]}). Runs started before
# environments had settings carry only inputs.environment_type: a production one gets the gate
# it always had, decided by PRODUCTION_APPROVERS.
APPROVE_STEP = "approve"
PRODUCTION_APPROVERS = ("platform-engineer", "admin")


def _approval_gate(inputs: dict) -> list[str] | None:
    """The approvers of the deploy run's gate, or None when it has no gate."""
    approval = inputs.get("approval")
    if isinstance(approval, dict) and "required" in approval:
        if approval.get("required") is not True:
            return None
        approvers = [a for a in approval.get("approvers") or [] if isinstance(a, str) and a and "${" not in a]
        # Specs refuses a required gate without approvers; should one arrive anyway, the
        # production default applies rather than a gate anyone with runs.approve may decide.
        return approvers or list(PRODUCTION_APPROVERS)
    if inputs.get("environment_type") == "production":
        return list(PRODUCTION_APPROVERS)
    return None


def provision_step_id(ref: str) -> str:
    return f"provision-{ref}"


def _claims(inputs: dict) -> list[dict]:
    claims = (inputs or {}).get("claims")
    if not isinstance(claims, list):
        return []
    out = []
    for claim in claims:
        if isinstance(claim, dict) and isinstance(claim.get("ref"), str) and isinstance(claim.get("resource"), str) \
                and claim["ref"] and claim["resource"]:
            out.append(claim)
    return out


def release_step_id(ref: str) -> str:
    return f"release-{ref}"


def _dropped(inputs: dict) -> list[dict]:
    """The ``dropped`` input (``[{ref, resource}]``: claims of the workload its new version no
    longer declares, as ClaimResources answered them), well-formed entries only, one per ref --
    and none without the run's workload: releasing without one would release every workload of
    the application."""
    workload = inputs.get("workload")
    dropped = inputs.get("dropped")
    if not isinstance(workload, str) or not workload or "/" in workload or not isinstance(dropped, list):
        return []
    out: dict[str, dict] = {}
    for entry in dropped:
        if isinstance(entry, dict) and isinstance(entry.get("ref"), str) and isinstance(entry.get("resource"), str) \
                and entry["ref"] and entry["resource"]:
            out.setdefault(entry["ref"], entry)
    return [out[ref] for ref in sorted(out)]


def deploy_workflow(inputs: dict | None = None) -> model.WorkflowDef:
    """The ``deploy`` workflow for one run: validate -> [approve] -> provision-<ref> (one
    `resource` step per claim, after the provision steps of the claims its params depend on) ->
    render -> release, and release-<ref> in parallel with ``release``. ``approve`` (an `approval`
    step) is there when ``inputs.approval.required`` (its approvers: ``inputs.approval.approvers``);
    for inputs without ``approval`` (runs started before environments had approval settings)
    when ``inputs.environment_type`` is "production", decided by platform engineers and admins.

    ``release-<ref>`` (a `resource` step, action deprovision) is there for each entry of
    ``inputs.dropped`` (``[{ref, resource}]``: a claim of the workload its new version no longer
    declares): it releases only this workload's claim on the instance (``release`` the run's
    application, ``workload`` the run's workload), which deprovisions the instance when no other
    claim remains. It runs after ``render`` -- once the new version is committed -- so a deployment
    that fails or is rejected before leaves the running version's resources alone."""
    claims = _claims(inputs or {})
    refs = {c["ref"] for c in claims}
    steps = [model.StepDef(id="validate", type="workload.check", with_=dict(_COMMON), retry=_RETRY)]
    first = "validate"
    approvers = _approval_gate(inputs or {})
    if approvers is not None:
        # The deployment waits for an approval before anything is provisioned or committed.
        # Deciding it is policy-gated ("runs.approve") and the engine checks the caller is one
        # of these approvers. They are fixed in the run's definition snapshot: changing the
        # environment later affects the next deployment, not this run.
        kind = str(inputs.get("environment_type") or "")
        message = (f"Deploy application {inputs.get('application') or inputs.get('workload') or '?'} to "
                   f"{kind + ' ' if kind else ''}environment {inputs.get('environment') or '?'}, requested by "
                   f"{inputs.get('requested_by') or 'unknown'}?").replace("${", "$ {")
        steps.append(model.StepDef(id=APPROVE_STEP, type="approval", with_={"message": message},
                                   approval={"message": message, "approvers": approvers,
                                             # four eyes: whoever deployed cannot approve it
                                             "allow_self_approval": False},
                                   depends_on=("validate",)))
        first = APPROVE_STEP
    provision_ids = []
    for claim in claims:
        depends = tuple(sorted(provision_step_id(d) for d in claim.get("depends_on") or []
                               if d in refs and d != claim["ref"]))
        step_id = provision_step_id(claim["ref"])
        provision_ids.append(step_id)
        steps.append(model.StepDef(id=step_id, type="resource", with_={"name": claim["resource"]},
                                   depends_on=(first, *depends), retry=_PROVISION_RETRY))
    resources = {c["ref"]: "${steps." + provision_step_id(c["ref"]).replace(".", "\\.") + ".outputs}"
                 for c in claims}
    steps.append(model.StepDef(id="render", type="render.kubernetes", with_={**_COMMON, "resources": resources},
                               depends_on=tuple(provision_ids) or (first,), retry=_RENDER_RETRY))
    steps.append(model.StepDef(id="release", type="release.write",
                               with_={**_COMMON, "outputs": {"render": "${steps.render.outputs}"}},
                               depends_on=("render",), retry=_RETRY))
    dropped = _dropped(inputs or {})
    # Reverse dependency order: a resource is released only after the dropped ones whose params
    # used its outputs (entry.depends_on, from the version that declared them).
    users: dict[str, set[str]] = {entry["ref"]: set() for entry in dropped}
    for entry in dropped:
        for used in entry.get("depends_on") or []:
            if isinstance(used, str) and used in users and used != entry["ref"]:
                users[used].add(entry["ref"])
    for entry in dropped:
        after = tuple(sorted(release_step_id(r) for r in users[entry["ref"]]))
        steps.append(model.StepDef(id=release_step_id(entry["ref"]), type="resource",
                                   with_={"name": entry["resource"], "action": "deprovision",
                                          "release": "${workflow.application}", "workload": "${params.workload}"},
                                   depends_on=("render", *after), retry=_PROVISION_RETRY))
    return model.WorkflowDef(name="deploy", version="2", steps=tuple(steps), description="built-in")


def deprovision_step_id(ref: str) -> str:
    return f"deprovision-{ref}"


async def finalize_undeploy(ctx: DeployContext) -> dict:
    """Ask the specs service to remove the application's directory from the environment's
    GitOps repository and mark its deployments there as removed."""
    from innominatus.specs.v1 import specs_pb2  # noqa: PLC0415

    response = await call_specs(ctx, "remove", "FinalizeUndeploy", specs_pb2.FinalizeUndeployRequest(
        name=f"applications/{ctx.application}", environment=ctx.environment, run=f"runs/{ctx.run_id}",
        requested_by=str(ctx.inputs.get("requested_by") or "")))
    return {"commit": response.commit, "removed_deployments": response.removed_deployments}


# The step type whose outputs an `undeploy` sub-workflow's claims must be (scheduler.py).
PLAN_UNDEPLOY_TYPE = "undeploy.plan"


async def plan_undeploy(ctx: DeployContext) -> dict:
    """The `undeploy.plan` step: ask the specs service (PlanUndeploy, as the engine) what removing
    the application from the environment takes. Its ``claims`` are the only ones an ``undeploy``
    sub-workflow of the run accepts, so what is deprovisioned comes from specs, never from a
    run's params."""
    if not ctx.application or not ctx.environment:
        raise model.StepFailed("the undeploy plan step needs `application` and `environment` in its with:",
                               kind="invalid_input", retryable=False)
    from innominatus.specs.v1 import specs_pb2  # noqa: PLC0415

    plan = await call_specs(ctx, "plan", "PlanUndeploy", specs_pb2.PlanUndeployRequest(
        name=f"applications/{ctx.application}", environment=ctx.environment))
    kind = specs_pb2.EnvironmentType.Name(plan.environment_type).removeprefix("ENVIRONMENT_TYPE_").lower()
    return {
        "application": ctx.application,
        "environment": ctx.environment,
        "deployed": plan.deployed,
        "environment_type": "" if kind == "unspecified" else kind,
        "claims": [{"ref": c.ref, "resource": c.resource, "depends_on": list(c.depends_on)} for c in plan.claims],
        "deployments": list(plan.deployments),
    }


def undeploy_workflow(inputs: dict | None = None) -> model.WorkflowDef:
    """The ``undeploy`` workflow for one run: one ``deprovision-<ref>`` step (a `resource` step,
    action deprovision) per claim, in reverse dependency order (a resource is deprovisioned only
    after the resources whose params use its outputs), then ``remove`` (FinalizeUndeploy).

    Each step releases the run's application's claims (``release``): a shared instance other
    applications still claim is left to them (the step's output ``result`` is "released") and
    only one nobody else claims is deprovisioned."""
    claims = _claims(inputs or {})
    refs = {c["ref"] for c in claims}
    dependents: dict[str, set[str]] = {ref: set() for ref in refs}
    for claim in claims:
        for dep in claim.get("depends_on") or []:
            if dep in refs and dep != claim["ref"]:
                dependents[dep].add(claim["ref"])
    steps = []
    for claim in claims:
        after = tuple(sorted(deprovision_step_id(r) for r in dependents[claim["ref"]]))
        steps.append(model.StepDef(id=deprovision_step_id(claim["ref"]), type="resource",
                                   with_={"name": claim["resource"], "action": "deprovision",
                                          "release": "${workflow.application}"},
                                   depends_on=after, retry=_PROVISION_RETRY))
    steps.append(model.StepDef(id="remove", type="undeploy.remove", with_=dict(_COMMON),
                               depends_on=tuple(deprovision_step_id(c["ref"]) for c in claims), retry=_RENDER_RETRY))
    return model.WorkflowDef(name="undeploy", version="1", steps=tuple(steps), description="built-in")


def builtin_workflow(name: str, inputs: dict | None = None) -> model.WorkflowDef:
    """The definition a run of built-in workflow ``name`` gets, built from its inputs."""
    if name == "deploy":
        return deploy_workflow(inputs)
    if name == "undeploy":
        return undeploy_workflow(inputs)
    return WORKFLOWS[name]


# The input-independent shape of each built-in (what the catalog and `uses:` see).
WORKFLOWS: dict[str, model.WorkflowDef] = {"deploy": deploy_workflow({}), "undeploy": undeploy_workflow({})}


def builtin_executors(data_dir: Path) -> dict[str, FunctionExecutor]:
    """Executors for the built-in workflows' step types."""
    executors = {type_: FunctionExecutor(type_, fn, data_dir) for _id, type_, fn, _extra in _DEPLOY_STEPS}
    executors["undeploy.remove"] = FunctionExecutor("undeploy.remove", finalize_undeploy, data_dir)
    executors[PLAN_UNDEPLOY_TYPE] = FunctionExecutor(PLAN_UNDEPLOY_TYPE, plan_undeploy, data_dir)
    return executors
