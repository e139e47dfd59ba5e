"""Step executors (innominatus.engine.executors): real subprocesses, real git in temporary
directories, a real local HTTP server, a real ansible-playbook run. No database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from innominatus.engine.executors import (
    AnsibleExecutor,
    ApprovalRequired,
    ExecutorRegistry,
    GitExecutor,
    HttpExecutor,
    ShellExecutor,
    UnknownStepType,
    WaitExecutor,
    approved_outputs,
    default_registry,
    rejected_error,
    script_has_placeholder,
)
from innominatus.engine.executors.tools import find_tool, helm, kubectl, terraform, tofu
from innominatus.engine.model import StepContext, StepFailed
from innominatus.kit.policy import Decision, PolicyEngineUnavailable

PY = sys.executable


class Ctx:
    """Builds StepContexts that record their log lines."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.lines: list[str] = []
        self.cancelled = asyncio.Event()

    async def log(self, line: str) -> None:
        self.lines.append(line)

    def __call__(self, inputs: dict, *, services: dict | None = None, step_id: str = "step-1",
                 attempt: int = 1, workdir: Path | None = None) -> StepContext:
        return StepContext(
            run_id="run-42",
            step_id=step_id,
            attempt=attempt,
            idempotency_key="run-42/step-1/key",
            inputs=inputs,
            workdir=str(workdir or self.workdir),
            cancelled=self.cancelled,
            log=self.log,
            services=services or {},
        )

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def ctx(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    return Ctx(work)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 in a container may not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def wait_for_file(path: Path, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------- registry


def test_default_registry_has_every_builtin():
    registry = default_registry()
    assert set(registry.types()) == {
        "shell", "http", "git", "wait", "approval", "policy", "ansible",
        "kubectl", "terraform", "tofu", "helm", "workflow", "resource",
    }
    assert registry.types() == sorted(registry.types())
    assert registry.get("shell").type == "shell"
    assert registry.is_placeholder("workflow") and not registry.is_placeholder("resource")
    assert not registry.is_placeholder("shell")
    assert "workflow" not in default_registry(placeholders=False)


def test_unknown_type_lists_known_types_and_suggests():
    registry = default_registry()
    with pytest.raises(UnknownStepType) as info:
        registry.get("shel")
    message = str(info.value)
    assert "unknown step type 'shel'" in message
    assert "did you mean 'shell'" in message
    assert "known types: ansible, approval, git" in message
    assert info.value.suggestions[0] == "shell"
    with pytest.raises(LookupError) as info:
        registry.get("zzzzzz")
    assert "did you mean" not in str(info.value)


def test_register_refuses_duplicates_unless_replacing():
    registry = default_registry()

    class SubWorkflow:
        type = "workflow"

        async def run(self, ctx):
            return {"ok": True}

    with pytest.raises(ValueError, match="already registered"):
        registry.register(SubWorkflow())
    mine = SubWorkflow()
    registry.register(mine, replace=True)
    assert registry.get("workflow") is mine and not registry.is_placeholder("workflow")
    with pytest.raises(TypeError):
        ExecutorRegistry().register(object())


@pytest.mark.parametrize("type_", ["workflow"])
async def test_placeholders_fail_not_wired(ctx, type_):
    with pytest.raises(StepFailed) as info:
        await default_registry().get(type_).run(ctx({}))
    assert info.value.kind == "not_wired" and info.value.retryable is False
    assert type_ in info.value.message


# ------------------------------------------------------------------------------------------- shell


async def test_shell_argv_success_streams_and_captures(ctx):
    out = await ShellExecutor().run(ctx({"command": [PY, "-c", "import sys; print('one'); print('two'); "
                                                     "print('warn', file=sys.stderr)"]}))
    assert out == {"exit_code": 0, "stdout": "one\ntwo\n", "stderr": "warn\n"}
    assert "one" in ctx.lines and "two" in ctx.lines and "[stderr] warn" in ctx.lines


async def test_shell_nonzero_exit_is_exit_code_failure(ctx):
    with pytest.raises(StepFailed) as info:
        await ShellExecutor().run(ctx({"command": [PY, "-c", "import sys; print('broken', file=sys.stderr); sys.exit(3)"]}))
    assert info.value.kind == "exit_code"
    assert "exited with 3" in info.value.message and "broken" in info.value.message
    assert info.value.outputs["exit_code"] == 3


async def test_shell_argv_is_never_a_shell_string(ctx):
    evil = ['; touch pwned', '$(touch pwned2)', '`touch pwned3`', '&& touch pwned4 #']
    out = await ShellExecutor().run(ctx({"command": ["/bin/echo", *evil]}))
    assert out["stdout"] == " ".join(evil) + "\n"
    assert not any((ctx.workdir / name).exists() for name in ("pwned", "pwned2", "pwned3", "pwned4"))


async def test_shell_script_gets_params_only_as_env(ctx):
    value = '"; touch pwned; echo "$(touch pwned2)'
    out = await ShellExecutor().run(ctx({"script": 'printf "%s" "$GREETING"', "env": {"GREETING": value}}))
    assert out["stdout"] == value
    assert not (ctx.workdir / "pwned").exists() and not (ctx.workdir / "pwned2").exists()
    assert script_has_placeholder('echo "${params.name}"')
    assert not script_has_placeholder('echo "$NAME" "$${HOME}" $1')


async def test_shell_environment_is_minimal_plus_attempt_ids(ctx, monkeypatch):
    monkeypatch.setenv("INNOMINATUS_TEST_LEAK", "should-not-leak")
    out = await ShellExecutor().run(ctx({"command": [PY, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
                                         "env": {"EXTRA": "x", "COUNT": 3}}, attempt=2))
    env = json.loads(out["stdout"])
    assert env["INNOMINATUS_IDEMPOTENCY_KEY"] == "run-42/step-1/key"
    assert env["INNOMINATUS_RUN_ID"] == "run-42"
    assert env["INNOMINATUS_STEP_ID"] == "step-1"
    assert env["INNOMINATUS_ATTEMPT"] == "2"
    assert env["EXTRA"] == "x" and env["COUNT"] == "3"
    assert {"PATH", "HOME", "LANG"} <= set(env)
    assert "INNOMINATUS_TEST_LEAK" not in env


async def test_shell_cwd_stays_inside_workdir(ctx):
    (ctx.workdir / "app").mkdir()
    out = await ShellExecutor().run(ctx({"command": [PY, "-c", "import os; print(os.getcwd())"], "cwd": "app"}))
    assert Path(out["stdout"].strip()) == (ctx.workdir / "app").resolve()
    for bad in ("..", "../elsewhere", "/tmp", "app/../../x"):
        with pytest.raises(StepFailed) as info:
            await ShellExecutor().run(ctx({"command": ["/bin/true"], "cwd": bad}))
        assert info.value.kind == "invalid_input" and info.value.retryable is False


async def test_shell_bad_inputs(ctx):
    for inputs in ({}, {"command": "echo hi"}, {"command": []}, {"command": ["x"], "script": "y"}, {"command": ["x"], "bogus": 1}):
        with pytest.raises(StepFailed) as info:
            await ShellExecutor().run(ctx(inputs))
        assert info.value.kind == "invalid_input", inputs
    with pytest.raises(StepFailed) as info:
        await ShellExecutor().run(ctx({"command": ["/no/such/program"]}))
    assert info.value.kind == "not_found" and info.value.retryable is False


async def test_shell_masks_secret_env_values(ctx):
    secret = "s3cr3t-t0ken-value"
    out = await ShellExecutor().run(ctx({"script": 'echo "token is $API_TOKEN"', "env": {"API_TOKEN": secret}}))
    assert secret not in ctx.text and secret not in out["stdout"]
    assert "token is ***" in ctx.lines


SPAWN_AND_WAIT = 'sleep 60 & echo $! > child.pid; echo $$ > shell.pid; wait'


async def test_shell_timeout_kills_the_process_group(ctx):
    started = time.monotonic()
    with pytest.raises(StepFailed) as info:
        # 2 s: time for the shell to write its pid files first, even on a loaded machine
        await ShellExecutor().run(ctx({"script": SPAWN_AND_WAIT, "timeout": 2}))
    assert info.value.kind == "timeout" and info.value.retryable is True
    assert time.monotonic() - started < 15  # the timeout, not the script's 60 s
    for name in ("child.pid", "shell.pid"):
        pid = int((ctx.workdir / name).read_text())
        assert await gone(pid), f"{name} {pid} survived the timeout"


async def test_shell_cancel_kills_the_process_group_promptly(ctx):
    task = asyncio.ensure_future(ShellExecutor().run(ctx({"script": SPAWN_AND_WAIT})))
    child = int(await wait_for_file(ctx.workdir / "child.pid"))
    shell = int(await wait_for_file(ctx.workdir / "shell.pid"))
    assert alive(child)
    started = time.monotonic()
    ctx.cancelled.set()
    with pytest.raises(StepFailed) as info:
        await task
    assert info.value.kind == "cancelled" and info.value.retryable is False
    assert time.monotonic() - started < 3
    assert await gone(child) and await gone(shell)


async def test_shell_task_cancellation_kills_too(ctx):
    """The scheduler's own asyncio timeout (task.cancel()) must not leave the process behind."""
    task = asyncio.ensure_future(ShellExecutor().run(ctx({"script": SPAWN_AND_WAIT})))
    child = int(await wait_for_file(ctx.workdir / "child.pid"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(child)


async def test_shell_output_capture_is_bounded(ctx):
    out = await ShellExecutor().run(ctx({"command": [PY, "-c", "import sys; sys.stdout.write('x' * 200000 + 'END')"]}))
    assert len(out["stdout"]) == 64 * 1024 and out["stdout"].endswith("END")


# -------------------------------------------------------------------------------------------- http


class _Server:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                server.requests.append({"path": path, "method": self.command,
                                        "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                if path == "/slow":
                    server.release.wait(10)
                status = {"/ok": 200, "/created": 201, "/fail500": 503, "/fail404": 404, "/fail429": 429,
                          "/slow": 200, "/text": 200}.get(path, 404)
                if path == "/text":
                    payload, ctype = b"plain words", "text/plain"
                else:
                    payload = json.dumps({"path": path, "key": self.headers.get("Idempotency-Key"),
                                          "got": json.loads(body) if body else None}).encode()
                    ctype = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-Secret-Internal", "nope")
                self.end_headers()
                self.wfile.write(payload)

            do_PUT = do_POST
            do_GET = do_POST

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    running = _Server()
    yield running
    running.close()


async def test_http_success_sends_idempotency_key(ctx, server):
    out = await HttpExecutor().run(ctx({"url": f"{server.url}/ok?token=hidden", "json": {"app": "checkout"},
                                        "headers": {"Authorization": "Bearer top-secret"}}))
    assert out["status"] == 200
    assert out["json"]["key"] == "run-42/step-1/key" and out["json"]["got"] == {"app": "checkout"}
    assert out["headers"]["content-type"] == "application/json" and "x-secret-internal" not in out["headers"]
    seen = server.requests[-1]
    assert seen["method"] == "POST" and seen["headers"]["idempotency-key"] == "run-42/step-1/key"
    assert seen["headers"]["authorization"] == "Bearer top-secret"
    assert "top-secret" not in ctx.text and "hidden" not in ctx.text


async def test_http_body_and_expect_status(ctx, server):
    out = await HttpExecutor().run(ctx({"url": f"{server.url}/text", "method": "put", "body": "raw"}))
    assert out["body"] == "plain words" and "json" not in out
    assert server.requests[-1]["body"] == b"raw" and server.requests[-1]["method"] == "PUT"
    out = await HttpExecutor().run(ctx({"url": f"{server.url}/created", "expect_status": [201]}))
    assert out["status"] == 201
    with pytest.raises(StepFailed) as info:
        await HttpExecutor().run(ctx({"url": f"{server.url}/ok", "expect_status": [201]}))
    assert info.value.kind == "http_status" and info.value.retryable is False


async def test_http_5xx_is_retryable_4xx_is_not(ctx, server):
    with pytest.raises(StepFailed) as info:
        await HttpExecutor().run(ctx({"url": f"{server.url}/fail500"}))
    assert info.value.kind == "http_5xx" and info.value.retryable is True and "503" in info.value.message
    with pytest.raises(StepFailed) as info:
        await HttpExecutor().run(ctx({"url": f"{server.url}/fail404"}))
    assert info.value.kind == "http_4xx" and info.value.retryable is False
    with pytest.raises(StepFailed) as info:
        await HttpExecutor().run(ctx({"url": f"{server.url}/fail429"}))
    assert info.value.kind == "http_4xx" and info.value.retryable is True
    # Every attempt of the step carried the same key.
    assert {r["headers"]["idempotency-key"] for r in server.requests} == {"run-42/step-1/key"}


async def test_http_connection_error_is_retryable(ctx):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StepFailed) as info:
        await HttpExecutor().run(ctx({"url": f"http://127.0.0.1:{port}/x"}))
    assert info.value.kind == "connection" and info.value.retryable is True


async def test_http_timeout_and_cancel(ctx, server):
    with pytest.raises(StepFailed) as info:
        await HttpExecutor().run(ctx({"url": f"{server.url}/slow", "timeout": 0.3}))
    assert info.value.kind == "timeout" and info.value.retryable is True
    task = asyncio.ensure_future(HttpExecutor().run(ctx({"url": f"{server.url}/slow"})))
    deadline = time.monotonic() + 10
    while sum(r["path"] == "/slow" for r in server.requests) < 2:  # the request is in flight, held by the server
        assert time.monotonic() < deadline and not task.done(), "the request never reached the server"
        await asyncio.sleep(0.02)
    started = time.monotonic()
    ctx.cancelled.set()
    with pytest.raises(StepFailed) as info:
        await task
    # prompt: well before the server would have answered (10 s), with room for a loaded machine
    assert info.value.kind == "cancelled" and time.monotonic() - started < 3


async def test_http_bad_inputs(ctx):
    for inputs in ({}, {"url": "ftp://x/y"}, {"url": "http://x", "method": "BREW"},
                   {"url": "http://x", "json": {}, "body": ""}, {"url": "http://x", "expect_status": ["ok"]}):
        with pytest.raises(StepFailed) as info:
            await HttpExecutor().run(ctx(inputs))
        assert info.value.kind == "invalid_input", inputs


# --------------------------------------------------------------------------------------------- git


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def bare(tmp_path):
    remote = tmp_path / "remote.git"
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    return remote


def _commits(remote: Path, branch: str = "main") -> list[str]:
    return _git("--git-dir", str(remote), "rev-list", branch).split()


async def test_git_commits_once_and_is_idempotent(ctx, bare, tmp_path):
    files = {"apps/checkout/deployment.yaml": "replicas: 1\n", "README.md": "hello\n"}
    inputs = {"repository": f"file://{bare}", "files": files, "message": "deploy checkout",
              "author_name": "Robot", "author_email": "robot@example.com", "push": True}
    first = await GitExecutor().run(ctx(inputs))
    assert first["changed"] is True and first["pushed"] is True and len(first["commit"]) == 40
    assert _commits(bare) == [first["commit"]]
    assert _git("--git-dir", str(bare), "show", "main:apps/checkout/deployment.yaml") == "replicas: 1\n"
    assert _git("--git-dir", str(bare), "log", "-1", "--format=%an <%ae> %s", "main").strip() == \
        "Robot <robot@example.com> deploy checkout"

    # A retried attempt (the same work directory: its clone is fetched and reset) makes no commit.
    # Idempotency in a fresh clone and deleting with null: tests/test_kit_git.py.
    again = await GitExecutor().run(ctx(inputs))
    assert again == {**first, "changed": False, "pushed": False}
    assert "reusing the clone in repo" in ctx.lines
    assert _commits(bare) == [first["commit"]]


async def test_git_local_path_new_branch_and_no_push(ctx, bare, tmp_path):
    seeded = await GitExecutor().run(ctx({"repository": str(bare), "files": {"a.txt": "a"}, "push": True}))
    out = await GitExecutor().run(ctx({"repository": str(bare), "branch": "feature/x", "files": {"b.txt": "b"},
                                       "push": True}, workdir=tmp_path / "w2"))
    assert out["changed"] is True and out["branch"] == "feature/x"
    assert _commits(bare, "feature/x") == [out["commit"], seeded["commit"]]
    local = await GitExecutor().run(ctx({"repository": str(bare), "files": {"c.txt": "c"}}, workdir=tmp_path / "w3"))
    assert local["changed"] is True and local["pushed"] is False
    assert _commits(bare) == [seeded["commit"]]  # nothing pushed


async def test_git_failures_of_the_kit_become_step_failures(ctx, bare, tmp_path):
    """The clone, path checks and push are innominatus.kit.git (tested in test_kit_git.py); the
    step maps its errors to StepFailed with the same kind and retryability."""
    with pytest.raises(StepFailed) as info:
        await GitExecutor().run(ctx({"repository": str(bare), "files": {"../escape.txt": "owned"}, "push": True}))
    assert info.value.kind == "invalid_input" and info.value.retryable is False
    assert info.value.message == "git: '../escape.txt' escapes the repository; give a path inside it"
    assert _git("--git-dir", str(bare), "for-each-ref").strip() == ""
    with pytest.raises(StepFailed) as info:
        await GitExecutor().run(ctx({"repository": str(tmp_path / "missing.git"), "files": {"a": "b"}},
                                    workdir=tmp_path / "w2"))
    assert info.value.kind == "git_remote" and info.value.retryable is True
    with pytest.raises(StepFailed) as info:
        await GitExecutor().run(ctx({"repository": "ext::sh -c touch% pwned", "files": {"a": "b"}}))
    assert info.value.kind == "invalid_input" and "remote helpers" in info.value.message
    assert not (ctx.workdir / "pwned").exists()


@pytest.mark.parametrize("inputs,says", [
    ({"files": {}}, "`files` must map at least one path"),
    ({"branch": "a..b"}, "'a..b' is not a valid branch name"),
    ({"push": "yes"}, "`push` must be true or false"),
    ({"author_name": 7}, "`author_name` must be text"),
    ({"path": "../outside"}, "points outside the step's work directory"),
    ({"timeout": 0}, "expected a positive number of seconds"),
    ({"force": True}, "unknown input(s) force"),
])
async def test_git_bad_inputs(ctx, bare, inputs, says):
    with pytest.raises(StepFailed) as info:
        await GitExecutor().run(ctx({"repository": str(bare), "files": {"a": "b"}, **inputs}))
    assert info.value.kind == "invalid_input" and info.value.retryable is False
    assert says in info.value.message
    assert _git("--git-dir", str(bare), "for-each-ref").strip() == ""


TOKEN = "ghp_S3cretT0kenValue42"


async def test_git_never_logs_url_credentials(ctx):
    """A token given as the URL's user name is a credential: not in log lines nor errors."""
    with pytest.raises(StepFailed) as info:
        await GitExecutor(default_timeout=30).run(ctx({"repository": f"https://{TOKEN}@127.0.0.1:1/x.git",
                                                       "files": {"a": "b"}}))
    assert info.value.kind == "git_remote" and info.value.retryable is True
    assert "cloning https://***@127.0.0.1:1/x.git" in ctx.lines
    assert TOKEN not in ctx.text and TOKEN not in info.value.message


# What git itself prints with credentials in it (masked): tests/test_kit_git.py.


# -------------------------------------------------------------------------------------------- wait


async def test_wait_sleeps_and_cancels(ctx):
    out = await WaitExecutor().run(ctx({"seconds": 0.1}))
    assert out["waited"] >= 0.1
    task = asyncio.ensure_future(WaitExecutor().run(ctx({"seconds": 30})))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    ctx.cancelled.set()
    with pytest.raises(StepFailed) as info:
        await task
    assert info.value.kind == "cancelled" and time.monotonic() - started < 3  # not the 30 s asked for
    with pytest.raises(StepFailed) as info:
        await WaitExecutor().run(ctx({"seconds": -1}))
    assert info.value.kind == "invalid_input"


# ---------------------------------------------------------------------------------------- approval


async def test_approval_raises_approval_required(ctx):
    executor = default_registry().get("approval")
    settings = {"message": "ship it?", "approvers": ["group:sre"], "timeout": 3600}
    with pytest.raises(ApprovalRequired) as info:
        await executor.run(ctx(settings))
    assert not isinstance(info.value, StepFailed)  # the scheduler parks the step, it does not fail it
    assert type(info.value).__name__ == "ApprovalRequired"  # what the scheduler matches on
    assert info.value.settings == settings and info.value.approvers == ["group:sre"]
    assert info.value.timeout == 3600 and info.value.step_id == "step-1"
    assert str(info.value) == "approval required: ship it?"
    with pytest.raises(ApprovalRequired) as info:
        await executor.run(ctx({}))
    assert "step-1" in str(info.value) and info.value.approvers == []
    assert approved_outputs("alice", "ok") == {"approved": True, "by": "alice", "reason": "ok"}
    rejected = rejected_error("bob", "not today")
    assert rejected.kind == "rejected" and rejected.retryable is False
    assert rejected.message == "rejected by bob: not today"


# ------------------------------------------------------------------------------------------ policy


class FakePolicyEngine:
    def __init__(self, allow: bool = True, reasons: tuple[str, ...] = (), fail: bool = False) -> None:
        self.allow, self.reasons, self.fail = allow, reasons, fail
        self.inputs: list[dict] = []

    async def decide(self, input: dict) -> Decision:  # noqa: A002
        self.inputs.append(input)
        if self.fail:
            raise PolicyEngineUnavailable("fake engine", "did not answer (test)")
        return Decision(allow=self.allow, reasons=self.reasons, decision_id="d-1", engine="fake")


async def test_policy_allow_and_deny(ctx):
    executor = default_registry().get("policy")
    engine = FakePolicyEngine(allow=True)
    document = {"action": "deploy", "environment": "prod"}
    out = await executor.run(ctx({"input": document}, services={"policy": engine}))
    assert out == {"allow": True, "reasons": [], "decision_id": "d-1", "engine": "fake"}
    assert engine.inputs == [document]

    deny = FakePolicyEngine(allow=False, reasons=("prod is frozen", "needs a ticket"))
    with pytest.raises(StepFailed) as info:
        await executor.run(ctx({"input": document}, services={"policy": deny}))
    assert info.value.kind == "policy_denied" and info.value.retryable is False
    assert "prod is frozen" in info.value.message and "needs a ticket" in info.value.message
    out = await executor.run(ctx({"input": document, "enforce": False}, services={"policy": deny}))
    assert out["allow"] is False and out["reasons"] == ["prod is frozen", "needs a ticket"]

    with pytest.raises(StepFailed) as info:
        await executor.run(ctx({"input": document}, services={"policy": FakePolicyEngine(fail=True)}))
    assert info.value.kind == "policy_unavailable" and info.value.retryable is True
    with pytest.raises(StepFailed) as info:
        await executor.run(ctx({"input": document}))
    assert info.value.kind == "not_wired"


# ----------------------------------------------------------------------------------------- ansible

ANSIBLE = find_tool("ansible-playbook", os.environ.get("PATH"), [os.path.dirname(sys.executable)])
needs_ansible = pytest.mark.skipif(ANSIBLE is None, reason="ansible-playbook not installed (pip install ansible-core)")


@needs_ansible
async def test_ansible_runs_a_real_playbook_locally(ctx, tmp_path):
    target = tmp_path / "out" / "motd"
    playbook = [{
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"name": "make the directory", "file": {"path": "{{ target | dirname }}", "state": "directory"}},
            {"name": "write the file", "copy": {"content": "{{ greeting }} from {{ lookup('env', 'INNOMINATUS_RUN_ID') }}\n",
                                                "dest": "{{ target }}"}},
            {"set_fact": {"shout": "{{ greeting | upper }}"}},
            {"debug": {"msg": "said {{ shout }}"}},
        ],
    }]
    inputs = {"playbook": playbook, "vars": {"greeting": "hello", "target": str(target)}, "timeout": 240}
    out = await AnsibleExecutor().run(ctx(inputs))
    assert target.read_text() == "hello from run-42\n"
    assert out["exit_code"] == 0 and out["changed"] is True
    assert out["stats"]["failed"] == 0 and out["stats"]["ok"] >= 4
    assert "said HELLO" in ctx.text and "PLAY RECAP" in ctx.text

    again = await AnsibleExecutor().run(ctx(inputs))  # idempotent playbook: nothing changes
    assert again["changed"] is False and again["stats"]["changed"] == 0


@needs_ansible
async def test_ansible_failing_playbook_from_a_path(ctx):
    (ctx.workdir / "site.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - fail: {msg: deliberately broken}\n")
    with pytest.raises(StepFailed) as info:
        await AnsibleExecutor().run(ctx({"playbook": "site.yml", "timeout": 240}))
    assert info.value.kind == "exit_code" and "deliberately broken" in ctx.text


@needs_ansible
async def test_ansible_never_templates_var_values(ctx, tmp_path):
    """A param is data: `{{ lookup('pipe', ...) }}` in a var must reach the playbook literally."""
    marker = tmp_path / "marker"
    nested_marker = tmp_path / "nested-marker"
    target = tmp_path / "out.txt"
    payload = "{{ lookup('pipe', 'echo INJECTED') }}"
    touch = "{{ lookup('pipe', 'touch %s') }}" % marker
    playbook = [{
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"name": "print it", "debug": {"msg": "value=[{{ payload }}]"}},
            {"name": "write it", "copy": {"content": "{{ payload }}|{{ touch }}", "dest": "{{ target }}"}},
            {"name": "nested", "debug": {"msg": "nested=[{{ nested.entries[0] }}] block=[{{ nested.block }}]"}},
            {"name": "types survive", "assert": {"that": [
                "nested.count == 3", "nested.flag is sameas true", "nested.none is none", "nested.ratio == 2.5",
                "nested.entries | length == 2", "nested.word == 'yes'", "nested.version == '1.10'",
                "nested.empty == ''", "nested.day == '2024-01-01'", "plain == 'text'"]}},
        ],
    }]
    variables = {
        "payload": payload, "touch": touch, "target": str(target), "plain": "text",
        "nested": {"entries": ["{{ lookup('pipe', 'touch %s') }}" % nested_marker, "{% raw %}x"], "count": 3,
                   "flag": True, "none": None, "ratio": 2.5, "word": "yes", "version": "1.10", "empty": "",
                   "day": "2024-01-01",
                   "block": "{%% if lookup('pipe', 'touch %s') %%}{%% endif %%}" % nested_marker},
    }
    out = await AnsibleExecutor().run(ctx({"playbook": playbook, "vars": variables, "timeout": 240}))
    assert out["exit_code"] == 0 and out["stats"]["failed"] == 0
    assert target.read_text() == f"{payload}|{touch}"
    assert f"value=[{payload}]" in ctx.text
    assert "value=[INJECTED]" not in ctx.text
    assert f"nested=[{variables['nested']['entries'][0]}] block=[{variables['nested']['block']}]" in ctx.text
    assert not marker.exists() and not nested_marker.exists()
    vars_file = ctx.workdir / ".innominatus-step-1" / "vars.yml"
    assert oct(vars_file.stat().st_mode & 0o777) == "0o600"


async def test_ansible_missing_binary(ctx, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    for executor, inputs in ((AnsibleExecutor(path=str(empty)), {}),
                             (AnsibleExecutor(), {"env": {"PATH": str(empty)}})):
        with pytest.raises(StepFailed) as info:
            await executor.run(ctx({"playbook": [{"hosts": "localhost", "tasks": []}], **inputs}))
        assert info.value.kind == "tool_missing" and info.value.retryable is False
        assert info.value.message == "ansible-playbook is not installed: pip install ansible-core"


# ------------------------------------------------------------------------------------------- tools


@pytest.mark.parametrize("factory,binary", [(kubectl, "kubectl"), (terraform, "terraform"), (tofu, "tofu"), (helm, "helm")])
async def test_tools_fail_clearly_when_missing(ctx, tmp_path, factory, binary):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    for executor, inputs in ((factory(path=str(empty)), {"args": ["version"]}),
                             (factory(), {"args": ["version"], "env": {"PATH": str(empty)}})):
        with pytest.raises(StepFailed) as info:
            await executor.run(ctx(inputs))
        assert info.value.kind == "tool_missing" and info.value.retryable is False
        assert info.value.message.startswith(f"{binary} is not installed: ") and "install" in info.value.message


@pytest.mark.parametrize("factory,binary,args", [
    (kubectl, "kubectl", ["version", "--client"]),
    (terraform, "terraform", ["version"]),
    (tofu, "tofu", ["version"]),
    (helm, "helm", ["version", "--short"]),
])
async def test_tools_run_when_installed(ctx, factory, binary, args):
    if find_tool(binary, os.environ.get("PATH")) is None:
        pytest.skip(f"{binary} is not installed here")
    out = await factory().run(ctx({"args": args, "timeout": 120}))
    assert out["exit_code"] == 0 and (out["stdout"] or out["stderr"])


async def test_tool_nonzero_exit(ctx, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "helm"
    script.write_text("#!/bin/sh\necho \"helm: $*\" >&2\nexit 7\n")
    script.chmod(0o755)
    with pytest.raises(StepFailed) as info:
        await helm(path=str(fake)).run(ctx({"args": ["upgrade", "--install", "x"]}))
    assert info.value.kind == "exit_code" and "helm: upgrade --install x" in info.value.message
