"""``resource``: provision or deprovision one resource instance through the resources service.

::

    - id: provision-db
      type: resource
      with:
        name: resources/3f2a...        # as ClaimResources returned it
        action: provision             # provision (default) | deprovision
        force: false                  # provision even when active and unchanged; deprovision a
                                      # shared resource other workloads still claim
        release: shop                 # deprovision only: release this application's claims;
                                      # a shared instance others still claim lives on
        workload: api                 # with release: only this workload's claims (the deploy
                                      # run's release-<ref> steps: a ref its new version dropped)
      retry: {max_attempts: 5}

The step calls ``ResourcesService.ProvisionResource`` / ``DeprovisionResource`` over mTLS with
the stub the scheduler lends as ``ctx.services["resources"]``. The call is made as the engine
itself (subject ``services/engine``; no user token is forwarded), so the policy decides on the
engine's permissions ``resources.provision`` / ``resources.deprovision``.

Outputs: ``{resource, state, provisioned, definition, outputs: {...non-secret...},
secrets: {name: "secret://..."}}`` -- secret outputs as *references* into the secret store,
never values; steps that need a value pass the reference on. A deprovision step's outputs say
what happened instead of ``provisioned``: ``result`` is "released" (only the application's
claims were released; the instance lives on for ``remaining_claims``, "<app>/<workload>") or
"deprovisioned", and ``released`` is the same as a boolean.

Failures: the service answers UNAVAILABLE for retryable provisioner errors (server unreachable,
a lock, the secret store) -> kind "unavailable", retryable; FAILED_PRECONDITION (bad params, no
matching definition, a name taken) -> kind "failed_precondition", not retryable; other codes ->
kind = the code's name in lower case, retryable only for DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED
and ABORTED.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from innominatus.engine.model import StepContext, StepFailed
from innominatus.kit import context as reqctx
from innominatus.kit.errors import InnominatusError

ACTIONS = ("provision", "deprovision")
RETRYABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}
CALL_TIMEOUT = 600.0


class LazyResourcesStub:
    """``ResourcesServiceStub`` on the resources service's peer channel, opened on first use.

    The scheduler gets one in ``services["resources"]``; an engine started without the resources
    service's address (tests, a standalone engine) still starts, and only a `resource` step fails.
    """

    def __init__(self, peers) -> None:
        self._peers = peers
        self._stub = None

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        if self._stub is None:
            from innominatus.resources.v1.resources_pb2_grpc import ResourcesServiceStub  # noqa: PLC0415

            self._stub = self._peers.stub("resources", ResourcesServiceStub)
        return getattr(self._stub, method)


class LazyStub:
    """Any peer stub, made by ``factory()`` on first use (see :class:`LazyResourcesStub`)."""

    def __init__(self, factory) -> None:
        self._factory = factory
        self._stub = None

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        if self._stub is None:
            self._stub = self._factory()
        return getattr(self._stub, method)


def resources_stub(peers) -> LazyResourcesStub:
    return LazyResourcesStub(peers)


def _invalid(message: str) -> StepFailed:
    return StepFailed(message, kind="invalid_input", retryable=False)


def _outputs(resource, provisioned: bool | None = None) -> dict[str, Any]:
    from innominatus.resources.v1 import resources_pb2  # noqa: PLC0415

    out: dict[str, Any] = {
        "resource": resource.name,
        "state": resources_pb2.ResourceState.Name(resource.state).removeprefix("RESOURCE_STATE_").lower(),
        "definition": resource.definition,
        "outputs": json_format.MessageToDict(resource.outputs),
        "secrets": dict(sorted(resource.secret_refs.items())),
    }
    if provisioned is not None:
        out["provisioned"] = provisioned
    return out


class ResourceExecutor:
    type = "resource"
    input_schema: dict[str, Any] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "action": {"type": "string", "enum": list(ACTIONS)},
            "force": {"type": "boolean"},
            "release": {"type": "string"},
            "workload": {"type": "string"},
        },
        "additionalProperties": False,
    }

    def __init__(self, timeout: float = CALL_TIMEOUT) -> None:
        self.timeout = timeout

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        from innominatus.resources.v1 import resources_pb2  # noqa: PLC0415

        stub = (ctx.services or {}).get("resources")
        if stub is None:
            raise StepFailed(
                "step type 'resource' needs the resources service, which this engine was not given",
                kind="not_wired",
                retryable=False,
            )
        spec = ctx.inputs or {}
        unknown = set(spec) - set(self.input_schema["properties"])
        if unknown & {"type", "application", "environment", "params"}:
            raise _invalid(
                "resource: steps provision instances a deployment claimed: give `name: resources/<id>` "
                "(from ClaimResources); provisioning ad hoc by type/application/environment is not supported"
            )
        if unknown:
            raise _invalid(f"resource: unknown input(s) {', '.join(sorted(unknown))}")
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _invalid("resource: `name` must be a resource name (resources/<id>)")
        name = name.strip()
        if not name.startswith("resources/"):
            name = f"resources/{name}"
        action = spec.get("action") or "provision"
        if action not in ACTIONS:
            raise _invalid(f"resource: `action` must be one of {', '.join(ACTIONS)}, not {action!r}")
        force = spec.get("force", False)
        if not isinstance(force, bool):
            raise _invalid("resource: `force` must be true or false")
        release = spec.get("release", "")
        if not isinstance(release, str) or "/" in release.strip().removeprefix("applications/"):
            raise _invalid("resource: `release` must be an application name (whose claims a deprovision releases)")
        release = release.strip()
        if release and action != "deprovision":
            raise _invalid("resource: `release` applies to `action: deprovision` only")
        workload = spec.get("workload", "")
        if not isinstance(workload, str) or "/" in workload:
            raise _invalid("resource: `workload` must be a workload name (whose claims a deprovision releases)")
        workload = workload.strip()
        if workload and not release:
            raise _invalid("resource: `workload` needs `release` (the workload's application)")
        if ctx.cancelled.is_set():
            raise StepFailed(f"resource {action} {name}: cancelled before it started", kind="cancelled", retryable=False)

        await ctx.log(f"{action} {name}")
        # The engine acts on its own behalf: never forward a user's token from the context the
        # step task was created in (the policy decides on services/engine).
        token = reqctx.set_current(None)
        try:
            if action == "provision":
                response = await stub.ProvisionResource(
                    resources_pb2.ProvisionResourceRequest(name=name, force=force, idempotency_key=ctx.idempotency_key),
                    timeout=self.timeout,
                )
                outputs = _outputs(response.resource, response.provisioned)
            else:
                response = await stub.DeprovisionResource(
                    resources_pb2.DeprovisionResourceRequest(name=name, force=force, application=release,
                                                             workload=workload),
                    timeout=self.timeout,
                )
                outputs = _outputs(response.resource)
                outputs["result"] = "released" if response.released else "deprovisioned"
                outputs["released"] = response.released
                outputs["remaining_claims"] = list(response.remaining_claims)
        except InnominatusError as exc:  # e.g. no address configured for the resources service
            raise StepFailed(f"resource {action} {name}: {exc.message}", kind="not_wired", retryable=False) from None
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            message = f"resource {action} {name}: {exc.details() or code.name}"
            await ctx.log(message)
            raise StepFailed(message, kind=code.name.lower(), retryable=code in RETRYABLE_CODES) from None
        finally:
            reqctx.reset(token)
        done = "already active, unchanged" if outputs.get("provisioned") is False else outputs["state"]
        if outputs.get("released"):
            whose = f"{release.removeprefix('applications/')}/{workload}" if workload else release
            done = f"claims of {whose} released; still claimed by {', '.join(outputs['remaining_claims'])}"
        await ctx.log(f"{action} {name}: {done}")
        return outputs
