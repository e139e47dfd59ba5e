"""``kubectl``, ``terraform``, ``tofu``, ``helm``: run the CLI when it is installed.

::

    - id: apply
      type: kubectl
      with:
        args: [apply, -f, manifests/]     # argv after the program name; no shell
        env: {KUBECONFIG: /etc/innominatus/kubeconfig}
        cwd: .                            # relative to the step's work directory
        timeout: 600

The binary is looked up with ``shutil.which`` on the ``PATH`` the step runs with
(``with.env.PATH`` if given, else the executor's ``path`` override, else the platform's
``PATH``). Not found -> StepFailed(kind="tool_missing", retryable=False) naming the tool and
how to install it. Runs like ``shell`` with an argv list: outputs ``{exit_code, stdout,
stderr}``, non-zero exit -> kind "exit_code", plus "timeout"/"cancelled" with the process group
killed. terraform/tofu run with ``TF_IN_AUTOMATION=1``, ``TF_INPUT=0`` and
``CHECKPOINT_DISABLE=1``.
"""

from __future__ import annotations

import shutil
from typing import Any, Iterable

from innominatus.engine.model import StepContext, StepFailed

from ._process import Redactor, base_env, exit_failure, invalid, resolve_cwd, run_process, secret_values, timeout_of

DEFAULT_TIMEOUT = 3600.0


def find_tool(binary: str, path: str | None, fallback_dirs: Iterable[str] = ()) -> str | None:
    """The tool's full path on ``path`` (then ``fallback_dirs``), or None."""
    found = shutil.which(binary, path=path)
    if found:
        return found
    for directory in fallback_dirs:
        candidate = shutil.which(binary, path=directory)
        if candidate:
            return candidate
    return None


def tool_missing(tool: str, install: str) -> StepFailed:
    return StepFailed(f"{tool} is not installed: {install}", kind="tool_missing", retryable=False)


class ToolExecutor:
    """Runs one CLI tool with ``with: {args, env, cwd, timeout}``."""

    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "args": {"type": "array", "items": {"type": "string"}},
            "env": {"type": "object"},
            "cwd": {"type": "string"},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
        },
        "additionalProperties": False,
    }

    def __init__(self, type: str, binary: str, install: str, *, path: str | None = None,
                 extra_env: dict[str, str] | None = None, default_timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.type = type
        self.binary = binary
        self.install = install
        self.path = path  # PATH override used to find the binary (tests; sandboxed installs)
        self.extra_env = dict(extra_env or {})
        self.default_timeout = default_timeout

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        spec = ctx.inputs or {}
        unknown = set(spec) - set(self.input_schema["properties"])
        if unknown:
            raise invalid(f"{self.type}: unknown input(s) {', '.join(sorted(unknown))}")
        args = spec.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in args):
            raise invalid(f"{self.type}: `args` must be a list of strings")
        args = [str(a) for a in args]
        env_in = spec.get("env") or {}
        if not isinstance(env_in, dict):
            raise invalid(f"{self.type}: `env` must be a mapping of names to values")
        env = base_env(ctx, {**self.extra_env, **env_in})
        if self.path is not None and "PATH" not in env_in:
            env["PATH"] = self.path
        program = find_tool(self.binary, env["PATH"])
        if program is None:
            await ctx.log(f"{self.binary} not found on PATH")
            raise tool_missing(self.binary, self.install)
        cwd = resolve_cwd(ctx, spec.get("cwd"))
        timeout = timeout_of(spec.get("timeout"), self.default_timeout)
        await ctx.log(f"running {self.binary} {args[0] if args else ''} ({len(args)} argument(s))".replace("  ", " "))
        result = await run_process(ctx, [program, *args], env=env, cwd=cwd, timeout=timeout,
                                   redact=Redactor(secret_values(env_in)), label=self.binary)
        await ctx.log(f"{self.binary} exited with {result.exit_code}")
        if result.exit_code != 0:
            raise exit_failure(self.binary, result)
        return result.outputs()


_TF_ENV = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}


def kubectl(**kw: Any) -> ToolExecutor:
    return ToolExecutor("kubectl", "kubectl",
                        "see https://kubernetes.io/docs/tasks/tools/ (or apt-get install kubectl)", **kw)


def terraform(**kw: Any) -> ToolExecutor:
    return ToolExecutor("terraform", "terraform",
                        "see https://developer.hashicorp.com/terraform/install", extra_env=_TF_ENV, **kw)


def tofu(**kw: Any) -> ToolExecutor:
    return ToolExecutor("tofu", "tofu", "see https://opentofu.org/docs/intro/install/", extra_env=_TF_ENV, **kw)


def helm(**kw: Any) -> ToolExecutor:
    return ToolExecutor("helm", "helm", "see https://helm.sh/docs/intro/install/", **kw)
