"""End to end: `innominatus up` in a subprocess, driven by the `innominatus` CLI, as a user
would on a fresh machine (embedded defaults: SQLite, in-process Rego)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.real_resources import resource_env

pytestmark = pytest.mark.e2e

SCORE = Path(__file__).parent / "fixtures" / "score" / "checkout.yaml"
CLI = [sys.executable, "-m", "innominatus.cli.main"]


@pytest.fixture
def platform_process(tmp_path):
    data_dir = tmp_path / "data"
    # the deploy run provisions checkout's postgres and redis for real, on the test servers
    env = {**os.environ, **resource_env(), "INNOMINATUS_CONFIG_DIR": str(tmp_path / "config"),
           "INNOMINATUS_DATABASE_URL": "", "INNOMINATUS_OPA_URL": ""}
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [*CLI, "up", "--data-dir", str(data_dir), "--port", "0"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        endpoints = data_dir / "endpoints.json"
        while not endpoints.exists():
            if process.poll() is not None or time.monotonic() - started > 60:
                process.kill()
                pytest.fail(f"innominatus up did not come up:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.1)
        ready_after = time.monotonic() - started
        try:
            yield {"data_dir": data_dir, "env": env, "endpoints": json.loads(endpoints.read_text()),
                   "ready_after": ready_after, "process": process, "log": log_path}
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def run_cli(platform, *args, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, env=platform["env"], timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"innominatus {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def test_login_deploy_inspect_and_verify_through_the_cli(platform_process):
    platform = platform_process
    endpoints = platform["endpoints"]
    assert set(endpoints["services"]) == {"identity", "specs", "engine", "resources", "audit"}
    assert all(Path(endpoints["tls"][k]).exists() for k in ("ca", "cert", "key"))
    admin = json.loads((platform["data_dir"] / "bootstrap-admin.json").read_text())
    assert oct((platform["data_dir"] / "bootstrap-admin.json").stat().st_mode & 0o777) == "0o600"

    run_cli(platform, "login", "--server", endpoints["gateway"], "--username", admin["username"], "--password-stdin",
            stdin=admin["password"] + "\n")
    whoami = json.loads(run_cli(platform, "whoami", "-o", "json").stdout)
    assert whoami["user"]["username"] == "admin"
    assert whoami["user"]["roles"] == ["ROLE_ADMIN"]

    deployed = run_cli(platform, "deploy", "-f", str(SCORE), "--env", "dev", "--wait", "--timeout", "60", "-o", "json")
    result = json.loads(deployed.stdout)
    run_name = result["run"]["name"]
    assert result["run"]["state"] == "RUN_STATE_SUCCEEDED"

    run = json.loads(run_cli(platform, "runs", "get", run_name, "-o", "json").stdout)["run"]
    assert [s["name"] for s in run["steps"]] == ["validate", "provision-cache", "provision-db", "render", "release"]
    assert all(s["state"] == "STEP_STATE_SUCCEEDED" for s in run["steps"])
    release = platform["data_dir"] / "engine" / "releases" / "dev" / "checkout" / "checkout.yaml"
    assert "registry.example.com/shop/checkout:1.4.2" in release.read_text()

    apps = json.loads(run_cli(platform, "apps", "list", "-o", "json").stdout)
    assert [a["name"] for a in apps["applications"]] == ["applications/checkout"]

    # The audit relays ship asynchronously; verify once the deployment's records are in.
    deadline = time.monotonic() + 30
    while True:
        listed = json.loads(run_cli(platform, "audit", "list", "--method", "CreateDeployment", "-o", "json").stdout)
        if listed.get("records"):
            break
        assert time.monotonic() < deadline, "the deployment never reached the audit chain"
        time.sleep(0.3)
    verify = run_cli(platform, "audit", "verify")
    assert verify.returncode == 0

    # The admin's password never reached the platform's logs.
    assert admin["password"] not in platform["log"].read_text()


def test_up_is_ready_quickly_and_stops_cleanly_on_sigterm(platform_process):
    platform = platform_process
    assert platform["ready_after"] < 10, f"innominatus up took {platform['ready_after']:.1f}s"
    process = platform["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    log = platform["log"].read_text()
    assert "shutting down" in log and "Traceback" not in log
