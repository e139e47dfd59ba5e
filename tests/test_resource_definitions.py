"""Resource definitions: matching, tie detection, validation, the template and command
provisioners, params schemas, and the ResourceDefinitionService RPCs through the platform."""

from __future__ import annotations

import sys
import textwrap

import grpc
import pytest

from innominatus.kit.errors import FailedPrecondition, InvalidArgument, decode_rpc_error
from innominatus.resources.definitions import (
    NoDefinition,
    ResourceDefinition,
    builtin_definitions,
    check_no_ties,
    match,
    validate_definition,
    with_builtins,
)
from innominatus.resources.drivers.base import ProvisionContext, ProvisionError
from innominatus.resources.provisioners import run_deprovisioner, run_provisioner, template_problem


def definition(name, type_="postgres", *, class_="", id="", criteria=None, provisioner=None, **kw) -> ResourceDefinition:
    return ResourceDefinition(
        name=name, type=type_, class_=class_, id=id, criteria=criteria or {},
        provisioner=provisioner or {"kind": "driver", "driver": "dns", "config": {}}, **kw,
    )


CLAIM = dict(type="postgres", class_="", id="", env_type="production", environment="prod", application="checkout",
             team="payments")

# ---------------------------------------------------------------------------------------------
# Matching


@pytest.mark.parametrize(
    "defs, claim, winner",
    [
        # environment-specific beats generic
        ([definition("generic"), definition("prod", criteria={"environment": "prod"})], {}, "prod"),
        # a definition for another environment does not match
        ([definition("generic"), definition("dev", criteria={"environment": "dev"})], {}, "generic"),
        # application beats env type
        ([definition("by-envtype", criteria={"env_type": "production"}),
          definition("by-app", criteria={"application": "checkout"})], {}, "by-app"),
        # environment beats application, team beats env type
        ([definition("by-app", criteria={"application": "checkout"}),
          definition("by-env", criteria={"environment": "prod"})], {}, "by-env"),
        ([definition("by-envtype", criteria={"env_type": "production"}),
          definition("by-team", criteria={"team": "payments"})], {}, "by-team"),
        # two criteria beat the weaker one alone
        ([definition("app", criteria={"application": "checkout"}),
          definition("app-envtype", criteria={"application": "checkout", "env_type": "production"})], {}, "app-envtype"),
        # class specificity: a claim of class "large" takes the class definition over env ones
        ([definition("prod", criteria={"environment": "prod"}), definition("large", class_="large")],
         {"class_": "large"}, "large"),
        # ...and a claim without class is class "default": the "large" one does not match
        ([definition("prod", criteria={"environment": "prod"}), definition("large", class_="large")], {}, "prod"),
        ([definition("generic"), definition("default-class", class_="default")], {}, "default-class"),
        # id specificity beats everything else
        ([definition("large", class_="large", criteria={"environment": "prod"}), definition("shared", id="main-db")],
         {"class_": "large", "id": "main-db"}, "shared"),
    ],
)
def test_most_specific_definition_wins(defs, claim, winner):
    assert match(defs, **{**CLAIM, **claim}).name == winner


def test_no_match_names_known_types_and_suggests():
    defs = with_builtins([])
    with pytest.raises(NoDefinition) as caught:
        match(defs, **{**CLAIM, "type": "postgress"})
    err = caught.value
    assert isinstance(err, FailedPrecondition) and err.reason == "NO_RESOURCE_DEFINITION"
    assert "did you mean 'postgres'?" in err.message
    assert "known types: dns, environment, postgres, redis, route, service-port, volume" in err.message

    only_dev = [definition("pg-dev", criteria={"environment": "dev"})]
    with pytest.raises(NoDefinition) as caught:
        match(only_dev, **CLAIM)
    assert "pg-dev needs environment 'dev'" in caught.value.message
    assert "environment 'prod'" in caught.value.message


def test_ties_are_refused_naming_both():
    existing = [definition("pg-prod", criteria={"environment": "prod"}), definition("pg-any")]
    with pytest.raises(InvalidArgument) as caught:
        check_no_ties(existing, definition("pg-prod-2", criteria={"environment": "prod"}))
    assert caught.value.reason == "AMBIGUOUS_DEFINITION"
    assert "'pg-prod-2'" in caught.value.message and "'pg-prod'" in caught.value.message
    # not a tie: different class, more criteria, another type, or the same definition updated
    check_no_ties(existing, definition("pg-prod-large", class_="large", criteria={"environment": "prod"}))
    check_no_ties(existing, definition("pg-prod-app", criteria={"environment": "prod", "application": "checkout"}))
    check_no_ties(existing, definition("redis-prod", "redis", criteria={"environment": "prod"}))
    check_no_ties(existing, definition("pg-prod", criteria={"environment": "prod"}))


def test_validation_names_every_problem():
    bad = definition(
        "Bad Name", "", criteria={"region": "eu", "environment": 3},
        provisioner={"kind": "driver", "driver": "postgress", "extra": 1},
        params_schema={"type": "nonsense"}, outputs=["a", "a"], secret_outputs=["a"],
    )
    with pytest.raises(InvalidArgument) as caught:
        validate_definition(bad)
    fields = {v.field for v in caught.value.violations}
    assert {"name", "type", "criteria.region", "criteria.environment", "provisioner.driver", "provisioner.extra",
            "params_schema", "outputs", "secret_outputs"} <= fields, fields
    assert "did you mean 'postgres'?" in caught.value.message
    with pytest.raises(InvalidArgument) as caught:
        validate_definition(definition("t", provisioner={"kind": "template", "template": "a: {{ x \n"}))
    assert "line" in caught.value.message
    with pytest.raises(InvalidArgument):
        validate_definition(definition("c", provisioner={"kind": "command", "command": "echo hi"}))
    for d in builtin_definitions():
        validate_definition(d)


# ---------------------------------------------------------------------------------------------
# Provisioners


def ctx(**kw) -> ProvisionContext:
    base = dict(resource_id="checkout-prod-db", type="postgres", class_="default", application="checkout",
                environment="prod", params={})
    return ProvisionContext(**{**base, **kw})


TEMPLATE = textwrap.dedent("""\
    outputs:
      host: {{ resource_id | dns_label }}.db.internal
      port: {{ params.port | default(5432) }}
      app: {{ application }}
    secrets:
      password: {{ config.password }}
    state:
      made_for: {{ type }}/{{ class }}
""")


async def test_template_provisioner_renders_outputs_secrets_state():
    d = definition("tpl", provisioner={"kind": "template", "template": TEMPLATE, "config": {"password": "s3cr3t-pw"}},
                   outputs=["host", "port"], secret_outputs=["password"],
                   params_schema={"type": "object", "properties": {"port": {"type": "integer"}}})
    result = await run_provisioner(d, ctx(params={"port": 6543}))
    assert result.outputs == {"host": "checkout-prod-db.db.internal", "port": 6543, "app": "checkout"}
    assert result.secret_outputs == {"password": "s3cr3t-pw"}
    assert result.state == {"made_for": "postgres/default"}
    await run_deprovisioner(d, ctx(), result.state)  # templates create nothing: a no-op


@pytest.mark.parametrize(
    "template, expected",
    [
        ("outputs: {x: \"{{ ''.__class__.__mro__ }}\"}", "unsafe"),
        ("outputs: {x: \"{{ params.__class__ }}\"}", "unsafe"),
        ("outputs: {x: \"{{ config.__init__.__globals__ }}\"}", "unsafe"),
        ("outputs: {x: \"{{ cycler.__init__ }}\"}", ""),
        ("outputs:\n  x: {{ params.update({'a': 1}) }}", "unsafe"),
        ("outputs:\n  x: {{ missing }}\n", "line 2"),
        ("outputs:\n  x: 1\n  y: {{ 1 // 0 }}\n", "line 3: ZeroDivisionError"),
        ("- a\n- b\n", "must be a mapping"),
        ("outputs: [1]\n", "outputs must be a mapping"),
        ("outputs: {a: &x [1]}\nstate: {b: *x}\n", "aliases"),
        ("bogus: 1\n", "unknown keys bogus"),
    ],
)
async def test_template_sandbox_and_errors(template, expected):
    d = definition("tpl", provisioner={"kind": "template", "template": template})
    with pytest.raises(ProvisionError) as caught:
        await run_provisioner(d, ctx())
    assert caught.value.retryable is False
    assert expected in caught.value.message, caught.value.message


def test_template_syntax_errors_name_the_line():
    assert template_problem("a: 1\nb: {% if %}\n").startswith("line 2:")
    assert template_problem("a: {{ 1 }}") is None


SCRIPT = textwrap.dedent("""\
    import json, sys, time
    request = json.load(sys.stdin)
    mode = request["params"].get("mode", "ok")
    if mode == "fail":
        print("could not create it; token=" + request["config"]["api_token"], file=sys.stderr)
        sys.exit(3)
    if mode == "retry":
        sys.exit(75)
    if mode == "sleep":
        time.sleep(30)
    if mode == "garbage":
        print("this is not json")
        sys.exit(0)
    if mode == "partial":
        print(json.dumps({"outputs": {"host": "h"}}))
        sys.exit(0)
    if request["action"] == "deprovision":
        open(request["config"]["marker"], "w").write(json.dumps(request["state"]))
        sys.exit(0)
    print(json.dumps({
        "outputs": {"host": request["resource"]["id"] + ".example", "port": 5432},
        "secrets": {"password": "pw-" + request["resource"]["application"]},
        "state": {"action": request["action"], "env_seen": sorted(k for k in __import__("os").environ if k.startswith("INNOMINATUS_"))},
    }))
""")


@pytest.fixture
def command_definition(tmp_path):
    script = tmp_path / "provisioner.py"
    script.write_text(SCRIPT)

    def make(timeout: int = 0) -> ResourceDefinition:
        return definition(
            "cmd",
            provisioner={"kind": "command", "command": [sys.executable, str(script)], "timeout_seconds": timeout,
                         "config": {"api_token": "tok-very-secret", "marker": str(tmp_path / "deprovisioned.json")}},
            outputs=["host", "port"], secret_outputs=["password"],
            params_schema={"type": "object", "properties": {"mode": {"enum": ["ok", "fail", "retry", "sleep",
                                                                                "garbage", "partial"]}}},
        )

    return make


async def test_command_provisioner_success_and_deprovision(command_definition, tmp_path, monkeypatch):
    monkeypatch.setenv("INNOMINATUS_SECRET_THING", "x")
    d = command_definition()
    result = await run_provisioner(d, ctx())
    assert result.outputs == {"host": "checkout-prod-db.example", "port": 5432}
    assert result.secret_outputs == {"password": "pw-checkout"}
    assert result.state == {"action": "provision", "env_seen": []}  # the platform's settings are not passed on
    await run_deprovisioner(d, ctx(), {"db": "x"})
    assert (tmp_path / "deprovisioned.json").read_text() == '{"db": "x"}'


@pytest.mark.parametrize(
    "mode, retryable, expected",
    [
        ("fail", False, "exit code 3"),
        ("retry", True, "exit code 75"),
        ("garbage", False, "did not print valid JSON"),
        ("partial", False, "did not provide outputs port and secret outputs password"),
    ],
)
async def test_command_provisioner_failures(command_definition, mode, retryable, expected):
    with pytest.raises(ProvisionError) as caught:
        await run_provisioner(command_definition(), ctx(params={"mode": mode}))
    assert caught.value.retryable is retryable
    assert expected in caught.value.message, caught.value.message
    if mode == "fail":
        assert "could not create it" in caught.value.message
        assert "tok-very-secret" not in caught.value.message and "[redacted]" in caught.value.message


async def test_command_provisioner_timeout_is_retryable(command_definition):
    with pytest.raises(ProvisionError) as caught:
        await run_provisioner(command_definition(timeout=1), ctx(params={"mode": "sleep"}))
    assert caught.value.retryable is True and "did not finish within 1s" in caught.value.message


async def test_command_that_does_not_exist():
    d = definition("nope", provisioner={"kind": "command", "command": ["/nonexistent/provisioner"]})
    with pytest.raises(ProvisionError) as caught:
        await run_provisioner(d, ctx())
    assert caught.value.reason == "DRIVER_MISCONFIGURED"


async def test_params_schema_lists_every_problem():
    d = definition("dns", "dns", params_schema={
        "type": "object",
        "properties": {"size": {"type": "integer", "minimum": 1}, "tier": {"enum": ["small", "large"]}},
        "required": ["size", "name"],
        "additionalProperties": False,
    })
    with pytest.raises(InvalidArgument) as caught:
        await run_provisioner(d, ctx(type="dns", params={"size": 0, "tier": "huge", "colour": "blue"}))
    fields = {v.field for v in caught.value.violations}
    assert {"params.size", "params.tier", "params.name", "params"} <= fields, fields
    assert caught.value.reason == "INVALID_RESOURCE_PARAMS"


async def test_driver_kind_and_builtin_defaults(monkeypatch):
    monkeypatch.setenv("INNOMINATUS_POSTGRES_ADMIN_URL", "postgresql://admin@db.internal/postgres")
    defs = with_builtins([definition("dns-prod", "dns", criteria={"environment": "prod"},
                                     provisioner={"kind": "driver", "driver": "dns", "config": {"base_domain": "prod.example"}},
                                     outputs=["host"])])
    assert {d.type for d in defs} == {"postgres", "redis", "dns", "route", "volume", "service-port", "environment"}
    assert match(defs, **CLAIM).provisioner["config"] == {"admin_url": "postgresql://admin@db.internal/postgres"}
    # a stored definition of a type replaces the built-in default of that type
    assert not any(d.builtin and d.type == "dns" for d in defs)
    chosen = match(defs, **{**CLAIM, "type": "dns"})
    result = await run_provisioner(chosen, ctx(type="dns", resource_id="web"))
    assert result.outputs["host"] == "checkout-prod-web.prod.example"
    route = match(defs, **{**CLAIM, "type": "route"})
    with pytest.raises(InvalidArgument) as caught:
        await run_provisioner(route, ctx(type="route", params={"path": "/"}))
    assert {"params.host", "params.port"} <= {v.field for v in caught.value.violations}


# ---------------------------------------------------------------------------------------------
# RPCs through the platform


def _wired() -> bool:
    from innominatus.resources.service import definition as resources_definition

    names = {d.full_name for d in resources_definition().descriptors}
    return "innominatus.resources.v1.ResourceDefinitionService" in names


# Checked at collection, before the platform fixture starts anything.
requires_wiring = pytest.mark.skipif(
    not _wired(),
    reason="ResourceDefinitionService is not wired into innominatus.resources.service.definition() yet "
    "(register_definitions / definitions_descriptor)",
)


async def _stub(platform):
    from innominatus.resources.v1 import definitions_pb2_grpc

    channel = platform.channel("resources")
    return channel, definitions_pb2_grpc.ResourceDefinitionServiceStub(channel)


def _auth(token):
    return [("authorization", f"Bearer {token}")]


@pytest.mark.postgres
@requires_wiring
async def test_definition_rpcs(platform):
    from innominatus.identity.v1 import identity_pb2
    from innominatus.resources.v1 import definitions_pb2 as pb

    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "defs-dev", identity_pb2.ROLE_DEVELOPER)
    channel, stub = await _stub(platform)
    try:
        body = pb.ResourceDefinition(
            name="pg-prod", type="postgres", criteria=pb.MatchingCriteria(environment="prod"),
            provisioner=pb.Provisioner(kind="driver", driver="postgres"),
            outputs=["host"], secret_outputs=["password"],
        )
        body.provisioner.config.update({"admin_url": "postgresql://admin@db/postgres", "port": 5432})
        body.params_schema.update({"type": "object"})

        with pytest.raises(grpc.RpcError) as caught:
            await stub.CreateResourceDefinition(pb.CreateResourceDefinitionRequest(resource_definition=body),
                                                metadata=_auth(developer))
        denied = decode_rpc_error(caught.value)
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED and denied.reason == "POLICY_DENIED"
        assert 'does not grant "resourcedefinitions.write"' in denied.message

        created = (await stub.CreateResourceDefinition(pb.CreateResourceDefinitionRequest(resource_definition=body),
                                                       metadata=_auth(admin))).resource_definition
        assert created.name == "resourceDefinitions/pg-prod" and created.version == 1 and created.etag == 'W/"1"'
        assert created.provisioner.config["port"] == 5432

        tie = pb.ResourceDefinition()
        tie.CopyFrom(body)
        tie.name = "pg-prod-again"
        with pytest.raises(grpc.RpcError) as caught:
            await stub.CreateResourceDefinition(pb.CreateResourceDefinitionRequest(resource_definition=tie),
                                                metadata=_auth(admin))
        assert decode_rpc_error(caught.value).reason == "AMBIGUOUS_DEFINITION"

        update = pb.ResourceDefinition()
        update.CopyFrom(created)
        update.description = "production databases"
        updated = (await stub.UpdateResourceDefinition(pb.UpdateResourceDefinitionRequest(resource_definition=update),
                                                       metadata=_auth(admin))).resource_definition
        assert updated.version == 2 and updated.description == "production databases"
        with pytest.raises(grpc.RpcError) as caught:  # the old etag is stale now
            await stub.UpdateResourceDefinition(pb.UpdateResourceDefinitionRequest(resource_definition=update),
                                                metadata=_auth(admin))
        assert caught.value.code() == grpc.StatusCode.ABORTED
        assert decode_rpc_error(caught.value).reason == "ETAG_MISMATCH"

        got = await stub.GetResourceDefinition(pb.GetResourceDefinitionRequest(name="resourceDefinitions/pg-prod"),
                                               metadata=_auth(developer))
        assert got.resource_definition.version == 2 and list(got.versions) == [2, 1]
        first = await stub.GetResourceDefinition(pb.GetResourceDefinitionRequest(name="pg-prod", version=1),
                                                 metadata=_auth(developer))
        assert first.resource_definition.description == ""

        listed = await stub.ListResourceDefinitions(pb.ListResourceDefinitionsRequest(type="postgres"),
                                                    metadata=_auth(developer))
        assert [d.name for d in listed.resource_definitions] == ["resourceDefinitions/pg-prod"]
        everything = await stub.ListResourceDefinitions(pb.ListResourceDefinitionsRequest(page_size=3),
                                                        metadata=_auth(developer))
        assert len(everything.resource_definitions) == 3 and everything.next_page_token
        assert any(d.builtin for d in everything.resource_definitions)

        provisioners = await stub.ListProvisioners(pb.ListProvisionersRequest(), metadata=_auth(developer))
        assert {"postgres", "redis", "dns"} <= {d.name for d in provisioners.drivers}
        assert [k.kind for k in provisioners.kinds] == ["driver", "template", "command"]

        with pytest.raises(grpc.RpcError) as caught:
            await stub.DeleteResourceDefinition(pb.DeleteResourceDefinitionRequest(name="pg-prod"), metadata=_auth(developer))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await stub.DeleteResourceDefinition(pb.DeleteResourceDefinitionRequest(name="pg-prod", etag='W/"2"'),
                                            metadata=_auth(admin))
        with pytest.raises(grpc.RpcError) as caught:
            await stub.GetResourceDefinition(pb.GetResourceDefinitionRequest(name="pg-prod"), metadata=_auth(admin))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        # gone from matching: the built-in postgres default is back in the list
        listed = await stub.ListResourceDefinitions(pb.ListResourceDefinitionsRequest(type="postgres"), metadata=_auth(admin))
        assert [d.name for d in listed.resource_definitions] == ["resourceDefinitions/default-postgres"]
        # the tie is gone too, so the other one can be created now
        await stub.CreateResourceDefinition(pb.CreateResourceDefinitionRequest(resource_definition=tie), metadata=_auth(admin))
    finally:
        await channel.close()


# ---------------------------------------------------------------------------------------------
# Matching by environment type and team, through a real deployment


def _dns_score(app: str) -> str:
    return (f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx:1.27\n"
            "resources:\n  web:\n    type: dns\n")


async def _deployed_resource(http, app: str, environment: str) -> dict:
    """Deploy ``app`` (one dns resource) to ``environment``, wait, and read its resource."""
    import asyncio
    import json
    import time

    created = await http.post("/api/v1/deployments", json={"scoreYaml": _dns_score(app), "environment": environment})
    assert created.status_code == 200, created.text
    run_name = created.json()["run"]["name"]
    deadline = time.monotonic() + 90
    while True:
        run = (await http.get(f"/api/v1/{run_name}")).json()["run"]
        if run["state"] in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"):
            break
        assert time.monotonic() < deadline, json.dumps(run, indent=1)
        await asyncio.sleep(0.2)
    assert run["state"] == "RUN_STATE_SUCCEEDED", json.dumps(run, indent=1)
    (name,) = [s["outputs"]["resource"] for s in run["steps"] if s["name"] == "provision-web"]
    got = await http.get(f"/api/v1/{name}")
    assert got.status_code == 200, got.text
    return got.json()["resource"]


@pytest.mark.postgres
@requires_wiring
async def test_deployments_match_definitions_by_environment_type_and_team(platform):
    from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
    from innominatus.resources.v1 import definitions_pb2 as pb

    admin = await platform.login_admin()
    identity_channel = platform.channel("identity")
    channel, stub = await _stub(platform)
    try:
        identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
        for team in ("payments", "web"):
            await identity.CreateTeam(identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name=f"teams/{team}")),
                                      metadata=_auth(admin))
        for username, team in (("pam", "payments"), ("wes", "web")):
            user = identity_pb2.User(username=username, roles=[identity_pb2.ROLE_DEVELOPER], teams=[f"teams/{team}"],
                                     password="correct-horse-battery")
            await identity.CreateUser(identity_pb2.CreateUserRequest(user=user), metadata=_auth(admin))

        # Each definition gives its own base domain, so the hostname shows which one really ran.
        for name, criteria in (
            ("dns-production", pb.MatchingCriteria(env_type="production")),
            ("dns-development", pb.MatchingCriteria(env_type="development")),
            ("dns-payments", pb.MatchingCriteria(team="payments")),
            ("dns-payments-production", pb.MatchingCriteria(team="payments", env_type="production")),
        ):
            body = pb.ResourceDefinition(name=name, type="dns", criteria=criteria, outputs=["host"],
                                         provisioner=pb.Provisioner(kind="driver", driver="dns"))
            body.provisioner.config.update({"base_domain": f"{name}.example"})
            await stub.CreateResourceDefinition(pb.CreateResourceDefinitionRequest(resource_definition=body),
                                                metadata=_auth(admin))
    finally:
        await channel.close()
        await identity_channel.close()

    pam = await platform.login("pam", "correct-horse-battery")
    wes = await platform.login("wes", "correct-horse-battery")
    async with platform.http(admin) as root:
        # a production-typed environment without the approval gate, so the runs go through
        live = await root.post("/api/v1/environments", json={"environment": {
            "name": "live", "type": "ENVIRONMENT_TYPE_PRODUCTION", "requiresApproval": False}})
        assert live.status_code == 200, live.text
        # no team: the admin's application is owned by none
        unowned = await _deployed_resource(root, "misc", "live")

    async with platform.http(wes) as http:
        blog_live = await _deployed_resource(http, "blog", "live")
        blog_dev = await _deployed_resource(http, "blog", "dev")  # "dev" is created as development
    async with platform.http(pam) as http:
        shop_live = await _deployed_resource(http, "shop", "live")
        shop_dev = await _deployed_resource(http, "shop", "dev")

    def seen(resource) -> tuple[str, str, str, str]:
        return (resource["definition"], resource.get("environmentType", ""), resource.get("team", ""),
                resource["outputs"]["host"].split(".", 1)[1])

    # The same Score file, by environment type: production and development definitions.
    assert seen(blog_live) == ("dns-production@1", "production", "teams/web", "dns-production.example")
    assert seen(blog_dev) == ("dns-development@1", "development", "teams/web", "dns-development.example")
    # A team's definitions are that team's only (team outranks env type; both beat either alone).
    assert seen(shop_dev) == ("dns-payments@1", "development", "teams/payments", "dns-payments.example")
    assert seen(shop_live) == ("dns-payments-production@1", "production", "teams/payments",
                               "dns-payments-production.example")
    assert seen(unowned) == ("dns-production@1", "production", "", "dns-production.example")
