"""``environment``: values of the platform's own environment variables, handed to a workload.

Params: ``{keys: [A, B]}`` (each must be set) or ``{prefix: "APP_"}`` (every variable starting with
it; at least one must exist; ``strip_prefix: true`` drops the prefix from the output names).
A variable whose name looks secret (``*PASSWORD*``, ``*TOKEN*``, ``*_KEY``...) goes to
``secret_outputs``, the others to ``outputs``.

Which variables a workload may ask for is up to the resource definition: config ``allow`` (glob
patterns, default ``["*"]``) and ``deny`` (default ``["INNOMINATUS_*"]``, the platform's own
settings and keys). A requested name outside them is refused, never silently dropped.
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any, Mapping

from innominatus.kit.errors import FieldViolation
from innominatus.resources.drivers.base import NoopChecks, ProvisionContext, ProvisionError, ProvisionResult

SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api_?key|private|credential|auth|_key$|^key$|dsn|cert|signature)", re.IGNORECASE
)
DEFAULT_DENY = ("INNOMINATUS_*",)


def looks_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def _patterns(value: Any, default: tuple[str, ...]) -> list[str]:
    if value is None:
        return list(default)
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


class EnvironmentDriver(NoopChecks):
    name = "environment"
    types = ("environment",)
    description = "values of the platform's environment variables (params keys or prefix; config allow/deny)"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    async def provision(self, ctx: ProvisionContext) -> ProvisionResult:
        params = ctx.params or {}
        allow = _patterns((ctx.config or {}).get("allow"), ("*",))
        deny = _patterns((ctx.config or {}).get("deny"), DEFAULT_DENY)

        def permitted(name: str) -> bool:
            return any(fnmatch.fnmatchcase(name, p) for p in allow) and not any(fnmatch.fnmatchcase(name, p) for p in deny)

        keys, prefix = params.get("keys"), params.get("prefix")
        environ = self.environ
        if keys is not None:
            if isinstance(keys, str):
                keys = [keys]
            if not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) and k for k in keys):
                raise self._invalid(ctx, "params.keys", "must be a non-empty list of variable names")
            refused = sorted({k for k in keys if not permitted(k)})
            if refused:
                raise self._invalid(
                    ctx, "params.keys", f"not allowed by the resource definition: {', '.join(refused)}"
                )
            missing = sorted({k for k in keys if k not in environ})
            if missing:
                raise self._invalid(ctx, "params.keys", f"not set in the platform's environment: {', '.join(missing)}")
            selected = {k: environ[k] for k in keys}
        elif prefix is not None:
            if not isinstance(prefix, str) or not prefix:
                raise self._invalid(ctx, "params.prefix", "must be a non-empty string")
            selected = {k: v for k, v in environ.items() if k.startswith(prefix) and permitted(k)}
            if not selected:
                raise self._invalid(ctx, "params.prefix", f"no allowed environment variable starts with {prefix!r}")
            if params.get("strip_prefix") in (True, "true", "True"):
                selected = {k[len(prefix):]: v for k, v in selected.items() if k[len(prefix):]}
        else:
            raise self._invalid(ctx, "params", "set keys (a list of variable names) or prefix")

        outputs: dict[str, str | int] = {}
        secret_outputs: dict[str, str] = {}
        for name in sorted(selected):
            (secret_outputs if looks_secret(name) else outputs)[name] = selected[name]
        return ProvisionResult(
            outputs=outputs,
            secret_outputs=secret_outputs,
            state={"keys": sorted(selected), "secret_keys": sorted(secret_outputs)},
        )

    @staticmethod
    def _invalid(ctx: ProvisionContext, field: str, description: str) -> ProvisionError:
        return ProvisionError(
            f"environment resource {ctx.resource_id}: {field} {description}",
            retryable=False,
            reason="INVALID_RESOURCE_PARAMS",
            violations=[FieldViolation(field, description)],
        )
