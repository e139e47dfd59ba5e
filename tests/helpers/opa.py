"""Locate and run a real OPA binary for tests and benchmarks.

The binary is taken from ``$INNOMINATUS_OPA_BIN``, else ``opa`` on ``PATH``. It is a
hard requirement: when it is missing the helpers raise :class:`OpaBinaryNotFound`
(tests must fail, not skip, so CI cannot silently lose the policy gate's coverage).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

OPA_BIN_ENV = "INNOMINATUS_OPA_BIN"
OPA_VERSION = "v1.22.3"
MISSING_OPA_MESSAGE = (
    "the opa binary (install with: go install github.com/open-policy-agent/opa@"
    f"{OPA_VERSION}, or set {OPA_BIN_ENV})"
)


class OpaBinaryNotFound(RuntimeError):
    pass


def find_opa_binary() -> str:
    """Path of the opa binary: $INNOMINATUS_OPA_BIN, else `opa` on PATH."""
    configured = os.environ.get(OPA_BIN_ENV)
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise OpaBinaryNotFound(
            f"missing {MISSING_OPA_MESSAGE}: {OPA_BIN_ENV}={configured!r} is not an executable file"
        )
    found = shutil.which("opa")
    if found:
        return found
    raise OpaBinaryNotFound(f"missing {MISSING_OPA_MESSAGE}: no `opa` on PATH and {OPA_BIN_ENV} is unset")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class OpaServer:
    """`opa run --server` on 127.0.0.1:<free port> serving ``policy_dir``.

    ``*_test.rego`` files are ignored so the server holds exactly what the embedded
    engine loads. ``stop()`` / ``start()`` may be repeated; the port stays the same so
    a client built from ``.url`` sees the outage and the recovery.
    """

    def __init__(self, policy_dir: Path | str, *, port: int | None = None, startup_timeout: float = 20.0):
        self.policy_dir = Path(policy_dir)
        self.binary = find_opa_binary()
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile(mode="w+b")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self, limit: int = 4000) -> str:
        self._log.flush()
        self._log.seek(0)
        data = self._log.read().decode("utf-8", "replace")
        self._log.seek(0, os.SEEK_END)
        return data[-limit:]

    def start(self) -> "OpaServer":
        if self.running:
            return self
        cmd = [
            self.binary,
            "run",
            "--server",
            "--addr",
            f"{self.host}:{self.port}",
            "--log-level",
            "error",
            "--skip-version-check",
            "--ignore",
            "*_test.rego",
            str(self.policy_dir),
        ]
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"opa exited with status {code} during startup: {' '.join(cmd)}\n{self._log_tail()}")
            if self._healthy():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"opa did not become healthy within {self.startup_timeout}s on {self.url}\n{self._log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._log.close()

    def __enter__(self) -> "OpaServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: never leak an opa process
        try:
            self.stop()
        except Exception:
            pass


def shipped_policy_granting(target: Path, role: str, permission: str) -> Path:
    """A copy of the shipped policies (tests left out) in ``target`` where ``role`` also holds
    ``permission`` in role_permissions: what a security team does to widen a role."""
    from innominatus.kit.policy import default_policy_dir  # noqa: PLC0415

    shipped = default_policy_dir()
    edited = False
    for source in shipped.rglob("*.rego"):
        if source.name.endswith("_test.rego"):
            continue
        text = source.read_text()
        if source.name == "authz.rego":
            marker = f'\t"{role}": {{\n'
            assert text.count(marker) == 1, f"the {role} row of role_permissions moved"
            text = text.replace(marker, marker + f'\t\t"{permission}",\n')
            edited = True
        copy = target / source.relative_to(shipped)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(text)
    assert edited, f"no authz.rego under {shipped}"
    return target
