"""The production shape: every service in its own `innominatus serve` process, an OPA
sidecar, PostgreSQL, and the gateway in front; a deployment goes through all of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from innominatus.kit.config import SERVICES
from innominatus.kit.pki import ensure_dev_pki
from innominatus.kit.policy import default_policy_dir
from tests.helpers.database import drop_database, fresh_database
from tests.helpers.opa import OpaServer, free_port
from tests.helpers.real_resources import resource_env

pytestmark = [pytest.mark.postgres, pytest.mark.opa]

SCORE = (Path(__file__).parent / "fixtures" / "score" / "checkout.yaml").read_text()


@pytest.fixture
def mesh(tmp_path):
    database = fresh_database("prodshape")
    data_dir = tmp_path / "data"
    tls = ensure_dev_pki(data_dir / "tls", [*SERVICES, "gateway"])
    ports = {name: free_port() for name in (*SERVICES, "gateway")}
    addresses = {f"INNOMINATUS_{name.upper()}_ADDR": f"127.0.0.1:{ports[name]}" for name in SERVICES}
    processes: dict[str, subprocess.Popen] = {}
    resources = resource_env()  # the deploy run provisions checkout's postgres and redis for real
    with OpaServer(default_policy_dir()) as opa:
        try:
            for name in (*SERVICES, "gateway"):
                env = {
                    **os.environ,
                    **addresses,
                    **resources,
                    "INNOMINATUS_DATA_DIR": str(data_dir),
                    "INNOMINATUS_DATABASE_URL": database,
                    "INNOMINATUS_OPA_URL": opa.url,
                    "INNOMINATUS_TLS_CA": str(tls[name].ca),
                    "INNOMINATUS_TLS_CERT": str(tls[name].cert),
                    "INNOMINATUS_TLS_KEY": str(tls[name].key),
                    "INNOMINATUS_GATEWAY_LISTEN": f"127.0.0.1:{ports['gateway']}",
                    "INNOMINATUS_AUDIT_RELAY_INTERVAL_SECONDS": "0.2",
                }
                log = open(tmp_path / f"{name}.log", "wb")
                processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "innominatus.cli.main", "serve", name, "--listen", f"127.0.0.1:{ports[name]}"],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                )
            gateway = f"http://127.0.0.1:{ports['gateway']}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{gateway}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                dead = [n for n, p in processes.items() if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    logs = "\n".join(f"--- {n}\n{(tmp_path / f'{n}.log').read_text()[-2000:]}" for n in processes)
                    pytest.fail(f"the mesh did not become ready (exited: {dead}):\n{logs}")
                time.sleep(0.2)
            yield {"gateway": gateway, "data_dir": data_dir, "processes": processes, "logs": tmp_path}
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            drop_database(database)


def test_a_deployment_crosses_every_process_and_is_audited(mesh):
    admin = json.loads((mesh["data_dir"] / "bootstrap-admin.json").read_text())
    with httpx.Client(base_url=mesh["gateway"], timeout=30) as http:
        login = http.post("/api/v1/auth:login", json=admin)
        assert login.status_code == 200, login.text
        http.headers["Authorization"] = f"Bearer {login.json()['accessToken']}"

        created = http.post("/api/v1/deployments", json={"scoreYaml": SCORE, "environment": "dev"})
        assert created.status_code == 200, created.text
        run_name = created.json()["run"]["name"]
        deadline = time.monotonic() + 30
        while (run := http.get(f"/api/v1/{run_name}").json()["run"])["state"] not in (
            "RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED"
        ):
            assert time.monotonic() < deadline, run
            time.sleep(0.2)
        assert run["state"] == "RUN_STATE_SUCCEEDED", run

        # Each service shipped its own record of the hop it handled.
        deadline = time.monotonic() + 30
        while True:
            records = http.get("/api/v1/audit/records", params={"pageSize": 100}).json().get("records", [])
            services = {r["event"]["service"] for r in records}
            if {"specs", "resources", "engine"} <= services:
                break
            assert time.monotonic() < deadline, services
            time.sleep(0.2)
        verify = http.get("/api/v1/audit:verify").json()
        assert verify["ok"] is True

    # SIGTERM: every process drains and exits cleanly.
    for process in mesh["processes"].values():
        process.send_signal(signal.SIGTERM)
    for name, process in mesh["processes"].items():
        assert process.wait(timeout=30) == 0, (mesh["logs"] / f"{name}.log").read_text()[-2000:]
