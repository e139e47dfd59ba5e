"""A small HTTP client for the innominatus REST gateway.

Every failure becomes an :class:`ApiError` carrying the CLI exit code it maps to, so
commands never leak a traceback for an expected problem (server down, bad JSON, an RFC
7807 problem document from the gateway).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

# Exit codes scripts can rely on (documented in docs/cli.md and `innominatus --help`).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_FORBIDDEN = 4
EXIT_NOT_FOUND = 5
EXIT_UNAVAILABLE = 6
EXIT_TIMEOUT = 7

USER_AGENT = "innominatus-cli/0.1"


class ApiError(Exception):
    """A failed call, shaped like the gateway's problem document."""

    def __init__(
        self,
        detail: str,
        *,
        exit_code: int = EXIT_FAILED,
        status: int | None = None,
        title: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        violations: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.exit_code = exit_code
        self.status = status
        self.title = title
        self.reason = reason
        self.request_id = request_id
        self.metadata = dict(metadata or {})
        self.violations = list(violations or [])

    @property
    def policy_reasons(self) -> list[str]:
        raw = self.metadata.get("reasons")
        if isinstance(raw, list):
            return [str(r) for r in raw if str(r).strip()]
        if isinstance(raw, str):
            return [line for line in raw.splitlines() if line.strip()]
        return []

    def lines(self) -> list[str]:
        """The error as printed on stderr."""
        tags = []
        if self.reason:
            tags.append(f"reason: {self.reason}")
        if self.request_id:
            tags.append(f"request id: {self.request_id}")
        head = f"error: {self.detail}"
        if tags:
            head += f" ({', '.join(tags)})"
        out = [head]
        reasons = self.policy_reasons
        # The detail of a policy denial usually repeats the reasons; list them once each.
        if reasons and not (len(reasons) == 1 and reasons[0] in self.detail):
            out.extend(f"  policy: {r}" for r in reasons)
        for violation in self.violations:
            if isinstance(violation, dict):
                name = violation.get("field") or violation.get("pointer") or "?"
                text = violation.get("description") or violation.get("message") or ""
                out.append(f"  {name}: {text}".rstrip())
            else:
                out.append(f"  {violation}")
        return out


def exit_code_for_status(status: int) -> int:
    if status == 401:
        return EXIT_AUTH
    if status == 403:
        return EXIT_FORBIDDEN
    if status == 404:
        return EXIT_NOT_FOUND
    if status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_FAILED


def problem_error(response: httpx.Response, body: bytes | None = None) -> ApiError:
    """Turn an HTTP error response (problem+json or anything else) into an ApiError."""
    raw = response.content if body is None else body
    header_request_id = response.headers.get("x-request-id")
    problem: Any = None
    try:
        problem = json.loads(raw) if raw else None
    except ValueError:
        problem = None
    if isinstance(problem, dict) and isinstance(problem.get("error"), dict) and "status" not in problem:
        problem = problem["error"]  # grpc-gateway style {"error": {...}}
    status = response.status_code
    if isinstance(problem, dict):
        detail = problem.get("detail") or problem.get("message") or problem.get("title")
        metadata = problem.get("metadata") if isinstance(problem.get("metadata"), dict) else {}
        violations = problem.get("violations") if isinstance(problem.get("violations"), list) else []
        return ApiError(
            str(detail or f"HTTP {status} {response.reason_phrase}".strip()),
            exit_code=exit_code_for_status(status),
            status=status,
            title=problem.get("title"),
            reason=problem.get("reason") or None,
            request_id=problem.get("requestId") or problem.get("request_id") or header_request_id,
            metadata=metadata,
            violations=violations,
        )
    text = raw.decode("utf-8", "replace").strip() if raw else ""
    detail = f"HTTP {status} {response.reason_phrase}".strip()
    if text and len(text) <= 200 and "<" not in text:
        detail += f": {text}"
    return ApiError(detail, exit_code=exit_code_for_status(status), status=status, request_id=header_request_id)


def segment(name: str, collection: str) -> str:
    """`runs/abc` or `abc` -> `abc`, URL-quoted, for /api/v1/{collection}/{id}."""
    value = name.strip()
    prefix = collection + "/"
    if value.startswith(prefix):
        value = value[len(prefix) :]
    if not value or "/" in value:
        raise ApiError(f"invalid {collection[:-1] if collection.endswith('s') else collection} name {name!r}")
    return quote(value, safe="@:.-_~")


class Client:
    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(
                base_url=self.server, headers=headers, timeout=timeout, transport=transport, follow_redirects=False
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ApiError(f"invalid server URL {self.server!r}: {exc}", exit_code=EXIT_USAGE) from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain calls ---------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("POST", path, json_body=body if body is not None else {})

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, params=_clean(params), json=json_body)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise problem_error(response)
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            raise ApiError(
                f"the server at {self.server} did not answer with JSON (HTTP {response.status_code}); "
                "is this an innominatus gateway?",
                request_id=response.headers.get("x-request-id"),
            ) from None
        if not isinstance(data, dict):
            raise ApiError(f"unexpected response from {self.server}: expected a JSON object")
        return data

    def paginate(
        self, path: str, key: str, params: dict[str, Any] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Follow nextPageToken until the list ends or `limit` items were read."""
        items: list[dict[str, Any]] = []
        query = dict(params or {})
        token = None
        seen_tokens: set[str] = set()
        while True:
            remaining = None if limit is None else limit - len(items)
            query["pageSize"] = min(100, remaining) if remaining is not None else 100
            query["pageToken"] = token
            page = self.get(path, query)
            batch = page.get(key) or []
            if not isinstance(batch, list):
                raise ApiError(f"unexpected response from {self.server}: {key!r} is not a list")
            items.extend(batch)
            token = page.get("nextPageToken") or None
            if limit is not None and len(items) >= limit:
                return items[:limit]
            if not token or not batch or token in seen_tokens:
                return items
            seen_tokens.add(token)

    # -- streams -----------------------------------------------------------------------

    def stream_ndjson(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Yield each JSON object of an application/x-ndjson response as it arrives."""
        try:
            with self._http.stream(
                "GET", path, params=_clean(params), headers={"Accept": "application/x-ndjson"}, timeout=None
            ) as response:
                if response.status_code >= 400:
                    raise problem_error(response, response.read())
                for line in response.iter_lines():
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        raise ApiError(f"the export stream from {self.server} contained a line that is not JSON") from None
                    if not isinstance(item, dict):
                        raise ApiError(f"the export stream from {self.server} contained a line that is not an object")
                    if "error" in item and isinstance(item["error"], dict) and len(item) == 1:
                        raise _stream_error(item["error"])
                    yield item
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def _transport_error(self, exc: httpx.HTTPError) -> ApiError:
        if isinstance(exc, httpx.TimeoutException):
            return ApiError(f"timed out talking to {self.server}", exit_code=EXIT_UNAVAILABLE, reason="TIMEOUT")
        if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return ApiError(
                f"cannot reach the server at {self.server}: {_describe(exc)}",
                exit_code=EXIT_UNAVAILABLE,
                reason="UNREACHABLE",
            )
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            return ApiError(f"invalid server URL {self.server!r}: {exc}", exit_code=EXIT_USAGE)
        return ApiError(f"request to {self.server} failed: {_describe(exc)}", exit_code=EXIT_UNAVAILABLE)


def _stream_error(error: dict[str, Any]) -> ApiError:
    status = error.get("status") if isinstance(error.get("status"), int) else None
    code = error.get("code")
    http_status = status or (int(code) if isinstance(code, int) and code >= 100 else None)
    return ApiError(
        str(error.get("detail") or error.get("message") or "the export stream ended with an error"),
        exit_code=exit_code_for_status(http_status) if http_status else EXIT_FAILED,
        status=http_status,
        reason=error.get("reason"),
        request_id=error.get("requestId"),
        metadata=error.get("metadata") if isinstance(error.get("metadata"), dict) else None,
        violations=error.get("violations") if isinstance(error.get("violations"), list) else None,
    )


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    return {k: v for k, v in params.items() if v is not None and v != ""}
