"""The CLI against a small canned HTTP gateway: credentials, error mapping and exit codes,
output formats, deploy --wait, audit verify/export, and offline validation."""

from __future__ import annotations

import io
import json
import socket
import stat
import sys
import threading
import types
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from ruamel.yaml import YAML

from innominatus.cli import credentials
from innominatus.cli.main import main

TOKEN = "eyJhbGciOiJFZERTQSJ9.test.token"

USER = {
    "name": "users/alice",
    "username": "alice",
    "displayName": "Alice",
    "roles": ["ROLE_DEVELOPER", "ROLE_VIEWER"],
    "teams": ["teams/checkout"],
    "createTime": "2025-01-02T03:04:05Z",
}


def _run(state: str, steps: list[dict] | None = None) -> dict:
    return {
        "name": "runs/r1",
        "workflow": "deploy",
        "application": "applications/web",
        "environment": "dev",
        "state": state,
        "steps": steps or [],
        "creator": "alice",
        "createTime": "2025-01-02T03:04:05.123Z",
    }


def problem(status: int, reason: str, detail: str, **extra) -> tuple[int, dict, str]:
    doc = {
        "type": "https://innominatus.dev/problems/" + reason.lower().replace("_", "-"),
        "title": reason.title(),
        "status": status,
        "detail": detail,
        "reason": reason,
        "metadata": extra.pop("metadata", {}),
        "violations": extra.pop("violations", []),
        "requestId": extra.pop("requestId", "req-123"),
    }
    return status, doc, "application/problem+json"


class FakeGateway:
    """A real HTTP server on 127.0.0.1:0 answering from `routes`.

    A route maps (METHOD, path) to (status, body, content type), a list of those (served in
    turn, the last one repeated), or a callable taking the recorded request.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], object] = {}
        self.requests: list[dict] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = {
                    "method": self.command,
                    "path": parts.path,
                    "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(raw) if raw else None,
                }
                gateway.requests.append(request)
                route = gateway.routes.get((self.command, parts.path))
                if route is None:
                    status, body, ctype = problem(404, "ROUTE_NOT_FOUND", f"no route for {parts.path}")
                elif callable(route):
                    status, body, ctype = route(request)
                elif isinstance(route, list):
                    status, body, ctype = route.pop(0) if len(route) > 1 else route[0]
                else:
                    status, body, ctype = route
                if isinstance(body, (dict, list)):
                    payload = json.dumps(body).encode()
                elif isinstance(body, str):
                    payload = body.encode()
                else:
                    payload = body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-Request-Id", "hdr-req-1")
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _serve
            do_POST = _serve
            do_PATCH = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def ok(self, method: str, path: str, body: object, ctype: str = "application/json") -> None:
        self.routes[(method, path)] = (200, body, ctype)

    def last(self, method: str, path: str) -> dict:
        matches = [r for r in self.requests if r["method"] == method and r["path"] == path]
        assert matches, f"no {method} {path} request; got {[(r['method'], r['path']) for r in self.requests]}"
        return matches[-1]


@pytest.fixture
def gateway():
    server = FakeGateway()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    directory = tmp_path / "config"
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(directory))
    monkeypatch.delenv("INNOMINATUS_SERVER", raising=False)
    monkeypatch.delenv("INNOMINATUS_TOKEN", raising=False)
    monkeypatch.delenv("INNOMINATUS_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./.innominatus/endpoints.json from the working tree
    return directory


@pytest.fixture
def logged_in(gateway, monkeypatch):
    monkeypatch.setenv("INNOMINATUS_SERVER", gateway.url)
    monkeypatch.setenv("INNOMINATUS_TOKEN", TOKEN)
    return gateway


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- login / whoami / logout ----------------------------------------------------------------


def test_login_stores_credentials_0600_and_whoami_uses_the_token(gateway, config_dir, monkeypatch, capsys):
    gateway.ok("POST", "/api/v1/auth:login", {"accessToken": TOKEN, "tokenType": "Bearer", "expiresIn": 900, "user": USER})
    gateway.ok("GET", "/api/v1/users:me", {"user": USER})
    _stdin(monkeypatch, "s3cret-pass\nignored\n")

    assert main(["login", "--server", gateway.url, "--username", "alice", "--password-stdin"]) == 0
    out = capsys.readouterr().out
    assert f"Logged in to {gateway.url} as alice" in out
    assert TOKEN not in out

    login = gateway.last("POST", "/api/v1/auth:login")
    assert login["body"] == {"username": "alice", "password": "s3cret-pass"}
    assert "authorization" not in login["headers"]

    path = config_dir / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())
    assert stored["server"] == gateway.url
    assert stored["access_token"] == TOKEN
    assert stored["username"] == "alice"
    assert stored["expires_at"].endswith("Z")

    assert main(["whoami"]) == 0
    out = capsys.readouterr().out
    assert gateway.last("GET", "/api/v1/users:me")["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert "alice" in out and "developer,viewer" in out and "checkout" in out

    assert main(["whoami", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"server": gateway.url, "user": USER}

    assert main(["logout"]) == 0
    assert not path.exists()
    assert main(["whoami"]) == 3
    assert "not logged in" in capsys.readouterr().err


def test_login_with_api_key(gateway, config_dir, capsys):
    gateway.ok("POST", "/api/v1/auth:login", {"accessToken": TOKEN, "expiresIn": 60, "user": USER})
    assert main(["login", "--server", gateway.url, "--api-key", "inn_abc123"]) == 0
    assert gateway.last("POST", "/api/v1/auth:login")["body"] == {"apiKey": "inn_abc123"}
    assert json.loads((config_dir / "credentials.json").read_text())["username"] == "alice"


def test_login_default_server_comes_from_endpoints_json(gateway, tmp_path, config_dir, monkeypatch, capsys):
    (tmp_path / ".innominatus").mkdir()
    (tmp_path / ".innominatus" / "endpoints.json").write_text(json.dumps({"gateway": gateway.url}))
    gateway.ok("POST", "/api/v1/auth:login", {"accessToken": TOKEN, "expiresIn": 60, "user": USER})
    _stdin(monkeypatch, "pw\n")
    assert main(["login", "-u", "alice", "--password-stdin"]) == 0
    assert json.loads((config_dir / "credentials.json").read_text())["server"] == gateway.url


def test_login_rejected_exits_3_and_stores_nothing(gateway, config_dir, monkeypatch, capsys):
    gateway.routes[("POST", "/api/v1/auth:login")] = problem(401, "INVALID_CREDENTIALS", "wrong username or password")
    _stdin(monkeypatch, "nope\n")
    assert main(["login", "--server", gateway.url, "-u", "alice", "--password-stdin"]) == 3
    err = capsys.readouterr().err
    assert "error: wrong username or password (reason: INVALID_CREDENTIALS, request id: req-123)" in err
    assert not (config_dir / "credentials.json").exists()


def test_login_without_password_source_is_a_usage_error(gateway, monkeypatch, capsys):
    _stdin(monkeypatch, "")  # not a TTY: no prompt possible
    assert main(["login", "--server", gateway.url, "-u", "alice"]) == 2
    assert "--password-stdin" in capsys.readouterr().err
    assert gateway.requests == []


def test_expired_stored_session_exits_3(gateway, config_dir, monkeypatch, capsys):
    credentials.save(gateway.url, TOKEN, 60, "alice")
    data = json.loads((config_dir / "credentials.json").read_text())
    data["expires_at"] = "2000-01-01T00:00:00Z"
    (config_dir / "credentials.json").write_text(json.dumps(data))
    assert main(["runs", "list"]) == 3
    assert "expired" in capsys.readouterr().err
    assert gateway.requests == []


def test_env_token_and_server_override_the_stored_session(gateway, config_dir, monkeypatch, capsys):
    credentials.save("http://127.0.0.1:1", "stale", 900, "bob")
    monkeypatch.setenv("INNOMINATUS_SERVER", gateway.url)
    monkeypatch.setenv("INNOMINATUS_TOKEN", "inn_key_from_env")
    gateway.ok("GET", "/api/v1/users:me", {"user": USER})
    assert main(["whoami"]) == 0
    assert gateway.last("GET", "/api/v1/users:me")["headers"]["authorization"] == "Bearer inn_key_from_env"


# -- errors and exit codes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [(401, "TOKEN_EXPIRED", 3), (403, "PERMISSION_DENIED", 4), (404, "NOT_FOUND", 5),
     (500, "INTERNAL", 6), (503, "SERVICE_UNAVAILABLE", 6), (409, "ALREADY_EXISTS", 1)],
)
def test_http_errors_map_to_exit_codes(logged_in, capsys, status, reason, code):
    logged_in.routes[("GET", "/api/v1/runs/r9")] = problem(status, reason, "something went wrong")
    assert main(["runs", "get", "runs/r9"]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"error: something went wrong (reason: {reason}, request id: req-123)" in captured.err
    assert "Traceback" not in captured.err


def test_policy_denial_prints_the_policy_reasons(logged_in, capsys):
    logged_in.routes[("POST", "/api/v1/teams")] = problem(
        403,
        "POLICY_DENIED",
        "denied by policy: teams.create: only admins create teams; teams need an owner",
        metadata={"decision_id": "d-1", "permission": "teams.create",
                  "reasons": "only admins create teams\nteams need an owner"},
    )
    assert main(["teams", "create", "payments"]) == 4
    err = capsys.readouterr().err
    assert "reason: POLICY_DENIED" in err
    assert "  policy: only admins create teams" in err
    assert "  policy: teams need an owner" in err
    assert logged_in.last("POST", "/api/v1/teams")["body"] == {"name": "teams/payments"}


def test_field_violations_are_listed(logged_in, capsys):
    logged_in.routes[("POST", "/api/v1/users")] = problem(
        400, "INVALID_ARGUMENT", "invalid user",
        violations=[{"field": "user.username", "description": "must be lowercase"}],
    )
    assert main(["users", "create", "--username", "Bob", "--role", "viewer"]) == 1
    err = capsys.readouterr().err
    assert "  user.username: must be lowercase" in err


def test_connection_refused_exits_6(monkeypatch, capsys):
    monkeypatch.setenv("INNOMINATUS_SERVER", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("INNOMINATUS_TOKEN", TOKEN)
    assert main(["apps", "list"]) == 6
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the server at http://127.0.0.1:")
    assert "Traceback" not in err


def test_non_json_answer_and_html_errors_do_not_crash(logged_in, capsys):
    logged_in.ok("GET", "/api/v1/applications", "<html>hello</html>", "text/html")
    assert main(["apps", "list"]) == 1
    assert "did not answer with JSON" in capsys.readouterr().err
    logged_in.routes[("GET", "/api/v1/applications/web")] = (502, "<html>Bad gateway</html>", "text/html")
    assert main(["apps", "get", "web"]) == 6
    err = capsys.readouterr().err
    assert "error: HTTP 502 Bad Gateway (request id: hdr-req-1)" in err


def test_usage_errors_exit_2(capsys):
    assert main(["runs", "list", "--limit", "zero"]) == 2
    assert main(["users", "create", "--username", "x", "--role", "emperor"]) == 2
    assert main(["no-such-command"]) == 2
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "exit codes:" in capsys.readouterr().out


# -- output formats ---------------------------------------------------------------------------

RUNS = [
    _run("RUN_STATE_SUCCEEDED"),
    {**_run("RUN_STATE_FAILED"), "name": "runs/r2", "environment": "prod", "error": "boom"},
]


def test_runs_list_json_yaml_and_table(logged_in, capsys):
    logged_in.ok("GET", "/api/v1/runs", {"runs": RUNS})

    assert main(["runs", "list", "--app", "web", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"runs": RUNS}
    query = logged_in.last("GET", "/api/v1/runs")["query"]
    assert query["application"] == "web" and query["pageSize"] == "100"

    assert main(["-o", "yaml", "runs", "list"]) == 0  # global option before the subcommand
    assert YAML(typ="safe").load(capsys.readouterr().out) == {"runs": RUNS}

    assert main(["runs", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "WORKFLOW", "APP", "ENV", "STATE", "CREATED"]
    assert lines[1].split() == ["r1", "deploy", "web", "dev", "SUCCEEDED", "2025-01-02", "03:04:05"]
    assert lines[2].split()[:5] == ["r2", "deploy", "web", "prod", "FAILED"]


def test_list_follows_page_tokens(logged_in, capsys):
    def users(request):
        if request["query"].get("pageToken") == "p2":
            return 200, {"users": [{**USER, "name": "users/bob", "username": "bob"}]}, "application/json"
        return 200, {"users": [USER], "nextPageToken": "p2"}, "application/json"

    logged_in.routes[("GET", "/api/v1/users")] = users
    assert main(["users", "list", "-o", "json"]) == 0
    assert [u["username"] for u in json.loads(capsys.readouterr().out)["users"]] == ["alice", "bob"]


def test_empty_table_says_so_on_stderr(logged_in, capsys):
    logged_in.ok("GET", "/api/v1/applications", {})
    assert main(["apps", "list"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "No applications found." in captured.err


def test_get_commands_accept_resource_names(logged_in, capsys):
    logged_in.ok("GET", "/api/v1/runs/r1", {"run": _run("RUN_STATE_RUNNING", [
        {"name": "provision", "type": "resources", "state": "STEP_STATE_SUCCEEDED", "attempts": 1}])})
    logged_in.ok("GET", "/api/v1/applications/web", {
        "application": {"name": "applications/web", "workloads": ["web"], "environments": ["dev"]},
        "deployments": [{"name": "deployments/d1", "environment": "dev", "workload": "web", "run": "runs/r1"}],
    })
    logged_in.ok("GET", "/api/v1/users/alice", {"user": USER})
    assert main(["runs", "get", "runs/r1"]) == 0
    out = capsys.readouterr().out
    assert "RUNNING" in out and "provision" in out
    assert main(["runs", "get", "r1", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["name"] == "runs/r1"
    assert main(["apps", "get", "applications/web"]) == 0
    assert "d1" in capsys.readouterr().out
    assert main(["users", "get", "users/alice", "-o", "yaml"]) == 0
    assert YAML(typ="safe").load(capsys.readouterr().out)["user"]["username"] == "alice"


def test_users_teams_and_apikeys_send_the_right_bodies(logged_in, monkeypatch, capsys):
    logged_in.ok("POST", "/api/v1/users", {"user": USER})
    logged_in.ok("POST", "/api/v1/teams/checkout:addMember",
                 {"team": {"name": "teams/checkout", "members": ["users/alice"]}})
    logged_in.ok("POST", "/api/v1/apikeys", {"apiKey": {"name": "apikeys/k1", "prefix": "inn_ab"}, "key": "inn_secret"})
    logged_in.ok("POST", "/api/v1/apikeys/k1:revoke", {"apiKey": {"name": "apikeys/k1"}})
    logged_in.ok("GET", "/api/v1/apikeys", {"apiKeys": [{"name": "apikeys/k1", "displayName": "ci"}]})

    _stdin(monkeypatch, "initial-pw\n")
    assert main(["users", "create", "--username", "alice", "--role", "developer", "--role", "VIEWER",
                 "--password-stdin"]) == 0
    assert logged_in.last("POST", "/api/v1/users")["body"] == {
        "username": "alice", "roles": ["ROLE_DEVELOPER", "ROLE_VIEWER"], "password": "initial-pw"}

    assert main(["teams", "add-member", "checkout", "alice"]) == 0
    assert logged_in.last("POST", "/api/v1/teams/checkout:addMember")["body"] == {"user": "users/alice"}

    capsys.readouterr()
    assert main(["apikeys", "create", "--name", "ci", "--ttl-days", "7"]) == 0
    assert logged_in.last("POST", "/api/v1/apikeys")["body"] == {"displayName": "ci", "ttlDays": 7}
    assert "Key: inn_secret" in capsys.readouterr().out

    assert main(["apikeys", "revoke", "apikeys/k1"]) == 0
    assert "Revoked apikeys/k1" in capsys.readouterr().out
    assert main(["apikeys", "list"]) == 0
    assert "ci" in capsys.readouterr().out


def test_user_lifecycle_commands_send_update_masks_and_remove_members(logged_in, capsys):
    logged_in.ok("PATCH", "/api/v1/users/alice", {"user": USER})
    logged_in.ok("POST", "/api/v1/teams/checkout:removeMember", {"team": {"name": "teams/checkout", "members": []}})

    assert main(["users", "disable", "alice"]) == 0
    sent = logged_in.last("PATCH", "/api/v1/users/alice")
    assert (sent["query"], sent["body"]) == ({"updateMask": "disabled"}, {"disabled": True})
    assert main(["users", "enable", "users/alice", "--etag", "abc123"]) == 0
    sent = logged_in.last("PATCH", "/api/v1/users/alice")
    assert (sent["query"], sent["body"]) == ({"updateMask": "disabled"}, {"disabled": False, "etag": "abc123"})
    assert main(["users", "set-roles", "alice", "viewer", "ROLE_DEVELOPER", "viewer"]) == 0
    sent = logged_in.last("PATCH", "/api/v1/users/alice")
    assert (sent["query"], sent["body"]) == ({"updateMask": "roles"}, {"roles": ["ROLE_VIEWER", "ROLE_DEVELOPER"]})

    assert main(["teams", "remove-member", "teams/checkout", "users/alice"]) == 0
    assert logged_in.last("POST", "/api/v1/teams/checkout:removeMember")["body"] == {"user": "users/alice"}
    capsys.readouterr()

    # A mistyped role is a usage error with a suggestion, and nothing is sent.
    sent_before = len(logged_in.requests)
    assert main(["users", "set-roles", "alice", "develper"]) == 2
    assert "did you mean 'developer'?" in capsys.readouterr().err
    assert main(["users", "set-roles", "alice"]) == 2  # at least one role
    assert len(logged_in.requests) == sent_before


def test_users_set_password_prompts_without_echo_or_reads_stdin(logged_in, monkeypatch, capsys):
    from innominatus.cli import main as cli_main

    logged_in.ok("GET", "/api/v1/users:me", {"user": USER})
    logged_in.ok("POST", "/api/v1/users/alice:changePassword", {"user": USER})
    logged_in.ok("POST", "/api/v1/users/bob:changePassword", {"user": {"name": "users/bob", "username": "bob"}})

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []
    answers: list[str] = []

    def fake_getpass(prompt: str = "Password: ") -> str:
        prompts.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr(cli_main.getpass, "getpass", fake_getpass)
    monkeypatch.setattr(sys, "stdin", Terminal(""))

    # Your own (no USERNAME, or your own name): current password, new one, and the new one again.
    answers[:] = ["old-password-1", "new-password-12", "new-password-12"]
    assert main(["users", "set-password"]) == 0
    assert prompts == ["Current password: ", "New password: ", "Repeat new password: "]
    assert logged_in.last("POST", "/api/v1/users/alice:changePassword")["body"] == {
        "currentPassword": "old-password-1", "newPassword": "new-password-12"}
    captured = capsys.readouterr()
    assert "Password of alice changed." in captured.out and "stay valid" in captured.err
    assert "new-password-12" not in captured.out + captured.err

    # Another user's (an admin's reset): only the new password, twice.
    prompts.clear()
    answers[:] = ["reset-password-1", "reset-password-1"]
    assert main(["users", "set-password", "users/bob"]) == 0
    assert prompts == ["New password for bob: ", "Repeat new password for bob: "]
    assert logged_in.last("POST", "/api/v1/users/bob:changePassword")["body"] == {"newPassword": "reset-password-1"}
    assert "Password of bob reset." in capsys.readouterr().out

    # A mistyped repeat sends nothing.
    sent_before = len(logged_in.requests)
    answers[:] = ["old-password-1", "new-password-12", "new-password-13"]
    assert main(["users", "set-password", "alice"]) == 2
    assert "differ; nothing was changed" in capsys.readouterr().err
    assert [r["path"] for r in logged_in.requests[sent_before:]] == ["/api/v1/users:me"]

    # Scripts: --password-stdin, current then new for your own, the new one alone for another's.
    _stdin(monkeypatch, "old-password-1\nnew-password-12\n")
    assert main(["users", "set-password", "alice", "--password-stdin", "-o", "json"]) == 0
    assert logged_in.last("POST", "/api/v1/users/alice:changePassword")["body"] == {
        "currentPassword": "old-password-1", "newPassword": "new-password-12"}
    assert json.loads(capsys.readouterr().out)["user"]["username"] == "alice"
    _stdin(monkeypatch, "reset-password-2\n")
    assert main(["users", "set-password", "bob", "--password-stdin"]) == 0
    assert logged_in.last("POST", "/api/v1/users/bob:changePassword")["body"] == {"newPassword": "reset-password-2"}
    capsys.readouterr()

    # No terminal and no --password-stdin: a usage error naming the flag; the second line
    # missing from stdin likewise. Never a password argument.
    sent_before = len(logged_in.requests)
    _stdin(monkeypatch, "")
    assert main(["users", "set-password"]) == 2
    assert "--password-stdin" in capsys.readouterr().err
    _stdin(monkeypatch, "old-password-1\n")
    assert main(["users", "set-password", "--password-stdin"]) == 2
    assert "empty new password" in capsys.readouterr().err
    assert main(["users", "set-password", "alice", "new-password-12"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    assert all(not r["path"].endswith(":changePassword") for r in logged_in.requests[sent_before:])

    # The server's refusal (here: the wrong current password) is reported like any other.
    logged_in.routes[("POST", "/api/v1/users/alice:changePassword")] = problem(
        403, "INVALID_CURRENT_PASSWORD", "current_password is not the current password of users/alice")
    _stdin(monkeypatch, "wrong-password\nnew-password-12\n")
    assert main(["users", "set-password", "--password-stdin"]) == 4
    assert "INVALID_CURRENT_PASSWORD" in capsys.readouterr().err


# -- deploy -----------------------------------------------------------------------------------

SCORE = """\
apiVersion: score.dev/v1b1
metadata:
  name: web
containers:
  web:
    image: nginx:1.27
"""


def _deploy_routes(gateway, states: list[dict]) -> None:
    gateway.ok("POST", "/api/v1/deployments", {
        "deployment": {"name": "deployments/d1", "application": "applications/web", "environment": "dev",
                       "workload": "web", "workloadVersion": 1, "run": "runs/r1"},
        "run": _run("RUN_STATE_PENDING"),
        "findings": [{"code": "SCORE-2001", "severity": "SEVERITY_WARNING", "message": "image tag is latest",
                      "pointer": "/containers/web/image", "line": 6, "column": 12}],
    })
    gateway.routes[("GET", "/api/v1/runs/r1")] = [(200, {"run": run}, "application/json") for run in states]


def test_deploy_wait_polls_until_succeeded(logged_in, tmp_path, capsys):
    score = tmp_path / "score.yaml"
    score.write_text(SCORE)
    step = {"name": "provision", "type": "resources", "attempts": 1}
    _deploy_routes(logged_in, [
        _run("RUN_STATE_RUNNING", [{**step, "state": "STEP_STATE_RUNNING"}]),
        _run("RUN_STATE_RUNNING", [{**step, "state": "STEP_STATE_RUNNING"}]),
        _run("RUN_STATE_SUCCEEDED", [{**step, "state": "STEP_STATE_SUCCEEDED"}]),
    ])
    code = main(["deploy", "-f", str(score), "--env", "dev", "--app", "web", "--wait", "--interval", "0.01"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    body = logged_in.last("POST", "/api/v1/deployments")["body"]
    assert body["scoreYaml"] == SCORE and body["environment"] == "dev" and body["application"] == "web"
    uuid.UUID(body["requestId"])
    polls = [r for r in logged_in.requests if r["path"] == "/api/v1/runs/r1"]
    assert len(polls) == 3
    assert "step provision (resources): RUNNING" in captured.err
    assert "step provision (resources): SUCCEEDED" in captured.err
    assert "runs/r1: SUCCEEDED" in captured.err
    assert "score.yaml:6:12: warning SCORE-2001: image tag is latest" in captured.err
    assert "deployments/d1" in captured.out and "SUCCEEDED" in captured.out


def test_deploy_wait_failed_run_exits_1_and_json_has_final_run(logged_in, tmp_path, capsys):
    score = tmp_path / "score.yaml"
    score.write_text(SCORE)
    _deploy_routes(logged_in, [{**_run("RUN_STATE_FAILED"), "error": "image pull failed"}])
    assert main(["deploy", "-f", str(score), "--env", "dev", "-w", "--interval", "0.01", "-o", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["run"]["state"] == "RUN_STATE_FAILED"
    assert data["deployment"]["name"] == "deployments/d1"
    assert "application" not in logged_in.last("POST", "/api/v1/deployments")["body"]


def test_deploy_wait_timeout_exits_7(logged_in, tmp_path, capsys):
    score = tmp_path / "score.yaml"
    score.write_text(SCORE)
    _deploy_routes(logged_in, [_run("RUN_STATE_RUNNING")])
    assert main(["deploy", "-f", str(score), "--env", "dev", "--wait", "--timeout", "0.2", "--interval", "0.05"]) == 7
    assert "timed out after 0.2s waiting for runs/r1" in capsys.readouterr().err


def test_deploy_without_wait_and_missing_file(logged_in, tmp_path, capsys):
    score = tmp_path / "score.yaml"
    score.write_text(SCORE)
    _deploy_routes(logged_in, [_run("RUN_STATE_RUNNING")])
    assert main(["deploy", "-f", str(score), "--env", "dev", "-o", "yaml"]) == 0
    data = YAML(typ="safe").load(capsys.readouterr().out)
    assert data["run"]["name"] == "runs/r1"
    assert not [r for r in logged_in.requests if r["path"] == "/api/v1/runs/r1"]

    assert main(["deploy", "-f", str(tmp_path / "missing.yaml"), "--env", "dev"]) == 1
    assert "cannot read" in capsys.readouterr().err


# -- audit ------------------------------------------------------------------------------------

RECORDS = [
    {"sequence": "1", "prevHash": "", "hash": "aa", "event": {
        "actor": "alice", "service": "specs", "method": "/innominatus.specs.v1.SpecsService/CreateDeployment",
        "outcome": "AUDIT_OUTCOME_SUCCEEDED", "resourceType": "deployment", "resourceName": "web@dev",
        "occurTime": "2025-01-02T03:04:05Z"}},
    {"sequence": "2", "prevHash": "aa", "hash": "bb", "event": {
        "actor": "bob", "service": "identity", "method": "/innominatus.identity.v1.IdentityService/CreateTeam",
        "outcome": "AUDIT_OUTCOME_DENIED", "reasons": ["only admins create teams"]}},
]


def test_audit_verify_broken_chain_exits_1(logged_in, capsys):
    logged_in.ok("GET", "/api/v1/audit:verify",
                 {"ok": False, "recordsChecked": "12", "firstBadSequence": "7", "problem": "edited"})
    assert main(["audit", "verify"]) == 1
    assert "audit chain BROKEN at sequence 7: edited" in capsys.readouterr().out
    assert main(["audit", "verify", "-o", "json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["firstBadSequence"] == "7"
    assert "sequence 7" in captured.err

    logged_in.ok("GET", "/api/v1/audit:verify", {"ok": True, "recordsChecked": "12"})
    assert main(["audit", "verify"]) == 0
    assert "audit chain OK: 12 records checked" in capsys.readouterr().out


def test_audit_list_filters(logged_in, capsys):
    logged_in.ok("GET", "/api/v1/audit/records", {"records": RECORDS[1:]})
    assert main(["audit", "list", "--actor", "bob", "--outcome", "denied", "--service", "identity", "--limit", "5"]) == 0
    query = logged_in.last("GET", "/api/v1/audit/records")["query"]
    assert query["filter.actor"] == "bob"
    assert query["filter.outcome"] == "AUDIT_OUTCOME_DENIED"
    assert query["filter.service"] == "identity"
    assert query["pageSize"] == "5"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["SEQ", "TIME", "ACTOR", "SERVICE"]
    assert "CreateTeam" in lines[1] and "DENIED" in lines[1]


def test_audit_export_streams_ndjson(logged_in, capsys):
    ndjson = "".join(json.dumps(r) + "\n" for r in RECORDS)
    logged_in.ok("GET", "/api/v1/audit:export", ndjson, "application/x-ndjson")
    assert main(["audit", "export", "--actor", "alice"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == RECORDS
    assert logged_in.last("GET", "/api/v1/audit:export")["query"]["filter.actor"] == "alice"

    assert main(["audit", "export", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == RECORDS

    logged_in.routes[("GET", "/api/v1/audit:export")] = problem(403, "PERMISSION_DENIED", "auditors only")
    assert main(["audit", "export"]) == 4


# -- validate (offline) -------------------------------------------------------------------------


@pytest.fixture
def fake_validator(monkeypatch):
    """A stand-in for innominatus.specs.validation, so the CLI's formatting is tested exactly."""
    module = types.ModuleType("innominatus.specs.validation")

    def validate_score(text, path=None):
        findings = []
        if "latest" in text:
            findings.append(types.SimpleNamespace(code="SCORE-2001", severity="warning", message="image tag is latest",
                                                  pointer="/containers/web/image", line=6, column=12,
                                                  hint="pin a version"))
        if "bogus" in text:
            findings.append(types.SimpleNamespace(code="SCORE-1002", severity="error", message="unknown key 'bogus'",
                                                  pointer="/bogus", line=2, column=1, hint=""))
        return types.SimpleNamespace(valid=not any(f.severity == "error" for f in findings), workload="web",
                                     findings=findings)

    module.validate_score = validate_score
    monkeypatch.setitem(sys.modules, "innominatus.specs.validation", module)
    return module


def test_validate_formats_findings_and_exit_codes(fake_validator, tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(SCORE.replace("1.27", "latest"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus: 1\n")

    assert main(["validate", str(good)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{good}:6:12: warning SCORE-2001: image tag is latest (hint: pin a version)\n"

    assert main(["validate", str(good), str(bad), str(tmp_path / "missing.yaml")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{bad}:2:1: error SCORE-1002: unknown key 'bogus'" in out
    assert any(line.startswith(f"{tmp_path / 'missing.yaml'}: error ") and "cannot read file" in line for line in out)

    assert main(["validate", str(good), str(bad), "-o", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False
    assert [f["path"] for f in data["files"]] == [str(good), str(bad)]
    assert data["files"][1]["findings"] == [{"code": "SCORE-1002", "severity": "error", "message": "unknown key 'bogus'",
                                             "pointer": "/bogus", "line": 2, "column": 1, "hint": ""}]


def test_validate_with_the_real_validator(tmp_path, capsys):
    pytest.importorskip("innominatus.specs.validation")
    good = tmp_path / "score.yaml"
    good.write_text(SCORE)
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: score.dev/v1b1\nmetadata:\n  name: web\ncontainers: 5\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("metadata: [unclosed\n")

    assert main(["validate", str(good)]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["validate", str(bad), str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:" in out and f"{broken}:" in out
    assert " error SCORE-" in out
    assert "Traceback" not in out

    assert main(["validate", "-o", "json", str(good), str(bad)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False
    assert data["files"][0]["path"] == str(good)
    assert all(f["severity"] != "error" for f in data["files"][0]["findings"])
    assert any(f["severity"] == "error" and f["code"].startswith("SCORE-") for f in data["files"][1]["findings"])


def test_validate_without_the_validator_module_fails_clearly(monkeypatch, tmp_path, capsys):
    import innominatus.specs as specs_pkg

    monkeypatch.delattr(specs_pkg, "validation", raising=False)
    monkeypatch.setitem(sys.modules, "innominatus.specs.validation", None)
    score = tmp_path / "score.yaml"
    score.write_text(SCORE)
    assert main(["validate", str(score)]) == 1
    err = capsys.readouterr().err
    assert "offline validation is not available" in err and "Traceback" not in err


# -- platform commands --------------------------------------------------------------------------


def test_platform_commands_report_a_missing_module(monkeypatch, capsys):
    import innominatus.cli as cli_pkg

    monkeypatch.delattr(cli_pkg, "platform", raising=False)
    monkeypatch.setitem(sys.modules, "innominatus.cli.platform", None)
    assert main(["-o", "json", "up", "--data-dir", "x"]) == 1
    assert "`innominatus up` is not available" in capsys.readouterr().err
    assert main(["migrate"]) == 1
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "up" in out and "serve" in out and "migrate" in out


def test_platform_commands_are_registered_by_the_platform_module(monkeypatch):
    import innominatus.cli as cli_pkg

    calls = []
    module = types.ModuleType("innominatus.cli.platform")

    def add_commands(subparsers):
        for name in ("up", "serve", "migrate"):
            p = subparsers.add_parser(name)
            p.add_argument("--data-dir")
            p.set_defaults(func=lambda args, _n=name: calls.append((_n, args.data_dir)) or 0)

    module.add_commands = add_commands
    monkeypatch.setattr(cli_pkg, "platform", module, raising=False)
    monkeypatch.setitem(sys.modules, "innominatus.cli.platform", module)
    assert main(["up", "--data-dir", "state"]) == 0
    assert calls == [("up", "state")]
