"""Running the engine's ``resource`` step on its own, against a stand-in for the resources
service's stub: what the step asks for and how it reads the answer, without a platform."""

from __future__ import annotations

import asyncio
import uuid

from innominatus.engine.model import StepContext


def resource_step(stub, inputs: dict, tmp_path, step_id: str = "deprovision-db") -> StepContext:
    """A StepContext for a ``resource`` step whose resources service is ``stub``."""

    async def log(line: str) -> None:
        pass

    return StepContext(
        run_id="run-" + uuid.uuid4().hex[:8], step_id=step_id, attempt=1, idempotency_key=uuid.uuid4().hex,
        inputs=inputs, workdir=str(tmp_path), cancelled=asyncio.Event(), log=log, services={"resources": stub},
    )


class RecordingResourcesStub:
    """Answers DeprovisionResource with ``response``, like the resources service would, and keeps
    the requests."""

    def __init__(self, response) -> None:
        self.response = response
        self.requests: list = []

    async def DeprovisionResource(self, request, timeout=None):  # noqa: N802 - the stub's method name
        self.requests.append(request)
        return self.response
