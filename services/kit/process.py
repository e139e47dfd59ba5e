"""Running one child process, the way every part of the platform that runs programs does it.

* argv only -- never a shell string built from parameters; ``asyncio.create_subprocess_exec``;
* the environment is exactly what the caller gives (:func:`minimal_env` is the usual start:
  PATH, HOME and LANG from the platform, nothing else leaks through);
* the child leads its own process group (``start_new_session=True``) so cancel and timeout
  kill everything it started (``os.killpg``: SIGTERM, then SIGKILL after a short grace);
* stdout/stderr are streamed line by line to a ``log`` callback and the last 64 KiB of each kept;
* the secrets a :class:`Redactor` knows are masked in what is logged and what is kept.

Failures to run at all (cannot start, cancelled, timed out) raise :class:`ProcessError` with a
``kind`` and ``retryable``; callers map it to their own errors (the workflow engine's step
executors to their step failures, :mod:`innominatus.kit.git` to ``GitError``). A non-zero exit
is not an error here: the result carries the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How much of each stream is kept (the tail wins).
CAPTURE_LIMIT = 64 * 1024
#: A line longer than this is logged in pieces.
LOG_LINE_LIMIT = 8 * 1024
#: Seconds between SIGTERM and SIGKILL when a process is cancelled or times out.
KILL_GRACE = 2.0
#: Seconds to wait for the pipes to drain once the child has exited.
DRAIN_GRACE = 2.0

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MASK = "***"

LogFn = Callable[[str], Awaitable[None]]


class ProcessError(Exception):
    """The process could not run to completion: ``kind`` is ``not_found``, ``not_executable``,
    ``spawn_error``, ``cancelled`` or ``timeout``."""

    def __init__(self, message: str, kind: str, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable


class Redactor:
    """Replaces every known secret in a text with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


def minimal_env(home: str | None = None) -> dict[str, str]:
    """PATH, HOME and LANG from the platform (HOME falls back to ``home``, LANG to C.UTF-8):
    the start of every child's environment, so nothing else of the platform's leaks through."""
    return {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": os.environ.get("HOME") or home or "/",
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }


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


def kill_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads; a group already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _no_log(_line: str) -> None:
    return None


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float | None,
    redact: Redactor | None = None,
    label: str | None = None,
    log: LogFn | None = None,
    log_output: bool = True,
    cancelled: asyncio.Event | None = None,
) -> ProcessResult:
    """Run ``argv`` (no shell) to completion, honouring ``cancelled`` and ``timeout``.

    Returns the result whatever the exit code; raises :class:`ProcessError` for a program that
    cannot be started (kind ``not_found``/``not_executable``/``spawn_error``), ``timeout`` and
    ``cancelled``. An ``asyncio.CancelledError`` (e.g. a caller's own timeout) also kills the
    process group. ``log`` gets the output lines (unless ``log_output`` is false) and the
    notice that the group is killed.
    """
    redact = redact or Redactor()
    label = label or os.path.basename(argv[0])
    log = log or _no_log
    cancelled = cancelled or asyncio.Event()
    if cancelled.is_set():
        raise ProcessError(f"{label}: cancelled before it started", kind="cancelled", retryable=False)
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
        raise ProcessError(f"{label}: program not found: {argv[0]}", kind="not_found", retryable=False) from exc
    except PermissionError as exc:
        raise ProcessError(f"{label}: not executable: {argv[0]}", kind="not_executable", retryable=False) from exc
    except OSError as exc:
        raise ProcessError(f"{label}: could not start: {exc.strerror or exc}", kind="spawn_error",
                           retryable=True) from exc

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
                await log(prefix + redact(line.decode("utf-8", errors="replace").rstrip("\r")))
        if pending and log_output:
            await log(prefix + redact(pending.decode("utf-8", errors="replace").rstrip("\r")))

    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        asyncio.ensure_future(pump(proc.stdout, out, "")),
        asyncio.ensure_future(pump(proc.stderr, err, "[stderr] ")),
    ]
    waiter = asyncio.ensure_future(proc.wait())
    cancel_waiter = asyncio.ensure_future(cancelled.wait())
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
        await log(f"{label}: {'cancelled' if reason == 'cancelled' else f'timed out after {timeout:g}s'}; "
                  f"killing process group {proc.pid}")
        await _terminate(proc, pumps)
        if reason == "cancelled":
            raise ProcessError(f"{label}: cancelled", kind="cancelled", retryable=False)
        raise ProcessError(f"{label}: timed out after {timeout:g}s", kind="timeout", retryable=True)

    # The child exited; something it left behind may still hold the pipes open.
    _, still = await asyncio.wait(pumps, timeout=DRAIN_GRACE)
    if still:
        kill_group(proc.pid, signal.SIGKILL)
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
    kill_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
    except (TimeoutError, asyncio.CancelledError):
        pass
    # Whatever is left in the group (children that ignored SIGTERM) goes now.
    kill_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
    for task in pumps:
        task.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
