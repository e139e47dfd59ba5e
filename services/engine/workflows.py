"""Built-in workflows and their step executors.

``deploy`` (started by the specs service through StartRun) is a sequential DAG: check the
submitted workload, note the resources it claimed, render a Kubernetes manifest and write
the release into the data directory. Its steps are plain functions over a
:class:`DeployContext`; :class:`FunctionExecutor` adapts them to the engine's executor
protocol, taking the run's params, application and environment and earlier steps'
outputs from the step's resolved ``with:`` inputs.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
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
    return {"path": str(target.relative_to(releases.parent)), "sha256": rendered["sha256"]}


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

_DEPLOY_STEPS = [
    ("validate", "workload.check", check_workload, {}),
    ("resources", "resources.note", note_resources, {}),
    ("render", "render.kubernetes", render_manifest, {}),
    ("release", "release.write", write_release, {"outputs": {"render": "${steps.render.outputs}"}}),
]


def _sequential(name: str, steps) -> model.WorkflowDef:
    defs, previous = [], None
    for step_id, type_, _fn, extra in steps:
        defs.append(model.StepDef(id=step_id, type=type_, with_={**_COMMON, **extra},
                                  depends_on=(previous,) if previous else (), retry=_RETRY))
        previous = step_id
    return model.WorkflowDef(name=name, version="1", steps=tuple(defs), description="built-in")


WORKFLOWS: dict[str, model.WorkflowDef] = {"deploy": _sequential("deploy", _DEPLOY_STEPS)}


def builtin_executors(data_dir: Path) -> dict[str, FunctionExecutor]:
    """Executors for the built-in workflows' step types."""
    return {type_: FunctionExecutor(type_, fn, data_dir) for _id, type_, fn, _extra in _DEPLOY_STEPS}
