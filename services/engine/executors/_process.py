"""Running one child process for a step: the part ``shell``, ``git``, ``ansible`` and the tool
executors share.

The process itself is run by the kit (:mod:`innominatus.kit.process`, also used by
:mod:`innominatus.kit.git`): argv only, never a shell; its own process group, killed on cancel
and timeout; output streamed line by line and the last 64 KiB of each stream kept; secrets
masked. What is step-specific lives here:

* the child's environment: PATH, HOME, LANG plus what the step asks for plus the
  ``INNOMINATUS_*`` identifiers of the attempt;
* output goes to ``ctx.log``, ``ctx.cancelled`` cancels, and failures to run are ``StepFailed``;
* values of secret-looking environment variables are masked in what is logged and captured.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from innominatus.engine.model import StepContext, StepFailed
from innominatus.kit import process
from innominatus.kit.process import ProcessResult, Redactor, minimal_env

__all__ = [
    "ProcessResult",
    "Redactor",
    "base_env",
    "ensure_workdir",
    "exit_failure",
    "inside",
    "invalid",
    "resolve_cwd",
    "run_process",
    "secret_values",
    "timeout_of",
]

_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|PRIVATE|CREDENTIAL|AUTH)", re.IGNORECASE)


def invalid(message: str) -> StepFailed:
    """A ``with:`` input is wrong: retrying cannot help."""
    return StepFailed(message, kind="invalid_input", retryable=False)


def secret_values(env: Mapping[str, str] | None) -> list[str]:
    """Values of environment variables whose names look like secrets (masked in logs)."""
    return [v for k, v in (env or {}).items() if _SECRET_NAME.search(k) and isinstance(v, str) and len(v) >= 4]


def base_env(ctx: StepContext, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The child's environment: PATH/HOME/LANG from the platform, then ``extra``, then the
    attempt's identifiers (which a step cannot override)."""
    env = minimal_env(home=ctx.workdir)
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise invalid(f"env: {key!r} is not a valid environment variable name")
        if value is None:
            env.pop(key, None)
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            import json

            value = json.dumps(value, separators=(",", ":"))
        value = str(value)
        if "\0" in value:
            raise invalid(f"env: the value of {key} contains a NUL byte")
        env[key] = value
    env.update(
        INNOMINATUS_IDEMPOTENCY_KEY=ctx.idempotency_key,
        INNOMINATUS_RUN_ID=ctx.run_id,
        INNOMINATUS_STEP_ID=ctx.step_id,
        INNOMINATUS_ATTEMPT=str(ctx.attempt),
    )
    return env


def ensure_workdir(ctx: StepContext) -> Path:
    root = Path(ctx.workdir)
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def inside(root: Path, relative: Any, what: str) -> Path:
    """``root/relative``, refusing absolute paths and anything that resolves outside ``root``."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise invalid(f"{what}: expected a relative path, got {relative!r}")
    if os.path.isabs(relative):
        raise invalid(f"{what}: {relative!r} is absolute; give a path relative to the step's work directory")
    target = (root / relative).resolve()
    if target != root and not target.is_relative_to(root):
        raise invalid(f"{what}: {relative!r} points outside the step's work directory")
    return target


def resolve_cwd(ctx: StepContext, cwd: Any) -> Path:
    root = ensure_workdir(ctx)
    if cwd in (None, "", "."):
        return root
    target = inside(root, cwd, "cwd")
    if not target.is_dir():
        raise invalid(f"cwd: {cwd!r} is not a directory inside the step's work directory")
    return target


def timeout_of(value: Any, default: float | None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise invalid(f"timeout: expected a positive number of seconds, got {value!r}")
    return float(value)


async def run_process(
    ctx: StepContext,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float | None,
    redact: Redactor | None = None,
    label: str | None = None,
    log_output: bool = True,
) -> ProcessResult:
    """Run ``argv`` (no shell) to completion, honouring ``ctx.cancelled`` and ``timeout``.

    Returns the result whatever the exit code; raises StepFailed for a program that cannot
    be started (kind ``not_found``/``not_executable``), ``timeout`` and ``cancelled``. An
    ``asyncio.CancelledError`` (the scheduler's own timeout) also kills the process group.
    """
    try:
        return await process.run_process(argv, env=env, cwd=cwd, timeout=timeout, redact=redact, label=label,
                                         log=ctx.log, log_output=log_output, cancelled=ctx.cancelled)
    except process.ProcessError as exc:
        raise StepFailed(exc.message, kind=exc.kind, retryable=exc.retryable) from exc


def exit_failure(label: str, result: ProcessResult, *, retryable: bool = True) -> StepFailed:
    """StepFailed(kind="exit_code") for a non-zero exit; the outputs ride along as ``.outputs``."""
    code = result.exit_code
    what = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
    tail = result.stderr_tail()
    message = f"{label} {what}" + (f": {tail}" if tail else "")
    error = StepFailed(message, kind="exit_code", retryable=retryable)
    error.outputs = result.outputs()  # type: ignore[attr-defined]
    return error
