"""Regression tests for defects found in review: each one is how a user could have hurt
the platform or another user."""

from __future__ import annotations

from pathlib import Path

import pytest

from innominatus.gateway.ratelimit import client_key
from innominatus.identity.v1 import identity_pb2

pytestmark = pytest.mark.postgres

SCORE = (Path(__file__).parent / "fixtures" / "score" / "checkout.yaml").read_text()


async def test_users_cannot_start_the_builtin_deploy_workflow_or_escape_the_release_directory(platform, tmp_path):
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "sec-dev", identity_pb2.ROLE_DEVELOPER)
    target = tmp_path / "pwned"
    async with platform.http(developer) as http:
        response = await http.post("/api/v1/runs", json={
            "workflow": "deploy", "application": "x", "environment": str(target),
            "inputs": {"workload": "../../evil", "spec": {"containers": {"c": {"image": "nginx"}}}},
        })
        assert response.status_code == 403, response.text
        assert response.json()["reason"] == "BUILTIN_WORKFLOW"
        bad_name = await http.post("/api/v1/runs", json={
            "workflow": "onboard-team", "application": "../etc",
            "inputs": {"team": "t1", "owner": "t@example.com", "repository": str(tmp_path / "t.git")},
        })
        assert bad_name.status_code == 400, bad_name.text
        assert bad_name.json()["violations"][0]["field"] == "application"
    assert not target.exists()


async def test_request_ids_are_scoped_to_their_caller(platform, tmp_path):
    admin = await platform.login_admin()
    one = await platform.create_user(admin, "sec-one", identity_pb2.ROLE_DEVELOPER)
    two = await platform.create_user(admin, "sec-two", identity_pb2.ROLE_DEVELOPER)
    runs = []
    for token, repo in ((one, "one.git"), (two, "two.git")):
        async with platform.http(token) as http:
            response = await http.post("/api/v1/runs", json={
                "workflow": "onboard-team", "requestId": "ephemeral-teardown:someone-elses-run",
                "inputs": {"team": "t1", "owner": "t@example.com", "repository": str(tmp_path / repo)},
            })
            assert response.status_code == 200, response.text
            runs.append(response.json()["run"])
    assert runs[0]["name"] != runs[1]["name"]
    assert [r["creator"] for r in runs] == ["sec-one", "sec-two"]


async def test_audit_records_keep_long_texts_by_digest_and_mask_url_credentials(platform, tmp_path):
    admin = await platform.login_admin()
    secret_score = SCORE.replace("LOG_LEVEL: info", "LOG_LEVEL: info\n      API_TOKEN: literal-value-in-score")
    async with platform.http(admin) as http:
        deployed = await http.post("/api/v1/deployments", json={"scoreYaml": secret_score, "environment": "dev"})
        assert deployed.status_code == 200, deployed.text
        await http.post("/api/v1/goldenPaths/onboard-team:run", json={"params": {
            "team": "t2", "owner": "t@example.com", "repository": "https://user:hunter2@127.0.0.1:1/t.git"}})
        import asyncio

        deadline = asyncio.get_running_loop().time() + 30  # the relays ship in the background
        while True:
            records = (await http.get("/api/v1/audit/records", params={"pageSize": 200})).json().get("records", [])
            methods = {r["event"]["method"].rsplit("/", 1)[-1] for r in records}
            if {"CreateDeployment", "RunGoldenPath"} <= methods:
                break
            assert asyncio.get_running_loop().time() < deadline, f"audit records never arrived; got {methods}"
            await asyncio.sleep(0.1)
    text = str(records)
    assert "literal-value-in-score" not in text and "hunter2" not in text
    deployment = next(r for r in records if r["event"]["method"].endswith("CreateDeployment"))
    assert deployment["event"]["details"]["score_yaml"].startswith("sha256:")


def test_login_attempts_count_against_the_address_whatever_the_header():
    keys = {client_key(f"Basic {i}", "10.0.0.1", "/api/v1/auth:login") for i in range(5)}
    keys |= {client_key(f"Bearer {i}", "10.0.0.1", "/api/v1/auth:login") for i in range(5)}
    assert keys == {"ip:10.0.0.1"}
    assert client_key("Bearer abc", "10.0.0.1", "/api/v1/runs").startswith("auth:")
    assert client_key("Basic abc", "10.0.0.1", "/api/v1/runs") == "ip:10.0.0.1"


async def test_numbers_that_are_not_finite_are_refused_not_a_500(platform):
    admin = await platform.login_admin()
    async with platform.http(admin) as http:
        too_big = await http.post("/api/v1/runs", content=b'{"workflow": "onboard-team", "inputs": {"a": 1e400}}',
                                  headers={"content-type": "application/json"})
        assert too_big.status_code == 400 and too_big.json()["reason"] == "MALFORMED_JSON"
        infinite = SCORE + "    params:\n      size: .inf\n"
        response = await http.post("/api/v1/deployments", json={"scoreYaml": infinite, "environment": "dev"})
        assert response.status_code == 400, response.text
        assert "SCORE-1019" in response.json()["violations"][0]["description"]
