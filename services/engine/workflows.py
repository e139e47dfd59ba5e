"""Built-in workflows and their steps.

This slice ships one workflow, ``deploy``: sequential steps that check the submitted
workload, note the resources it claimed, render a Kubernetes manifest and write the
release into the data directory. The durable engine with DAGs, retries and approvals
replaces the sequential runner later; the step records keep the same shape.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from ruamel.yaml import YAML

from innominatus.kit.errors import FailedPrecondition


@dataclass(frozen=True)
class StepContext:
    run_id: str
    application: str
    environment: str
    inputs: dict
    outputs: dict  # outputs of earlier steps, by step name
    data_dir: Path


StepFn = Callable[[StepContext], Awaitable[dict]]


@dataclass(frozen=True)
class StepDef:
    name: str
    type: str
    run: StepFn


async def check_workload(ctx: StepContext) -> dict:
    spec = ctx.inputs.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), dict) or not spec["containers"]:
        raise FailedPrecondition("the run's inputs hold no workload with containers")
    return {"workload": ctx.inputs.get("workload", ""), "containers": sorted(spec["containers"])}


async def note_resources(ctx: StepContext) -> dict:
    claimed = ctx.inputs.get("resources") or []
    return {"claimed": list(claimed), "count": len(claimed)}


def _manifest(ctx: StepContext) -> dict:
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


async def render_manifest(ctx: StepContext) -> dict:
    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(_manifest(ctx), buffer)
    text = buffer.getvalue()
    return {"manifest": text, "sha256": hashlib.sha256(text.encode()).hexdigest()}


async def write_release(ctx: StepContext) -> dict:
    rendered = ctx.outputs["render"]
    target = ctx.data_dir / "releases" / ctx.environment / ctx.application / f"{ctx.inputs.get('workload', 'workload')}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(rendered["manifest"], encoding="utf-8")
    tmp.replace(target)
    return {"path": str(target.relative_to(ctx.data_dir)), "sha256": rendered["sha256"]}


WORKFLOWS: dict[str, list[StepDef]] = {
    "deploy": [
        StepDef("validate", "workload.check", check_workload),
        StepDef("resources", "resources.note", note_resources),
        StepDef("render", "render.kubernetes", render_manifest),
        StepDef("release", "release.write", write_release),
    ],
}
