"""Running one child process for a step: the part ``shell``, ``git``, ``ansible`` and the tool
executors share.

* argv only -- never a shell string built from parameters; ``asyncio.create_subprocess_exec``;
* a minimal environment (PATH, HOME, LANG) plus what the step asks for plus the
  ``INNOMINATUS_*`` identifiers of the attempt;
* the child leads its own process group (``start_new_session=True``) so cancel and timeout
  kill everything it started (``os.killpg``: SIGTERM, then SIGKILL after a short grace);
* stdout/stderr are streamed line by line to ``ctx.log`` and the last 64 KiB of each kept;
* values of secret-looking environment variables are masked in what is logged and captured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from innominatus.engine.model import StepContext, StepFailed

#: How much of each stream is kept in the step's outputs (the tail wins).
CAPTURE_LIMIT = 64 * 1024
#: A line longer than this is logged in pieces.
LOG_LINE_LIMIT = 8 * 1024
#: Seconds between SIGTERM and SIGKILL when a step is cancelled or times out.
KILL_GRACE = 2.0
#: Seconds to wait for the pipes to drain once the child has exited.
DRAIN_GRACE = 2.0

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|PRIVATE|CREDENTIAL|AUTH)", re.I)
_MASK = "***"


def invalid(message: str) -> StepFailed:
    """A ``with:`` input is wrong: retrying cannot help."""
    return StepFailed(message, kind="invalid_input", retryable=False)


def secret_values(env: Mapping[str, str] | None) -> list[str]:
    """Values of environment variables whose names look like secrets (masked in logs)."""
    return [v for k, v in (env or {}).items() if _SECRET_NAME.search(k) and isinstance(v, str) and len(v) >= 4]


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, _MASK)
        return text


def base_env(ctx: StepContext, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The child's environment: PATH/HOME/LANG from the platform, then ``extra``, then the
    attempt's identifiers (which a step cannot override)."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": os.environ.get("HOME") or ctx.workdir,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }
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


class _Tail:
    """Keeps the last ``limit`` bytes written to it."""

    def __init__(self, limit: int = CAPTURE_LIMIT) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.truncated = False

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > self.limit:
            del self.buffer[: len(self.buffer) - self.limit]
            self.truncated = True

    def text(self) -> str:
        return self.buffer.decode("utf-8", errors="replace")


@dataclass
class ProcessResult:
    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    pid: int

    def outputs(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr}

    def stderr_tail(self, lines: int = 10, chars: int = 2000) -> str:
        text = (self.stderr.strip() or self.stdout.strip())
        tail = "\n".join(text.splitlines()[-lines:])
        return tail[-chars:]


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


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
    redact = redact or Redactor()
    label = label or os.path.basename(argv[0])
    if ctx.cancelled.is_set():
        raise StepFailed(f"{label}: cancelled before it started", kind="cancelled", retryable=False)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(cwd),
            env=dict(env),
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise StepFailed(f"{label}: program not found: {argv[0]}", kind="not_found", retryable=False) from exc
    except PermissionError as exc:
        raise StepFailed(f"{label}: not executable: {argv[0]}", kind="not_executable", retryable=False) from exc
    except OSError as exc:
        raise StepFailed(f"{label}: could not start: {exc.strerror or exc}", kind="spawn_error") from exc

    out, err = _Tail(), _Tail()

    async def pump(stream: asyncio.StreamReader, tail: _Tail, prefix: str) -> None:
        pending = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            tail.write(chunk)
            if not log_output:
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            while len(pending) > LOG_LINE_LIMIT:
                lines.append(pending[:LOG_LINE_LIMIT])
                pending = pending[LOG_LINE_LIMIT:]
            for line in lines:
                await ctx.log(prefix + redact(line.decode("utf-8", errors="replace").rstrip("\r")))
        if pending and log_output:
            await ctx.log(prefix + redact(pending.decode("utf-8", errors="replace").rstrip("\r")))

    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        asyncio.ensure_future(pump(proc.stdout, out, "")),
        asyncio.ensure_future(pump(proc.stderr, err, "[stderr] ")),
    ]
    waiter = asyncio.ensure_future(proc.wait())
    cancel_waiter = asyncio.ensure_future(ctx.cancelled.wait())
    reason: str | None = None
    try:
        done, _ = await asyncio.wait({waiter, cancel_waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            reason = "cancelled" if cancel_waiter in done else "timeout"
    except BaseException:
        # The awaiting task itself was cancelled (e.g. the scheduler's per-step timeout).
        await _terminate(proc, pumps)
        raise
    finally:
        cancel_waiter.cancel()

    if reason is not None:
        await ctx.log(f"{label}: {'cancelled' if reason == 'cancelled' else f'timed out after {timeout:g}s'}; "
                      f"killing process group {proc.pid}")
        await _terminate(proc, pumps)
        if reason == "cancelled":
            raise StepFailed(f"{label}: cancelled", kind="cancelled", retryable=False)
        raise StepFailed(f"{label}: timed out after {timeout:g}s", kind="timeout", retryable=True)

    # The child exited; something it left behind may still hold the pipes open.
    _, still = await asyncio.wait(pumps, timeout=DRAIN_GRACE)
    if still:
        _kill_group(proc.pid, signal.SIGKILL)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)
    exit_code = proc.returncode if proc.returncode is not None else -1
    return ProcessResult(
        exit_code=exit_code,
        stdout=redact(out.text()),
        stderr=redact(err.text()),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        pid=proc.pid,
    )


async def _terminate(proc: asyncio.subprocess.Process, pumps: list[asyncio.Future]) -> None:
    """SIGTERM the group, SIGKILL it after the grace, reap the child, stop the pumps."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        pass
    # Whatever is left in the group (children that ignored SIGTERM) goes now.
    _kill_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
    for task in pumps:
        task.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)


def exit_failure(label: str, result: ProcessResult, *, retryable: bool = True) -> StepFailed:
    """StepFailed(kind="exit_code") for a non-zero exit; the outputs ride along as ``.outputs``."""
    code = result.exit_code
    what = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
    tail = result.stderr_tail()
    message = f"{label} {what}" + (f": {tail}" if tail else "")
    error = StepFailed(message, kind="exit_code", retryable=retryable)
    error.outputs = result.outputs()  # type: ignore[attr-defined]
    return error
