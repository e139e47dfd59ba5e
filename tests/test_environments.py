"""Environments with a type: CreateEnvironment / ListEnvironments, implicit development
environments, and the approval gate of a deployment to a production environment (the deploy
workflow's `approve` step; deciding it needs "runs.approve" and being one of its approvers).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import pytest

from innominatus.identity.v1 import identity_pb2
from tests.helpers.runs import TERMINAL, awaits_approval, deploy, get_run, start_deployment, steps_by_id, wait_for_run
from tests.helpers.opa import shipped_policy_granting

pytestmark = pytest.mark.postgres

HELLO = (Path(__file__).resolve().parent.parent / "deploy" / "examples" / "hello.yaml").read_text()


async def test_production_deployments_wait_for_a_platform_engineers_approval(platform):
    admin = await platform.login_admin()
    suffix = uuid.uuid4().hex[:6]
    developer = await platform.create_user(admin, f"dev{suffix}", identity_pb2.ROLE_DEVELOPER)
    engineer = await platform.create_user(admin, f"pe{suffix}", identity_pb2.ROLE_PLATFORM_ENGINEER)
    production = {"environment": {"name": "production", "type": "ENVIRONMENT_TYPE_PRODUCTION"}}

    async with platform.http(developer) as dev, platform.http(admin) as root, platform.http(engineer) as pe:
        # Deploying to an unknown environment named like production is refused.
        refused = await dev.post("/api/v1/deployments", json={"scoreYaml": HELLO, "environment": "production"})
        assert refused.status_code == 400, refused.text
        assert "create it first" in refused.text and "ENVIRONMENT_NOT_FOUND" in refused.text

        # Creating environments: admin and platform engineer, not developers (policy).
        denied = await dev.post("/api/v1/environments", json=production)
        assert denied.status_code == 403, denied.text
        assert "environments.create" in denied.text
        created = await root.post("/api/v1/environments", json=production)
        assert created.status_code == 200, created.text
        assert created.json()["environment"]["type"] == "ENVIRONMENT_TYPE_PRODUCTION"
        again = await root.post("/api/v1/environments", json=production)
        assert again.status_code == 409, again.text
        untyped = await pe.post("/api/v1/environments", json={"environment": {"name": "qa"}})
        assert untyped.status_code == 400, untyped.text

        # A developer's deploy to production waits at `approve`; nothing is committed yet.
        started = await start_deployment(dev, HELLO, "production")
        run_name = started["run"]["name"]
        deployment = started["deployment"]["name"]
        run = await wait_for_run(dev, run_name, awaits_approval("approve"), timeout=60, what="approve waiting")
        order = list(steps_by_id(run))
        assert order.index("approve") < order.index("render")
        assert steps_by_id(run)["render"]["state"] not in ("STEP_STATE_RUNNING", "STEP_STATE_SUCCEEDED")
        assert "gitopsCommit" not in (await dev.get(f"/api/v1/{deployment}")).json()["deployment"]

        # The developer may not approve (policy: runs.approve); a platform engineer does.
        gate = f"/api/v1/{run_name}/steps/approve:approve"
        no = await dev.post(gate, json={"reason": "me"})
        assert no.status_code == 403, no.text
        yes = await pe.post(gate, json={"reason": "release window"})
        assert yes.status_code == 200, yes.text
        run = await wait_for_run(dev, run_name, timeout=60, what="run ended")
        assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
        assert (await dev.get(f"/api/v1/{deployment}")).json()["deployment"]["gitopsCommit"]

        # A deploy to an unknown `dev` creates it as development and needs no approval.
        run = (await deploy(dev, HELLO, "dev", timeout=60))["run"]
        assert "approve" not in steps_by_id(run)

        listed = (await dev.get("/api/v1/environments")).json()["environments"]
        assert [(e["name"], e["type"]) for e in listed] == [
            ("dev", "ENVIRONMENT_TYPE_DEVELOPMENT"), ("production", "ENVIRONMENT_TYPE_PRODUCTION")]


# --------------------------------------------------------------------------- approvals per environment

PASSWORD = "correct-horse-battery"


def _violations(response) -> dict[str, str]:
    return {v["field"]: v["description"] for v in response.json().get("violations", [])}


async def _member(platform, admin_http, team: str, username: str) -> str:
    """Add ``username`` to ``team`` and log in again (a token carries the teams at login)."""
    added = await admin_http.post(f"/api/v1/teams/{team}:addMember", json={"user": f"users/{username}"})
    assert added.status_code == 200, added.text
    return await platform.login(username, PASSWORD)


async def _deploy(http, environment: str, **fields) -> tuple[str, str]:
    """Start a deployment of HELLO, not waiting for it; its run's and its deployment's names."""
    started = await start_deployment(http, HELLO, environment, **fields)
    return started["run"]["name"], started["deployment"]["name"]


async def _waiting(http, run_name: str) -> dict:
    run = await wait_for_run(http, run_name, awaits_approval("approve"), timeout=60, what="approve waiting")
    assert steps_by_id(run)["render"]["state"] not in ("STEP_STATE_RUNNING", "STEP_STATE_SUCCEEDED")
    return run


async def test_environment_approval_defaults_and_validation(platform):
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "devon", identity_pb2.ROLE_DEVELOPER)
    async with platform.http(admin) as root, platform.http(developer) as dev:
        # Defaults by type: production is gated by platform engineers and admins, the rest is not.
        prod = await root.post("/api/v1/environments",
                               json={"environment": {"name": "prod", "type": "ENVIRONMENT_TYPE_PRODUCTION"}})
        assert prod.status_code == 200, prod.text
        env = prod.json()["environment"]
        assert env["requiresApproval"] is True
        assert env["approvers"] == ["role:platform-engineer", "role:admin"]
        assert env["etag"]
        stage = await root.post("/api/v1/environments",
                                json={"environment": {"name": "qa", "type": "ENVIRONMENT_TYPE_STAGING"}})
        assert stage.status_code == 200, stage.text
        assert stage.json()["environment"]["requiresApproval"] is False
        assert stage.json()["environment"].get("approvers", []) == []

        # Approval required without approvers: refused, naming the field and the fix.
        empty = await root.post("/api/v1/environments", json={"environment": {
            "name": "uat", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True}})
        assert empty.status_code == 400, empty.text
        assert empty.json()["reason"] == "INVALID_APPROVERS"
        assert "name at least one approver" in _violations(empty)["environment.approvers"]

        # Malformed and unknown entries: one violation each, with what to write instead.
        bad = await root.post("/api/v1/environments", json={"environment": {
            "name": "uat", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True,
            "approvers": ["role:superuser", "platform-engineer", "group:payments", "user:Not A Name",
                          "boss:alice", "team:payments"]}})
        assert bad.status_code == 400, bad.text
        violations = _violations(bad)
        assert set(violations) == {f"environment.approvers[{i}]" for i in range(5)}, violations
        assert "unknown role 'superuser'" in violations["environment.approvers[0]"]
        assert "admin, platform-engineer, developer, viewer" in violations["environment.approvers[0]"]
        assert "write role:platform-engineer" in violations["environment.approvers[1]"]
        assert "write team:payments" in violations["environment.approvers[2]"]
        assert "is not a username" in violations["environment.approvers[3]"]
        assert "unknown kind 'boss'" in violations["environment.approvers[4]"]
        assert (await root.get("/api/v1/environments/uat")).status_code == 404  # nothing was created

        # A production environment may opt out explicitly: no gate for its deployments.
        open_prod = await root.post("/api/v1/environments", json={"environment": {
            "name": "sandbox-prod", "type": "ENVIRONMENT_TYPE_PRODUCTION", "requiresApproval": False}})
        assert open_prod.status_code == 200, open_prod.text
        run_name, _ = await _deploy(dev, "sandbox-prod")
        run = await wait_for_run(dev, run_name, timeout=60, what="ungated run ended")
        assert run["state"] == "RUN_STATE_SUCCEEDED" and "approve" not in steps_by_id(run)

        # Get: by resource name; an unknown one is NOT_FOUND; developers may read.
        got = await dev.get("/api/v1/environments/prod")
        assert got.status_code == 200 and got.json()["environment"] == env
        missing = await dev.get("/api/v1/environments/nowhere")
        assert missing.status_code == 404 and missing.json()["reason"] == "ENVIRONMENT_NOT_FOUND"


async def test_staging_gate_with_team_and_user_approvers_and_updates(platform):
    admin = await platform.login_admin()
    await platform.create_user(admin, "tess", identity_pb2.ROLE_DEVELOPER)  # on team payments
    dave = await platform.create_user(admin, "dave", identity_pb2.ROLE_DEVELOPER)
    engineer = await platform.create_user(admin, "pete", identity_pb2.ROLE_PLATFORM_ENGINEER)
    staging = {"name": "staging", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True,
               "approvers": ["team:payments", "user:dave"]}

    async with platform.http(admin) as root, platform.http(engineer) as pe:
        assert (await root.post("/api/v1/teams", json={"name": "teams/payments"})).status_code == 200
        tess = await _member(platform, root, "payments", "tess")
        created = await pe.post("/api/v1/environments", json={"environment": staging})
        assert created.status_code == 200, created.text
        assert created.json()["environment"]["approvers"] == ["team:payments", "user:dave"]

        async with platform.http(tess) as dev, platform.http(dave) as dv:
            # A deploy to staging now waits at the gate, with the environment's approvers.
            first_run, first_deployment = await _deploy(dev, "staging")
            run = await _waiting(dev, first_run)
            assert steps_by_id(run)["approve"]["approvers"] == ["team:payments", "user:dave"]
            gate = f"/api/v1/{first_run}/steps/approve:approve"

            # Listed approvers who are developers still need "runs.approve" from the policy,
            # which the shipped policy grants only to platform engineers and admins.
            for who in (dev, dv):
                denied = await who.post(gate, json={"reason": "mine"})
                assert denied.status_code == 403 and denied.json()["reason"] == "POLICY_DENIED", denied.text
                assert "runs.approve" in denied.text
            # Allowed by the policy but not listed: NOT_AN_APPROVER, naming the approvers.
            for who in (pe, root):
                outsider = await who.post(gate, json={"reason": "not mine"})
                assert outsider.status_code == 403, outsider.text
                assert outsider.json()["reason"] == "NOT_AN_APPROVER"
                assert "team:payments" in outsider.text and "user:dave" in outsider.text

            # Update: only platform engineers and admins; only approval settings; etag checked.
            etag = created.json()["environment"]["etag"]
            patch = "/api/v1/environments/staging"
            denied = await dev.patch(patch, params={"updateMask": "approvers"},
                                     json={"approvers": ["user:tess"]})
            assert denied.status_code == 403 and "environments.update" in denied.text
            no_mask = await pe.patch(patch, json={"approvers": ["role:platform-engineer"]})
            assert no_mask.status_code == 400 and "update_mask" in _violations(no_mask), no_mask.text
            fixed = await pe.patch(patch, params={"updateMask": "type"}, json={"type": "ENVIRONMENT_TYPE_PRODUCTION"})
            assert fixed.status_code == 400 and "cannot change" in fixed.text, fixed.text
            emptied = await pe.patch(patch, params={"updateMask": "approvers"}, json={"approvers": []})
            assert emptied.status_code == 400 and "name at least one approver" in emptied.text
            invalid = await pe.patch(patch, params={"updateMask": "approvers"}, json={"approvers": ["role:root"]})
            assert invalid.status_code == 400 and "environment.approvers[0]" in _violations(invalid)
            updated = await pe.patch(patch, params={"updateMask": "approvers"},
                                     json={"approvers": ["role:platform-engineer"], "etag": etag})
            assert updated.status_code == 200, updated.text
            env = updated.json()["environment"]
            assert env["approvers"] == ["role:platform-engineer"] and env["requiresApproval"] is True
            assert env["etag"] != etag and env["updateTime"]
            stale = await pe.patch(patch, params={"updateMask": "approvers"},
                                   json={"approvers": ["user:dave"], "etag": etag})
            assert stale.status_code == 409 and stale.json()["reason"] == "ETAG_MISMATCH", stale.text
            assert (await dev.get("/api/v1/environments/staging")).json()["environment"] == env

            # The waiting run keeps the gate it was started with ...
            run = await get_run(dev, first_run)
            assert steps_by_id(run)["approve"]["approvers"] == ["team:payments", "user:dave"]
            still = await pe.post(gate, json={"reason": "new rules?"})
            assert still.status_code == 403 and still.json()["reason"] == "NOT_AN_APPROVER", still.text
            # ... the next deployment gets the new one, which the platform engineer decides. (Of
            # another application: one of the same application in staging would wait for the
            # first run to end -- deploys of one application and environment run one at a time.)
            second_run, second_deployment = await _deploy(dev, "staging", application="hello-next")
            run = await _waiting(dev, second_run)
            assert steps_by_id(run)["approve"]["approvers"] == ["role:platform-engineer"]
            yes = await pe.post(f"/api/v1/{second_run}/steps/approve:approve", json={"reason": "ok"})
            assert yes.status_code == 200, yes.text
            run = await wait_for_run(dev, second_run, timeout=60, what="second run ended")
            assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
            assert (await dev.get(f"/api/v1/{second_deployment}")).json()["deployment"]["gitopsCommit"]
            assert (await get_run(dev, first_run))["state"] not in TERMINAL
            assert "gitopsCommit" not in (await dev.get(f"/api/v1/{first_deployment}")).json()["deployment"]

            # Switching approval off: the next deployment is not gated at all.
            off = await pe.patch(patch, params={"updateMask": "requiresApproval"}, json={"requiresApproval": False})
            assert off.status_code == 200 and off.json()["environment"]["requiresApproval"] is False, off.text
            third_run, _ = await _deploy(dev, "staging", application="hello-next")
            run = await wait_for_run(dev, third_run, timeout=60, what="third run ended")
            assert run["state"] == "RUN_STATE_SUCCEEDED" and "approve" not in steps_by_id(run)


async def test_listed_developers_approve_when_the_policy_grants_runs_approve(tmp_path):
    from tests.helpers.mesh import running_platform

    policies = shipped_policy_granting(tmp_path / "policies", "developer", "runs.approve")
    async with running_platform(tmp_path / "data", policy_dir=policies) as platform:
        admin = await platform.login_admin()
        await platform.create_user(admin, "tess", identity_pb2.ROLE_DEVELOPER)
        dave = await platform.create_user(admin, "dave", identity_pb2.ROLE_DEVELOPER)
        olga = await platform.create_user(admin, "olga", identity_pb2.ROLE_DEVELOPER)  # not listed
        async with platform.http(admin) as root:
            assert (await root.post("/api/v1/teams", json={"name": "teams/payments"})).status_code == 200
            tess = await _member(platform, root, "payments", "tess")
            for name, kind, approvers in (("staging", "ENVIRONMENT_TYPE_STAGING", ["team:payments", "user:dave"]),
                                          ("production", "ENVIRONMENT_TYPE_PRODUCTION", [])):
                body = {"name": name, "type": kind, "requiresApproval": True, "approvers": approvers}
                assert (await root.post("/api/v1/environments", json={"environment": body})).status_code == 200

            async with platform.http(tess) as dev, platform.http(dave) as dv, platform.http(olga) as ol:
                # A team member and a named user each decide their own deployment's gate.
                for approver, who in ((dev, "tess"), (dv, "dave")):
                    run_name, _ = await _deploy(ol, "staging")
                    await _waiting(ol, run_name)
                    gate = f"/api/v1/{run_name}/steps/approve:approve"
                    # olga passes the policy now but is not listed.
                    outsider = await ol.post(gate, json={"reason": "me"})
                    assert outsider.status_code == 403 and outsider.json()["reason"] == "NOT_AN_APPROVER"
                    yes = await approver.post(gate, json={"reason": f"{who} approves"})
                    assert yes.status_code == 200, yes.text
                    run = await wait_for_run(ol, run_name, timeout=60, what="approved run ended")
                    assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)

                # Granting developers runs.approve does not open production's default gate.
                run_name, _ = await _deploy(dev, "production")
                await _waiting(dev, run_name)
                own = await dev.post(f"/api/v1/{run_name}/steps/approve:approve", json={"reason": "me"})
                assert own.status_code == 403 and own.json()["reason"] == "NOT_AN_APPROVER", own.text
                assert "role:platform-engineer" in own.text


# --------------------------------------------------------------------------- the gate the deploy workflow builds


def _gate(inputs: dict):
    from innominatus.engine.workflows import deploy_workflow

    steps = {s.id: s for s in deploy_workflow(inputs).steps}
    return steps.get("approve"), steps


def test_deploy_workflow_builds_the_gate_from_the_environments_settings():
    base = {"application": "web", "environment": "staging", "requested_by": "tess", "environment_type": "staging",
            "claims": [{"ref": "db", "resource": "resources/r1"}]}
    gate, steps = _gate({**base, "approval": {"required": True, "approvers": ["team:payments", "user:dave"]}})
    assert gate.approval["approvers"] == ["team:payments", "user:dave"]
    assert gate.approval["message"] == "Deploy application web to staging environment staging, requested by tess?"
    assert steps["provision-db"].depends_on == ("approve",)

    gate, steps = _gate({**base, "approval": {"required": False, "approvers": ["user:dave"]}})
    assert gate is None and steps["provision-db"].depends_on == ("validate",)
    # A production environment that opted out is not gated either: the settings decide.
    gate, _ = _gate({**base, "environment_type": "production", "approval": {"required": False, "approvers": []}})
    assert gate is None
    # Required without approvers never reaches here from specs; if it did, the old default
    # applies rather than a gate anyone with runs.approve could decide.
    gate, _ = _gate({**base, "approval": {"required": True, "approvers": []}})
    assert gate.approval["approvers"] == ["platform-engineer", "admin"]


def test_runs_started_before_environments_had_settings_keep_todays_gate():
    # Inputs as the specs service wrote them before this change: no `approval`.
    old = {"application": "web", "environment": "production", "requested_by": "tess",
           "environment_type": "production", "claims": []}
    gate, _ = _gate(old)
    assert gate.approval["approvers"] == ["platform-engineer", "admin"]
    assert gate.approval["message"] == "Deploy application web to production environment production, requested by tess?"
    assert _gate({**old, "environment_type": "staging"})[0] is None
    assert _gate({})[0] is None


def test_check_approval_normalises_and_reports_every_problem():
    from innominatus.kit.errors import InvalidArgument
    from innominatus.specs.environments import KNOWN_ROLES, check_approval

    assert KNOWN_ROLES == ("admin", "platform-engineer", "developer", "viewer")
    ok = check_approval(True, [" role:admin", "user:dave", "role:admin", "team:payments"])
    assert ok.approvers == ("role:admin", "user:dave", "team:payments")
    assert check_approval(False, []).approvers == ()
    with pytest.raises(InvalidArgument) as caught:
        check_approval(True, ["", "user:", "team:-x", "role:"], field="environment.approvers")
    fields = [v.field for v in caught.value.violations]
    assert fields == [f"environment.approvers[{i}]" for i in range(4)]
    assert caught.value.reason == "INVALID_APPROVERS"
    assert caught.value.message.startswith("environment.approvers[0]: ") and "(and 3 more)" in caught.value.message
    with pytest.raises(InvalidArgument) as caught:
        check_approval(True, [f"user:u{i:02d}" for i in range(51)])
    assert "at most 50 approvers" in caught.value.violations[-1].description


# --------------------------------------------------------------------------- the migration


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_migration_keeps_todays_gate_for_existing_environments(backend, tmp_path):
    import sqlalchemy as sa

    from innominatus.kit import migrate
    from tests.helpers.database import drop_database, fresh_database

    url = fresh_database("envmig") if backend == "postgresql" else f"sqlite:///{tmp_path / 'specs.db'}"
    table = "specs.environments" if backend == "postgresql" else "environments"
    try:
        migrate.upgrade("specs", url, "c5d82f1a6e39")
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO {table} (name, type) VALUES "
                                     "('production', 'production'), ('qa', 'staging'), ('dev', 'development')"))
            # The revision itself, not head: later migrations may follow it.
            migrate.upgrade("specs", url, "d9e4a7c2b1f0")
            with engine.begin() as conn:
                rows = conn.execute(sa.text(f"SELECT name, requires_approval, approvers FROM {table} ORDER BY name"))
                got = {r.name: (bool(r.requires_approval),
                                json.loads(r.approvers) if isinstance(r.approvers, str) else r.approvers)
                       for r in rows}
        finally:
            engine.dispose()
        assert got == {"dev": (False, []), "production": (True, ["role:platform-engineer", "role:admin"]),
                       "qa": (False, [])}
    finally:
        if backend == "postgresql":
            drop_database(url)


# --------------------------------------------------------------------------- the CLI


async def _cli(platform, token: str, *args: str, config_dir: Path) -> tuple[int, str, str]:
    """Run `innominatus ARGS` in a subprocess against the running gateway (the platform keeps
    serving on this event loop while it runs)."""
    import os
    import sys

    env = {**os.environ, "INNOMINATUS_SERVER": platform.gateway, "INNOMINATUS_TOKEN": token,
           "INNOMINATUS_CONFIG_DIR": str(config_dir)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "innominatus.cli.main", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, out.decode(), err.decode()


async def test_envs_cli(platform, tmp_path):
    from ruamel.yaml import YAML

    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "devon", identity_pb2.ROLE_DEVELOPER)

    async def cli(token, *args):
        return await _cli(platform, token, *args, config_dir=tmp_path / "config")

    # create: defaults by type, -o json
    code, out, err = await cli(admin, "envs", "create", "production", "--type", "production", "-o", "json")
    assert code == 0, err
    created = json.loads(out)["environment"]
    assert created["requiresApproval"] is True and created["approvers"] == ["role:platform-engineer", "role:admin"]
    # create: staging opting in with a team and a user (both must exist)
    code, _, err = await cli(admin, "teams", "create", "payments")
    assert code == 0, err
    code, out, err = await cli(admin, "envs", "create", "staging", "--type", "staging", "--require-approval",
                               "--approver", "team:payments", "--approver", "user:devn")
    assert code == 1 and "environment.approvers[1]" in err and "no user 'devn'; did you mean 'devon'?" in err, err
    code, out, err = await cli(admin, "envs", "create", "staging", "--type", "staging", "--require-approval",
                               "--approver", "team:payments", "--approver", "user:devon")
    assert code == 0, err
    assert re.search(r"^Requires approval:\s+yes$", out, re.M) and re.search(r"^Type:\s+staging$", out, re.M), out
    assert "team:payments" in out and "user:devon" in out
    # invalid approvers: the request is rejected (exit 1) and each field violation is printed
    code, out, err = await cli(admin, "envs", "create", "uat", "--type", "staging", "--require-approval",
                               "--approver", "role:root", "--approver", "alice")
    assert code == 1, (out, err)
    assert "environment.approvers[0]" in err and "unknown role 'root'" in err
    assert "environment.approvers[1]" in err and "user:alice" in err
    # unknown type: usage error before anything is sent
    code, _, err = await cli(admin, "envs", "create", "uat", "--type", "prod-ish")
    assert code == 2 and "unknown environment type" in err
    # developers may not create or update (exit 4), may list and get
    code, _, err = await cli(developer, "envs", "create", "mine", "--type", "development")
    assert code == 4 and "environments.create" in err
    code, _, err = await cli(developer, "envs", "update", "staging", "--approver", "user:devon")
    assert code == 4 and "environments.update" in err

    # list: table and yaml
    code, out, err = await cli(developer, "envs", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "TYPE", "APPROVAL", "APPROVERS"]
    assert lines[1].split()[:4] == ["production", "production", "required", "role:platform-engineer,role:admin"]
    assert lines[2].split()[:4] == ["staging", "staging", "required", "team:payments,user:devon"]
    code, out, err = await cli(developer, "envs", "list", "-o", "yaml")
    assert code == 0, err
    listed = YAML(typ="safe").load(out)["environments"]
    assert [(e["name"], e["type"]) for e in listed] == [("production", "ENVIRONMENT_TYPE_PRODUCTION"),
                                                      ("staging", "ENVIRONMENT_TYPE_STAGING")]
    # get: by name or resource name; unknown is exit 5
    code, out, err = await cli(developer, "envs", "get", "environments/staging", "-o", "json")
    assert code == 0, err
    staging = json.loads(out)["environment"]
    assert staging["approvers"] == ["team:payments", "user:devon"]
    code, _, err = await cli(developer, "envs", "get", "nowhere")
    assert code == 5 and "ENVIRONMENT_NOT_FOUND" in err

    # update: replace the approvers (with the etag), then a stale etag is refused (exit 1)
    code, out, err = await cli(admin, "envs", "update", "staging", "--approver", "role:platform-engineer",
                               "--etag", staging["etag"], "-o", "json")
    assert code == 0, err
    updated = json.loads(out)["environment"]
    assert updated["approvers"] == ["role:platform-engineer"] and updated["requiresApproval"] is True
    code, _, err = await cli(admin, "envs", "update", "staging", "--approver", "user:devon", "--etag", staging["etag"])
    assert code == 1 and "ETAG_MISMATCH" in err
    # nothing to change / contradictory flags: usage errors
    code, _, err = await cli(admin, "envs", "update", "staging")
    assert code == 2 and "nothing to change" in err
    code, _, err = await cli(admin, "envs", "update", "staging", "--clear-approvers", "--approver", "user:devon")
    assert code == 2
    # clearing approvers while approval is required is refused; together with turning it off it works
    code, _, err = await cli(admin, "envs", "update", "staging", "--clear-approvers")
    assert code == 1 and "name at least one approver" in err
    code, out, err = await cli(admin, "envs", "update", "staging", "--clear-approvers", "--no-require-approval",
                               "-o", "json")
    assert code == 0, err
    cleared = json.loads(out)["environment"]
    assert cleared["requiresApproval"] is False and cleared.get("approvers", []) == []


async def test_whoever_deploys_to_production_cannot_approve_it(platform):
    """Four eyes: a platform engineer's own production deployment waits for someone else; the
    deployer may still reject it."""
    admin = await platform.login_admin()
    suffix = uuid.uuid4().hex[:6]
    engineer = await platform.create_user(admin, f"pe{suffix}", identity_pb2.ROLE_PLATFORM_ENGINEER)
    env = f"prod{suffix}"
    async with platform.http(admin) as root, platform.http(engineer) as pe:
        created = await root.post("/api/v1/environments",
                                  json={"environment": {"name": env, "type": "ENVIRONMENT_TYPE_PRODUCTION"}})
        assert created.status_code == 200, created.text

        async def waiting_run() -> str:
            name, _ = await _deploy(pe, env)
            await wait_for_run(pe, name, awaits_approval("approve"), timeout=60, what="approve waiting")
            return name

        first = await waiting_run()
        own = await pe.post(f"/api/v1/{first}/steps/approve:approve", json={"reason": "trust me"})
        assert own.status_code == 403, own.text
        assert "SELF_APPROVAL" in own.text and "four eyes" in own.text
        assert steps_by_id(await get_run(pe, first))["approve"]["state"] == "STEP_STATE_WAITING_APPROVAL"
        other = await root.post(f"/api/v1/{first}/steps/approve:approve", json={"reason": "reviewed"})
        assert other.status_code == 200, other.text
        run = await wait_for_run(pe, first, timeout=60, what="run ended")
        assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)

        second = await waiting_run()
        withdrawn = await pe.post(f"/api/v1/{second}/steps/approve:reject", json={"reason": "wrong build"})
        assert withdrawn.status_code == 200, withdrawn.text
        run = await wait_for_run(pe, second, timeout=60, what="run ended")
        assert run["state"] == "RUN_STATE_FAILED"


async def test_environment_approvers_must_name_existing_users_and_teams(platform):
    """A user: or team: approver nobody has would make a gate nobody can decide: specs asks
    identity at create and update, and names every unknown entry (with a likely meant one)."""
    admin = await platform.login_admin()
    await platform.create_user(admin, "alice", identity_pb2.ROLE_DEVELOPER)
    engineer = await platform.create_user(admin, "pete", identity_pb2.ROLE_PLATFORM_ENGINEER)
    async with platform.http(admin) as root, platform.http(engineer) as pe:
        assert (await root.post("/api/v1/teams", json={"name": "teams/payments"})).status_code == 200
        body = {"name": "uat", "type": "ENVIRONMENT_TYPE_STAGING", "requiresApproval": True,
                "approvers": ["user:alise", "team:paymnets", "role:admin", "user:alice", "team:payments",
                              "user:nobody-here", "team:zz-top"]}
        refused = await pe.post("/api/v1/environments", json={"environment": body})
        assert refused.status_code == 400, refused.text
        assert refused.json()["reason"] == "INVALID_APPROVERS"
        assert _violations(refused) == {
            "environment.approvers[0]": "no user 'alise'; did you mean 'alice'?",
            "environment.approvers[1]": "no team 'paymnets'; did you mean 'payments'?",
            "environment.approvers[5]": "no user 'nobody-here' (innominatus users list shows the users)",
            "environment.approvers[6]": "no team 'zz-top' (innominatus teams list shows the teams)",
        }
        assert refused.json()["detail"].startswith("environment.approvers[0]: no user 'alise'")
        assert (await pe.get("/api/v1/environments/uat")).status_code == 404  # nothing was created

        body["approvers"] = ["role:admin", "user:alice", "team:payments"]
        created = await pe.post("/api/v1/environments", json={"environment": body})
        assert created.status_code == 200, created.text
        env = created.json()["environment"]
        assert env["approvers"] == ["role:admin", "user:alice", "team:payments"]

        # Update: the same check; a refused update changes nothing.
        patch = "/api/v1/environments/uat"
        typo = await pe.patch(patch, params={"updateMask": "approvers"},
                              json={"approvers": ["user:alice", "team:paymnets"], "etag": env["etag"]})
        assert typo.status_code == 400 and typo.json()["reason"] == "INVALID_APPROVERS", typo.text
        assert _violations(typo) == {"environment.approvers[1]": "no team 'paymnets'; did you mean 'payments'?"}
        assert (await pe.get(patch)).json()["environment"] == env
        updated = await pe.patch(patch, params={"updateMask": "approvers"},
                                 json={"approvers": ["team:payments"], "etag": env["etag"]})
        assert updated.status_code == 200, updated.text
        assert updated.json()["environment"]["approvers"] == ["team:payments"]
