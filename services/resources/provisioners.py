"""Running the provisioner a resource definition names.

Three kinds (docs/provisioners.md):

- ``driver``: a built-in driver of :mod:`innominatus.resources.drivers`, given the definition's
  ``config``.
- ``template``: a Jinja2 template, rendered in ``ImmutableSandboxedEnvironment`` with
  ``StrictUndefined``, producing YAML with ``outputs``, ``secrets`` and ``state``. It creates
  nothing outside innominatus, so deprovisioning it is a no-op.
- ``command``: an external program run without a shell, with a JSON request on stdin and a
  JSON result on stdout, under a timeout and with bounded output.

:func:`run_provisioner` validates the claim's params against the definition's schema first
(every problem at once) and checks afterwards that every declared output and secret output was
provided.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import time
from typing import Any, Mapping

import jsonschema
import yaml
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from innominatus.kit.errors import FieldViolation, InvalidArgument
from innominatus.resources.definitions import DEFAULT_COMMAND_TIMEOUT, ResourceDefinition
from innominatus.resources.drivers import DRIVERS, get_driver
from innominatus.resources.drivers.base import (
    ProvisionContext,
    ProvisionError,
    ProvisionResult,
    dns_label,
    scrub,
    sql_name,
)

KINDS = {
    "driver": "a built-in driver (see the drivers below), configured by the definition's config",
    "template": "a sandboxed Jinja2 template rendering YAML with outputs, secrets and state; creates nothing",
    "command": "an external program (no shell): JSON request on stdin, JSON result on stdout, with a timeout",
}

TEMPLATE_MAX_OUTPUT = 256 * 1024  # characters of rendered YAML
TEMPLATE_TIMEOUT = 5.0  # seconds of rendering
COMMAND_MAX_STDOUT = 1024 * 1024  # bytes
COMMAND_STDERR_TAIL = 2048  # bytes of stderr quoted in an error
RETRYABLE_EXIT = 75  # EX_TEMPFAIL: the command asks to be retried
_SECRET_KEY = re.compile(r"(?i)(pass|secret|token|key|credential|auth|dsn|cert)")
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "TZ")


def list_provisioners() -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(drivers, kinds) for ListProvisioners: each driver's name, description and types."""
    drivers = [
        {"name": d.name, "description": d.description, "types": list(d.types)}
        for d in sorted(DRIVERS.values(), key=lambda d: d.name)
    ]
    return drivers, [{"kind": k, "description": v} for k, v in KINDS.items()]


# ---------------------------------------------------------------------------------------------
# Params


def validate_params(definition: ResourceDefinition, params: Mapping[str, Any] | None) -> None:
    """INVALID_ARGUMENT (reason INVALID_RESOURCE_PARAMS) naming every param that breaks the schema."""
    schema = definition.params_schema or {}
    if not schema:
        return
    document = _plain(params or {})
    problems: list[FieldViolation] = []
    for error in sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: list(map(str, e.path))):
        path = ".".join(str(p) for p in error.path)
        if error.validator == "required":
            found = re.match(r"'(.+)' is a required property", error.message)
            if found:
                path = f"{path}.{found.group(1)}" if path else found.group(1)
        problems.append(FieldViolation(f"params.{path}" if path else "params", error.message))
    if problems:
        raise InvalidArgument(
            f"params of the {definition.type} resource do not match definition {definition.name!r}: "
            + "; ".join(f"{p.field}: {p.description}" for p in problems),
            reason="INVALID_RESOURCE_PARAMS",
            violations=problems,
        )


def _plain(value: Any) -> Any:
    """Mappings / sequences (e.g. protobuf-derived) as plain JSON-like Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------
# Entry points


def _with_config(definition: ResourceDefinition, ctx: ProvisionContext) -> ProvisionContext:
    config = {**dict(definition.provisioner.get("config") or {}), **dict(ctx.config or {})}
    return dataclasses.replace(ctx, config=config)


async def run_provisioner(definition: ResourceDefinition, ctx: ProvisionContext) -> ProvisionResult:
    """Provision ``ctx``'s resource with ``definition``'s provisioner.

    The provisioner gets the definition's ``config`` (keys of ``ctx.config`` win). Raises
    InvalidArgument for bad params, ProvisionError for everything the provisioner does wrong.
    """
    validate_params(definition, ctx.params)
    ctx = _with_config(definition, ctx)
    kind = definition.provisioner.get("kind")
    if kind == "driver":
        result = await get_driver(definition.provisioner.get("driver", "")).provision(ctx)
    elif kind == "template":
        result = await render_template(definition, ctx)
    elif kind == "command":
        result = _result_from_document(
            await run_command(definition, ctx, "provision", ctx.previous_state or {}),
            f"the output of the command of definition {definition.name!r}",
        )
    else:
        raise ProvisionError(f"definition {definition.name!r} has an unknown provisioner kind {kind!r}",
                             reason="DRIVER_MISCONFIGURED")
    check_outputs(definition, result)
    return result


async def run_deprovisioner(definition: ResourceDefinition, ctx: ProvisionContext, state: Mapping[str, Any] | None) -> None:
    """Remove what :func:`run_provisioner` made. Template provisioners made nothing: no-op."""
    ctx = _with_config(definition, ctx)
    kind = definition.provisioner.get("kind")
    if kind == "driver":
        await get_driver(definition.provisioner.get("driver", "")).deprovision(ctx, dict(state or {}))
    elif kind == "command":
        await run_command(definition, ctx, "deprovision", dict(state or {}), allow_empty=True)


def check_outputs(definition: ResourceDefinition, result: ProvisionResult) -> None:
    missing = [o for o in definition.outputs if o not in result.outputs]
    missing_secret = [o for o in definition.secret_outputs if o not in result.secret_outputs]
    exposed = [o for o in definition.secret_outputs if o in result.outputs]
    if not (missing or missing_secret or exposed):
        return
    parts = []
    if missing:
        parts.append(f"outputs {', '.join(missing)}")
    if missing_secret:
        parts.append(f"secret outputs {', '.join(missing_secret)}")
    text = f"the provisioner of definition {definition.name!r} did not provide " + " and ".join(parts) if parts else ""
    if exposed:
        text += ("; " if text else f"the provisioner of definition {definition.name!r} ") + (
            f"returned the secret outputs {', '.join(exposed)} as plain outputs (return them under secrets)"
        )
    raise ProvisionError(
        text,
        retryable=False,
        reason="MISSING_OUTPUTS",
        metadata={"missing": ",".join(missing + missing_secret + exposed)},
    )


# ---------------------------------------------------------------------------------------------
# Templates


_TEMPLATES = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_TEMPLATES.filters["dns_label"] = dns_label
_TEMPLATES.filters["sql_name"] = sql_name
_TEMPLATES.filters["to_json"] = lambda v: json.dumps(v, sort_keys=True)


def template_problem(source: str) -> str | None:
    """Why ``source`` does not compile, with its line; ``None`` when it does."""
    try:
        _TEMPLATES.parse(source)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    return None


def _template_line(exc: BaseException) -> int | None:
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render(source: str, variables: dict[str, Any]) -> str:
    template = _TEMPLATES.from_string(source)
    deadline = time.monotonic() + TEMPLATE_TIMEOUT
    chunks, size = [], 0
    for chunk in template.generate(**variables):
        size += len(chunk)
        if size > TEMPLATE_MAX_OUTPUT:
            raise _TemplateLimit(f"renders more than {TEMPLATE_MAX_OUTPUT} characters")
        if time.monotonic() > deadline:
            raise _TemplateLimit(f"took longer than {TEMPLATE_TIMEOUT:g}s to render")
        chunks.append(chunk)
    return "".join(chunks)


class _TemplateLimit(Exception):
    pass


async def render_template(definition: ResourceDefinition, ctx: ProvisionContext) -> ProvisionResult:
    variables = {
        "params": _plain(ctx.params or {}),
        "resource_id": ctx.resource_id,
        "application": ctx.application,
        "environment": ctx.environment,
        "workload": ctx.workload,
        "type": ctx.type,
        "class": ctx.class_,
        "config": _plain(ctx.config or {}),
        "state": _plain(ctx.previous_state or {}),
    }
    where = f"the template of definition {definition.name!r}"
    try:
        text = await asyncio.to_thread(_render, definition.provisioner.get("template") or "", variables)
    except _TemplateLimit as exc:
        raise ProvisionError(f"{where} {exc}", retryable=False) from None
    except Exception as exc:  # template errors, and errors the template's expressions raise
        line = _template_line(exc)
        kind = "" if isinstance(exc, TemplateError) else f"{type(exc).__name__}: "
        message = getattr(exc, "message", None) or str(exc)
        raise ProvisionError(
            f"{where} failed{f' at line {line}' if line else ''}: {kind}{message}",
            retryable=False,
            metadata={"line": str(line)} if line else None,
        ) from None
    try:
        document = yaml.load(text, Loader=_NoAliasLoader) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProvisionError(f"{where} did not render valid YAML{at}: {problem}", retryable=False) from None
    return _result_from_document(document, f"the YAML rendered by {where}")


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases (no billion-laughs expansion of a rendered document)."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def _result_from_document(document: Any, where: str) -> ProvisionResult:
    """A ProvisionResult from ``{outputs: {...}, secrets: {...}, state: {...}}``, shape checked."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ProvisionError(f"{where} must be a mapping with outputs, secrets and state (got {type(document).__name__})")
    unknown = sorted(str(k) for k in document if k not in ("outputs", "secrets", "state"))
    problems = [f"unknown keys {', '.join(unknown)} (allowed: outputs, secrets, state)"] if unknown else []
    parts: dict[str, dict] = {}
    for key in ("outputs", "secrets", "state"):
        value = document.get(key) or {}
        if not isinstance(value, dict):
            problems.append(f"{key} must be a mapping (got {type(value).__name__})")
            value = {}
        parts[key] = value
    outputs: dict[str, str | int] = {}
    for name, value in parts["outputs"].items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.append(f"outputs.{name} must be a string or a number")
        else:
            outputs[str(name)] = value if isinstance(value, (str, int)) else str(value)
    secrets: dict[str, str] = {}
    for name, value in parts["secrets"].items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.append(f"secrets.{name} must be a string")  # never quote the value
        else:
            secrets[str(name)] = str(value)
    try:
        json.dumps(parts["state"])
    except (TypeError, ValueError):
        problems.append("state must hold JSON values only")
    if problems:
        raise ProvisionError(f"{where} is not valid: " + "; ".join(problems), retryable=False)
    return ProvisionResult(outputs=outputs, secret_outputs=secrets, state=dict(parts["state"]))


# ---------------------------------------------------------------------------------------------
# Commands


def _secret_values(ctx: ProvisionContext) -> list[str]:
    values = [str(v) for v in (ctx.previous_secrets or {}).values() if v]
    for key, value in (ctx.config or {}).items():
        if isinstance(value, str) and _SECRET_KEY.search(str(key)):
            values.append(value)
    return values


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


async def run_command(
    definition: ResourceDefinition,
    ctx: ProvisionContext,
    action: str,
    state: Mapping[str, Any],
    *,
    allow_empty: bool = False,
) -> Any:
    """Run the definition's command for ``action``; its stdout parsed as JSON (``{}`` when empty
    and ``allow_empty``)."""
    prov = definition.provisioner
    argv = [str(a) for a in prov.get("command") or []]
    timeout = float(prov.get("timeout_seconds") or DEFAULT_COMMAND_TIMEOUT)
    where = f"the command of definition {definition.name!r}"
    if not argv:
        raise ProvisionError(f"{where} is empty", reason="DRIVER_MISCONFIGURED")
    payload: dict[str, Any] = {
        "action": action,
        "resource": {
            "id": ctx.resource_id,
            "type": ctx.type,
            "class": ctx.class_,
            "application": ctx.application,
            "environment": ctx.environment,
            "workload": ctx.workload,
            "idempotency_key": ctx.idempotency_key,
            "definition": definition.name,
            "definition_version": definition.version,
        },
        "params": _plain(ctx.params or {}),
        "config": _plain(ctx.config or {}),
        "state": _plain(state or {}),
    }
    if ctx.previous_secrets:
        payload["previous_secrets"] = dict(ctx.previous_secrets)
    data = json.dumps(payload).encode()
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
    except OSError as exc:
        raise ProvisionError(
            f"{where} could not be started ({argv[0]}): {exc.strerror or type(exc).__name__}",
            retryable=False,
            reason="DRIVER_MISCONFIGURED",
        ) from None

    overflow = False
    stdout = bytearray()
    stderr = bytearray()

    async def feed() -> None:
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the program did not read its input; its exit status tells
        finally:
            try:
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass

    async def read_stdout() -> None:
        nonlocal overflow
        while chunk := await proc.stdout.read(65536):
            stdout.extend(chunk)
            if len(stdout) > COMMAND_MAX_STDOUT:
                overflow = True
                _kill(proc)
                return

    async def read_stderr() -> None:
        while chunk := await proc.stderr.read(65536):
            stderr.extend(chunk)
            del stderr[: max(0, len(stderr) - COMMAND_STDERR_TAIL)]

    try:
        await asyncio.wait_for(asyncio.gather(feed(), read_stdout(), read_stderr(), proc.wait()), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        _kill(proc)
        await proc.wait()
        raise ProvisionError(
            f"{where} did not finish within {timeout:g}s ({action}); it was killed",
            retryable=True,
            metadata={"timeout_seconds": f"{timeout:g}"},
        ) from None
    except asyncio.CancelledError:
        _kill(proc)
        raise
    if overflow:
        await proc.wait()
        raise ProvisionError(f"{where} wrote more than {COMMAND_MAX_STDOUT} bytes to stdout; it was killed")
    code = proc.returncode
    if code != 0:
        tail = " ".join(bytes(stderr).decode("utf-8", "replace").split())
        tail = scrub(tail, *_secret_values(ctx))[-COMMAND_STDERR_TAIL:]
        status = f"exit code {code}" if code > 0 else f"signal {-code}"
        raise ProvisionError(
            f"{where} failed ({action}, {status}){': ' + tail if tail else ' with no output on stderr'}",
            retryable=code == RETRYABLE_EXIT,
            metadata={"exit_code": str(code)},
        )
    text = bytes(stdout).decode("utf-8", "replace")
    if not text.strip():
        if allow_empty:
            return {}
        raise ProvisionError(f"{where} printed nothing; it must print a JSON object with outputs, secrets and state")
    try:
        return json.loads(text)
    except ValueError as exc:  # the message quotes no content, only the position
        raise ProvisionError(f"{where} did not print valid JSON on stdout ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


__all__ = [
    "KINDS",
    "check_outputs",
    "list_provisioners",
    "render_template",
    "run_command",
    "run_deprovisioner",
    "run_provisioner",
    "template_problem",
    "validate_params",
]
