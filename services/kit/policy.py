"""Policy gate: ask the policy engine whether a mutating RPC may run.

Two interchangeable engines evaluate the same Rego in ``policies/`` and return the
document ``data.innominatus.authz.decision`` (``{"allow": bool, "reasons": [str]}``):

* :class:`OpaSidecarPolicyEngine` -- production: an OPA sidecar over its REST API,
  through ``opa_client.AsyncOpaClient``.
* :class:`EmbeddedRegoPolicyEngine` -- the default when no OPA URL is configured:
  the policy directory evaluated in-process by rego-cpp (``regopy``).

Both fail closed: anything other than a well-formed decision from the engine
(connection error, timeout, HTTP error, missing or malformed result, policy that
does not load or evaluate) raises :class:`PolicyEngineUnavailable`. Neither engine
ever turns an error into an allow. See docs/policy-authoring.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

__all__ = [
    "DECISION_PACKAGE",
    "DECISION_RULE",
    "Decision",
    "EmbeddedRegoPolicyEngine",
    "OpaSidecarPolicyEngine",
    "PolicyEngine",
    "PolicyEngineUnavailable",
    "default_policy_dir",
    "make_policy_engine",
]

#: Rego package and rule holding the decision document.
DECISION_PACKAGE = "innominatus.authz"
DECISION_RULE = "decision"
_DECISION_REF = f"data.{DECISION_PACKAGE}.{DECISION_RULE}"

POLICY_DIR_ENV = "INNOMINATUS_POLICY_DIR"


@dataclass(frozen=True)
class Decision:
    """The engine's answer for one request."""

    allow: bool
    reasons: tuple[str, ...]
    decision_id: str
    engine: str


class PolicyEngineUnavailable(Exception):
    """The policy engine gave no usable decision; the caller must deny.

    ``str(exc)`` reads like ``policy engine unavailable: OPA at http://127.0.0.1:8181
    did not answer (connection refused)``.
    """

    def __init__(self, engine: str, cause: str) -> None:
        self.engine = engine
        self.cause = cause
        super().__init__(f"policy engine unavailable: {engine} {cause}")


@runtime_checkable
class PolicyEngine(Protocol):
    async def decide(self, input: dict) -> Decision:  # noqa: A002 - contract name
        """Evaluate ``input`` against ``data.innominatus.authz.decision``."""
        ...

    async def close(self) -> None:
        """Release connections / interpreters."""
        ...


def _parse_decision(value: Any, *, where: str) -> tuple[bool, tuple[str, ...]]:
    """Validate a raw decision document; raise PolicyEngineUnavailable if malformed."""
    if not isinstance(value, dict):
        raise PolicyEngineUnavailable(
            where, f"returned a malformed decision (expected an object, got {type(value).__name__})"
        )
    allow = value.get("allow")
    if not isinstance(allow, bool):
        raise PolicyEngineUnavailable(
            where, f"returned a malformed decision ('allow' is {allow!r}, expected true/false)"
        )
    reasons = value.get("reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise PolicyEngineUnavailable(
            where, f"returned a malformed decision ('reasons' is {reasons!r}, expected a list of strings)"
        )
    return allow, tuple(reasons)


# ---------------------------------------------------------------------------
# OPA sidecar
# ---------------------------------------------------------------------------


class OpaSidecarPolicyEngine:
    """Ask an OPA server (normally a sidecar on localhost) over its REST API."""

    engine_name = "opa-sidecar"

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OPA URL must look like http://host:port, got {url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"OPA URL must not carry a path or query, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = parts.scheme == "https"
        self._where = f"OPA at {self.url}"
        self._client: Any = None
        self._client_lock = asyncio.Lock()

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is None:
                from opa_client import AsyncOpaClient

                client = AsyncOpaClient(
                    host=self._host,
                    port=self._port,
                    ssl=self._ssl,
                    timeout=self.timeout,
                    # One retry covers a pooled keep-alive connection the sidecar has
                    # closed; the overall deadline below bounds the total wait.
                    retries=1,
                )
                await client._init_session()  # the client opens its session lazily only via `async with`
                self._client = client
        return self._client

    async def decide(self, input: dict) -> Decision:  # noqa: A002
        import aiohttp

        try:
            client = await self._get_client()
            async with asyncio.timeout(self.timeout):
                response = await client.query_rule(
                    input_data=input, package_path=DECISION_PACKAGE, rule_name=DECISION_RULE
                )
        except TimeoutError as exc:
            raise PolicyEngineUnavailable(
                self._where, f"did not answer within {self.timeout:g}s (timeout)"
            ) from exc
        except aiohttp.ClientResponseError as exc:
            raise PolicyEngineUnavailable(
                self._where, f"answered HTTP {exc.status} ({exc.message})"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise PolicyEngineUnavailable(
                self._where, f"did not answer ({_connector_cause(exc)})"
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise PolicyEngineUnavailable(
                self._where, f"did not answer ({type(exc).__name__}: {exc})"
            ) from exc
        except (aiohttp.ContentTypeError, ValueError) as exc:
            raise PolicyEngineUnavailable(
                self._where, f"answered with a body that is not JSON ({exc})"
            ) from exc
        except Exception as exc:  # fail closed on anything unexpected
            raise PolicyEngineUnavailable(
                self._where, f"failed ({type(exc).__name__}: {exc})"
            ) from exc

        if not isinstance(response, dict) or "result" not in response:
            raise PolicyEngineUnavailable(
                self._where,
                f"returned no result for {_DECISION_REF} (is the policy loaded into OPA?)",
            )
        allow, reasons = _parse_decision(response["result"], where=self._where)
        return Decision(
            allow=allow, reasons=reasons, decision_id=str(uuid.uuid4()), engine=self.engine_name
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close_connection()


def _connector_cause(exc: Exception) -> str:
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if os_error is not None and getattr(os_error, "strerror", None):
        return str(os_error.strerror).lower()
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------
# Embedded rego-cpp
# ---------------------------------------------------------------------------


class EmbeddedRegoPolicyEngine:
    """Evaluate the policy directory in-process with rego-cpp (regopy).

    Every ``*.rego`` file under ``policy_dir`` except ``*_test.rego`` is compiled once
    into a bundle (lazily, on the first decision, or eagerly via :meth:`load`). Each
    decision then runs in a worker thread on a *fresh* ``regopy.Interpreter`` that
    queries the shared compiled bundle: creating one costs microseconds, and it keeps
    per-call input isolated. Measured with regopy 1.5.2: one shared interpreter used
    from 8 threads without a lock returned the wrong decision for ~9% of calls, while
    fresh-interpreter-per-call gave 0 mismatches in 5,000 concurrent calls. Concurrent
    calls gave no throughput gain either, so evaluation is additionally serialised by a
    lock: the shared bundle is not documented as thread-safe and the lock costs nothing.
    """

    engine_name = "embedded-rego"

    def __init__(self, policy_dir: Path) -> None:
        self.policy_dir = Path(policy_dir)
        self._where = f"embedded Rego (regopy) with policies from {self.policy_dir}"
        self._bundle: Any = None
        self._lock = threading.Lock()

    # -- loading -----------------------------------------------------------

    def _policy_files(self) -> list[Path]:
        if not self.policy_dir.is_dir():
            raise PolicyEngineUnavailable(self._where, "could not load: the directory does not exist")
        files = sorted(
            p for p in self.policy_dir.rglob("*.rego") if p.is_file() and not p.name.endswith("_test.rego")
        )
        if not files:
            raise PolicyEngineUnavailable(self._where, "could not load: no *.rego policy files found")
        return files

    def _load_locked(self) -> Any:
        if self._bundle is not None:
            return self._bundle
        import regopy

        files = self._policy_files()
        builder = regopy.Interpreter()
        builder.log_level = regopy.LogLevel.NONE  # errors are raised, not printed to stdout
        sources: dict[str, str] = {}
        for path in files:
            name = path.relative_to(self.policy_dir).as_posix()
            try:
                sources[name] = path.read_text(encoding="utf-8")
                builder.add_module(name, sources[name])
            except Exception as exc:
                raise PolicyEngineUnavailable(
                    self._where, f"could not load {name}: {_rego_error_summary(exc, sources)}"
                ) from exc
        try:
            bundle = builder.build(f"x = {_DECISION_REF}")
        except Exception as exc:
            raise PolicyEngineUnavailable(
                self._where, f"could not compile: {_rego_error_summary(exc, sources)}"
            ) from exc
        if not bundle.ok():
            raise PolicyEngineUnavailable(self._where, "could not compile the policy bundle")
        self._bundle = bundle
        return bundle

    def _load_sync(self) -> None:
        with self._lock:
            self._load_locked()

    async def load(self) -> None:
        """Compile the policies now (e.g. at startup), raising PolicyEngineUnavailable on error."""
        await asyncio.to_thread(self._load_sync)

    # -- evaluation --------------------------------------------------------

    def _decide_sync(self, input: dict) -> tuple[bool, tuple[str, ...]]:  # noqa: A002
        import regopy

        with self._lock:
            bundle = self._load_locked()
            try:
                interpreter = regopy.Interpreter()
                interpreter.log_level = regopy.LogLevel.NONE
                interpreter.set_input(input)
                output = interpreter.query_bundle(bundle)
                ok = output.ok()
                results = output.results
            except Exception as exc:
                raise PolicyEngineUnavailable(
                    self._where, f"failed to evaluate {_DECISION_REF}: {_rego_error_summary(exc, {})}"
                ) from exc
        if not ok:
            detail = str(output).strip()
            if detail in ("", "<error>"):
                detail = "rego-cpp reported an evaluation error (e.g. a rule with conflicting values)"
            raise PolicyEngineUnavailable(self._where, f"failed to evaluate {_DECISION_REF}: {detail}")
        if not results or "x" not in results[0].bindings:
            raise PolicyEngineUnavailable(
                self._where, f"returned no result for {_DECISION_REF} (is package {DECISION_PACKAGE} loaded?)"
            )
        return _parse_decision(results[0].bindings["x"], where=self._where)

    async def decide(self, input: dict) -> Decision:  # noqa: A002
        allow, reasons = await asyncio.to_thread(self._decide_sync, input)
        return Decision(
            allow=allow, reasons=reasons, decision_id=str(uuid.uuid4()), engine=self.engine_name
        )

    async def close(self) -> None:
        with self._lock:
            self._bundle = None


_RE_ERROR_AT = re.compile(r"\(error \d+:([^|\s]+)\|(\d+)\|\d+")
_RE_ERROR_MSG = re.compile(r"\(errormsg \d+:([^\n]*?)\)\s*$", re.MULTILINE)


def _rego_error_summary(exc: object, sources: dict[str, str]) -> str:
    """Turn a rego-cpp error AST into ``file:line:col: message; ...``."""
    text = str(exc).strip()
    messages = _RE_ERROR_MSG.findall(text)
    if not messages:
        first = text.splitlines()[0] if text else type(exc).__name__
        return first
    locations = _RE_ERROR_AT.findall(text)
    parts = []
    for index, message in enumerate(messages):
        if index < len(locations):
            name, offset = locations[index][0], int(locations[index][1])
            source = sources.get(name)
            if source is not None and offset <= len(source):
                line = source.count("\n", 0, offset) + 1
                column = offset - (source.rfind("\n", 0, offset) + 1) + 1
                parts.append(f"{name}:{line}:{column}: {message}")
                continue
            parts.append(f"{name}: {message}")
        else:
            parts.append(message)
    return "; ".join(dict.fromkeys(parts))


# ---------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------


def default_policy_dir() -> Path:
    """The policies shipped with innominatus (the repository's ``policies/``, installed as
    ``innominatus.policies``); override with INNOMINATUS_POLICY_DIR."""
    override = os.environ.get(POLICY_DIR_ENV)
    if override:
        return Path(override)
    import innominatus.policies

    return Path(innominatus.policies.__file__).resolve().parent


def make_policy_engine(opa_url: str | None, policy_dir: Path | None = None) -> PolicyEngine:
    """OPA sidecar when ``opa_url`` is set, else the embedded engine on ``policy_dir``."""
    if opa_url:
        return OpaSidecarPolicyEngine(opa_url)
    return EmbeddedRegoPolicyEngine(policy_dir if policy_dir is not None else default_policy_dir())
