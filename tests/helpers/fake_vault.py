"""A STAND-IN for HashiCorp Vault: speaks the Vault KV v2 HTTP API; not Vault.

Vault cannot run on the machines this suite runs on, so the hvac-backed secret store is tested
against this small HTTP server instead. It implements the KV version 2 endpoints hvac uses, with
the request and response shapes of Vault's documented API
(https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2) as hvac
(hvac/api/secrets_engines/kv_v2.py, hvac/adapters.py) sends and parses them:

* ``POST|PUT /v1/<mount>/data/<path>`` body ``{"data": {...}, "options": {"cas": n}}`` →
  200 ``{"data": {"version": n, "created_time": ..., "deletion_time": "", "destroyed": false,
  "custom_metadata": null}, ...}``; a failed check-and-set → 400.
* ``GET /v1/<mount>/data/<path>[?version=n]`` → 200 ``{"data": {"data": {...}, "metadata":
  {...}}}``; unknown path or version → 404 ``{"errors": []}``.
* ``GET /v1/<mount>/metadata/<path>`` → the key's metadata; ``DELETE`` → 204, all versions gone.
* ``LIST /v1/<mount>/metadata/<prefix>`` or ``GET ...?list=true`` → ``{"data": {"keys": [...]}}``
  (folders end in ``/``); nothing there → 404 ``{"errors": []}``.
* ``GET /v1/sys/health``.

Every other ``/v1`` call needs an ``X-Vault-Token`` the server knows; without one → 403
``{"errors": ["permission denied"]}``, as Vault answers. ``X-Vault-Namespace`` is recorded, not
enforced. Not implemented: policies, leases, soft delete/undelete/destroy, max_versions, patch.

Use::

    with FakeVault() as vault:
        store = VaultSecretStore(vault.url, vault.token)
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Key:
    def __init__(self) -> None:
        self.created_time = _now()
        self.updated_time = self.created_time
        self.current_version = 0
        self.versions: dict[int, dict] = {}

    def version_meta(self, n: int) -> dict:
        v = self.versions[n]
        return {
            "created_time": v["created_time"],
            "custom_metadata": None,
            "deletion_time": "",
            "destroyed": False,
            "version": n,
        }


class FakeVault:
    """The stand-in server on 127.0.0.1, port 0. ``url``, ``token`` (valid), ``requests`` (log)."""

    def __init__(self, mounts: tuple[str, ...] = ("secret",), token: str | None = None) -> None:
        self.token = token or f"hvs.{secrets.token_urlsafe(24)}"
        self.tokens = {self.token}
        self.mounts: dict[str, dict[str, _Key]] = {m: {} for m in mounts}
        self.lock = threading.Lock()
        # (method, path with query, namespace header) of every request; never the token.
        self.requests: list[tuple[str, str, str | None]] = []
        handler = type("Handler", (_Handler,), {"vault": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeVault":
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-vault", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeVault":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stored(self, mount: str, path: str) -> dict | None:
        """The latest values at ``path`` as the server holds them (for assertions)."""
        with self.lock:
            key = self.mounts.get(mount, {}).get(path)
            return dict(key.versions[key.current_version]["data"]) if key and key.versions else None


class _Handler(BaseHTTPRequestHandler):
    vault: FakeVault
    server_version = "FakeVault/kv2"
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args) -> None:  # keep test output clean
        pass

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, status: int, body: dict | None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            # hvac parses errors only when the Content-Type is exactly application/json.
            self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _errors(self, status: int, *errors: str) -> None:
        self._send(status, {"errors": list(errors)})

    def _ok(self, data: dict) -> None:
        self._send(
            200,
            {
                "request_id": str(uuid.uuid4()),
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": data,
                "wrap_info": None,
                "warnings": None,
                "auth": None,
                "mount_type": "kv",
            },
        )

    def _body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        body = self._body() if method in ("POST", "PUT") else {}
        vault = self.vault
        with vault.lock:
            vault.requests.append((method, self.path, self.headers.get("X-Vault-Namespace")))
        if not parts.path.startswith("/v1/"):
            return self._errors(404)
        route = unquote(parts.path[len("/v1/") :])
        if route == "sys/health" and method == "GET":
            return self._send(200, {"initialized": True, "sealed": False, "standby": False, "version": "fake-kv2"})
        if self.headers.get("X-Vault-Token") not in vault.tokens:
            return self._errors(403, "permission denied")
        if method == "GET" and query.get("list", [""])[0] == "true":
            method = "LIST"
        mount, _, rest = route.partition("/")
        kind, _, path = rest.partition("/")
        if mount not in vault.mounts or kind not in ("data", "metadata"):
            return self._errors(404, f'no handler for route "{route}". route entry not found.')
        if body is None:
            return self._errors(400, "failed to parse JSON input")
        with vault.lock:
            keys = vault.mounts[mount]
            if kind == "data":
                if method in ("POST", "PUT"):
                    return self._write(keys, path, body)
                if method == "GET":
                    return self._read(keys, path, query)
            else:
                if method == "LIST":
                    return self._list(keys, path)
                if method == "GET":
                    return self._metadata(keys, path)
                if method == "DELETE":
                    keys.pop(path.rstrip("/"), None)
                    return self._send(204, None)
        return self._errors(405, "unsupported operation")

    # -- KV v2 ------------------------------------------------------------------------------

    def _write(self, keys: dict[str, _Key], path: str, body: dict) -> None:
        if not path or path.endswith("/"):
            return self._errors(400, "invalid key")
        data = body.get("data")
        if not isinstance(data, dict):
            return self._errors(400, "no data provided")
        options = body.get("options") or {}
        key = keys.get(path)
        current = key.current_version if key else 0
        if "cas" in options and options["cas"] is not None and int(options["cas"]) != current:
            return self._errors(400, "check-and-set parameter did not match the current version")
        if key is None:
            key = keys[path] = _Key()
        key.current_version += 1
        key.updated_time = _now()
        key.versions[key.current_version] = {"data": json.loads(json.dumps(data)), "created_time": key.updated_time}
        self._ok(key.version_meta(key.current_version))

    def _read(self, keys: dict[str, _Key], path: str, query: dict) -> None:
        key = keys.get(path)
        if key is None:
            return self._errors(404)
        try:
            version = int(query.get("version", ["0"])[0])
        except ValueError:
            return self._errors(400, "invalid version")
        version = version or key.current_version
        if version not in key.versions:
            return self._errors(404)
        self._ok({"data": key.versions[version]["data"], "metadata": key.version_meta(version)})

    def _metadata(self, keys: dict[str, _Key], path: str) -> None:
        key = keys.get(path)
        if key is None:
            return self._errors(404)
        self._ok(
            {
                "cas_required": False,
                "created_time": key.created_time,
                "current_version": key.current_version,
                "custom_metadata": None,
                "delete_version_after": "0s",
                "max_versions": 0,
                "oldest_version": min(key.versions) if key.versions else 0,
                "updated_time": key.updated_time,
                "versions": {str(n): key.version_meta(n) for n in key.versions},
            }
        )

    def _list(self, keys: dict[str, _Key], prefix: str) -> None:
        folder = prefix.rstrip("/")
        start = f"{folder}/" if folder else ""
        names: set[str] = set()
        for path in keys:
            if not path.startswith(start):
                continue
            rest = path[len(start) :]
            head, slash, _ = rest.partition("/")
            names.add(head + "/" if slash else head)
        if not names:
            return self._errors(404)
        self._ok({"keys": sorted(names)})

    # -- HTTP methods -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_LIST(self) -> None:
        self._dispatch("LIST")
