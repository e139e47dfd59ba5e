"""``http``: call a webhook / HTTP API with httpx.

::

    - id: notify
      type: http
      with:
        url: https://hooks.example.com/deploys
        method: POST                      # default POST
        headers: {Authorization: "Bearer ${secrets.hook}"}
        json: {app: "${params.app}", run: "${workflow.run_id}"}   # or body: "raw text"
        expect_status: [200, 201, 202]    # default: any 2xx
        timeout: 30                       # seconds, default 30
        follow_redirects: false           # default false

Every request carries ``Idempotency-Key: <ctx.idempotency_key>`` -- the same for every attempt
of the step -- so a receiver that honours it applies a retried call once.

Outputs: ``{status, headers, json}`` when the response is JSON, else ``{status, headers, body}``
(body bounded to 64 KiB); ``headers`` holds a few useful response headers only.

Failures: status 5xx -> kind "http_5xx" (retryable); 4xx -> kind "http_4xx", not retryable
except 408 and 429 (retryable, same kind); any other status outside ``expect_status`` -> kind
"http_status" (not retryable); connection errors -> kind "connection" (retryable); the
request's timeout -> kind "timeout" (retryable); ``ctx.cancelled`` -> kind "cancelled".
Request headers are never logged and the logged URL drops its query string and credentials.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from innominatus.engine.model import StepContext, StepFailed

from ._process import invalid, timeout_of

BODY_LIMIT = 64 * 1024
JSON_LIMIT = 1024 * 1024
DEFAULT_TIMEOUT = 30.0
SELECTED_HEADERS = ("content-type", "content-length", "location", "etag", "last-modified", "retry-after",
                    "x-request-id", "idempotency-key")
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _expected(value: Any) -> set[int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and 100 <= v <= 599 for v in value):
        raise invalid("http: `expect_status` must be a list of HTTP status codes")
    return set(value)


class HttpExecutor:
    type = "http"
    input_schema: dict[str, Any] = {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string"},
            "method": {"type": "string"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "json": {},
            "body": {"type": "string"},
            "expect_status": {"type": "array", "items": {"type": "integer"}},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "follow_redirects": {"type": "boolean"},
        },
        "additionalProperties": False,
    }

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, default_timeout: float = DEFAULT_TIMEOUT,
                 trust_env: bool = True):
        self.transport = transport  # tests and embedders may inject one
        self.default_timeout = default_timeout
        self.trust_env = trust_env  # HTTP(S)_PROXY / NO_PROXY / SSL_CERT_FILE from the platform's environment

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        spec = ctx.inputs or {}
        unknown = set(spec) - set(self.input_schema["properties"])
        if unknown:
            raise invalid(f"http: unknown input(s) {', '.join(sorted(unknown))}")
        url = spec.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise invalid(f"http: `url` must be an http:// or https:// URL, got {_safe_url(str(url))!r}")
        method = str(spec.get("method") or "POST").upper()
        if method not in METHODS:
            raise invalid(f"http: unsupported method {method!r}")
        headers = spec.get("headers") or {}
        if not isinstance(headers, dict):
            raise invalid("http: `headers` must be a mapping")
        headers = {str(k): str(v) for k, v in headers.items()}
        headers["Idempotency-Key"] = ctx.idempotency_key
        if "json" in spec and "body" in spec:
            raise invalid("http: give at most one of `json` and `body`")
        content: bytes | None = None
        if "json" in spec:
            content = json.dumps(spec["json"], separators=(",", ":")).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        elif "body" in spec:
            if not isinstance(spec["body"], str):
                raise invalid("http: `body` must be text (use `json` for structured data)")
            content = spec["body"].encode()
        expect = _expected(spec.get("expect_status"))
        timeout = timeout_of(spec.get("timeout"), self.default_timeout)
        follow = bool(spec.get("follow_redirects", False))
        shown = f"{method} {_safe_url(url)}"
        if ctx.cancelled.is_set():
            raise StepFailed(f"http {shown}: cancelled before it started", kind="cancelled", retryable=False)

        await ctx.log(f"{shown}")
        started = time.monotonic()
        request = asyncio.ensure_future(self._send(method, url, headers, content, timeout, follow))
        cancel_waiter = asyncio.ensure_future(ctx.cancelled.wait())
        try:
            done, _ = await asyncio.wait({request, cancel_waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            request.cancel()
            raise
        finally:
            cancel_waiter.cancel()
        if request not in done:
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
            await ctx.log(f"{shown}: cancelled")
            raise StepFailed(f"http {shown}: cancelled", kind="cancelled", retryable=False)
        try:
            status, resp_headers, raw, truncated = request.result()
        except httpx.TimeoutException as exc:
            raise StepFailed(f"http {shown}: no answer within {timeout:g}s ({type(exc).__name__})",
                             kind="timeout", retryable=True) from exc
        except httpx.TransportError as exc:
            raise StepFailed(f"http {shown}: connection failed ({type(exc).__name__}: {exc})",
                             kind="connection", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise StepFailed(f"http {shown}: {type(exc).__name__}: {exc}", kind="connection", retryable=True) from exc
        elapsed = (time.monotonic() - started) * 1000
        await ctx.log(f"{shown} -> {status} ({elapsed:.0f} ms)")

        outputs: dict[str, Any] = {
            "status": status,
            "headers": {k: resp_headers[k] for k in SELECTED_HEADERS if k in resp_headers},
        }
        ctype = resp_headers.get("content-type", "").split(";")[0].strip().lower()
        parsed = False
        if (ctype == "application/json" or ctype.endswith("+json")) and not truncated and raw:
            try:
                outputs["json"] = json.loads(raw)
                parsed = True
            except ValueError:
                pass
        if not parsed:
            outputs["body"] = raw[:BODY_LIMIT].decode("utf-8", errors="replace")

        ok = status in expect if expect is not None else 200 <= status < 300
        if ok:
            return outputs
        snippet = raw[:500].decode("utf-8", errors="replace").strip()
        message = f"http {shown} answered {status}" + (f": {snippet}" if snippet else "")
        if status >= 500:
            error = StepFailed(message, kind="http_5xx", retryable=True)
        elif 400 <= status < 500:
            error = StepFailed(message, kind="http_4xx", retryable=status in (408, 429))
        else:
            error = StepFailed(message + f" (expected {sorted(expect) if expect else '2xx'})",
                               kind="http_status", retryable=False)
        error.outputs = outputs  # type: ignore[attr-defined]
        raise error

    async def _send(self, method: str, url: str, headers: dict[str, str], content: bytes | None,
                    timeout: float | None, follow: bool) -> tuple[int, dict[str, str], bytes, bool]:
        async with httpx.AsyncClient(transport=self.transport, timeout=timeout, follow_redirects=follow,
                                     trust_env=self.trust_env) as client:
            async with client.stream(method, url, headers=headers, content=content) as response:
                raw = bytearray()
                truncated = False
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) > JSON_LIMIT:
                        truncated = True
                        del raw[JSON_LIMIT:]
                        break
                headers_out = {k.lower(): v for k, v in response.headers.items()}
                return response.status_code, headers_out, bytes(raw), truncated
