"""The OpenAPI document is generated from the same annotations as the routes, and is valid."""

from __future__ import annotations

import importlib
import re

import pytest
from google.api import annotations_pb2

from innominatus.gateway.openapi import build_openapi
from innominatus.gateway.transcoding import build_routes

MODULES = [f"innominatus.{s}.v1.{s}_pb2" for s in ("specs", "engine", "resources", "identity", "audit")] + [
    "innominatus.resources.v1.definitions_pb2",
    "innominatus.engine.v1.golden_paths_pb2"
]


@pytest.fixture(scope="module")
def document() -> dict:
    return build_openapi(build_routes())


def _annotated_rpcs() -> list[tuple[str, str, str, str]]:
    """(operationId, HTTP method, template, body) of every annotated RPC, read straight from the descriptors."""
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule = options.Extensions[annotations_pb2.http]
                kind = rule.WhichOneof("pattern")
                found.append((f"{service.name}_{method.name}", kind, getattr(rule, kind), rule.body))
    return found


def _operations(document: dict):
    for path, item in document["paths"].items():
        for verb, operation in item.items():
            if verb in ("get", "put", "post", "delete", "patch"):
                yield path, verb, operation


def test_every_annotated_rpc_is_documented(document):
    rpcs = _annotated_rpcs()
    assert len(rpcs) >= 20
    operations = {op["operationId"]: (path, verb, op) for path, verb, op in _operations(document)}
    assert len(operations) == len(list(_operations(document))), "operationIds must be unique"
    for operation_id, verb, template, body in rpcs:
        assert operation_id in operations, operation_id
        path, documented_verb, op = operations[operation_id]
        assert documented_verb == verb
        assert op["x-http-template"] == template
        assert op["tags"] == [operation_id.split("_")[0]]
        assert ("requestBody" in op) == bool(body)
    assert set(operations) == {r[0] for r in rpcs}, "only annotated RPCs are documented"
    assert "AuditService_AppendEvents" not in operations


def test_path_templates_rendered(document):
    get_run = document["paths"]["/api/v1/runs/{name}"]["get"]
    assert get_run["operationId"] == "EngineService_GetRun"
    (param,) = [p for p in get_run["parameters"] if p["in"] == "path"]
    assert param["name"] == "name" and param["required"] is True
    assert "{name=runs/*}" in param["description"] and "runs/abc" in param["description"]
    add_member = document["paths"]["/api/v1/teams/{team}:addMember"]["post"]
    assert add_member["operationId"] == "IdentityService_AddTeamMember"
    assert "/api/v1/users:me" in document["paths"]
    # Every {placeholder} in a path has its path parameter, and vice versa.
    for path, _, op in _operations(document):
        placeholders = set(re.findall(r"{([^}]+)}", path))
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert placeholders == declared, path


def test_query_parameters_and_bodies(document):
    list_records = document["paths"]["/api/v1/audit/records"]["get"]
    names = {p["name"]: p for p in list_records["parameters"]}
    assert {"pageSize", "pageToken", "filter.actor", "filter.outcome", "filter.startTime"} <= set(names)
    assert names["filter.outcome"]["schema"] == {"$ref": "#/components/schemas/innominatus.common.v1.AuditOutcome"}
    assert names["filter.startTime"]["schema"]["format"] == "date-time"
    create_user = document["paths"]["/api/v1/users"]["post"]
    assert create_user["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/innominatus.identity.v1.User"
    }
    start_run = document["paths"]["/api/v1/runs"]["post"]
    assert start_run["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/innominatus.engine.v1.StartRunRequest"
    }
    assert "parameters" not in start_run  # body "*" leaves nothing for the query
    export = document["paths"]["/api/v1/audit:export"]["get"]
    assert export["responses"]["200"]["content"]["application/x-ndjson"]["schema"] == {
        "$ref": "#/components/schemas/innominatus.audit.v1.AuditRecord"
    }


def test_schemas_follow_proto3_json(document):
    schemas = document["components"]["schemas"]
    run = schemas["innominatus.engine.v1.Run"]["properties"]
    assert run["createTime"] == {"type": "string", "format": "date-time"}
    assert run["state"] == {"$ref": "#/components/schemas/innominatus.engine.v1.RunState"}
    assert run["steps"] == {"type": "array", "items": {"$ref": "#/components/schemas/innominatus.engine.v1.Step"}}
    assert schemas["innominatus.engine.v1.RunState"]["enum"][0] == "RUN_STATE_UNSPECIFIED"
    assert schemas["innominatus.engine.v1.StartRunRequest"]["properties"]["inputs"]["type"] == "object"
    assert schemas["innominatus.audit.v1.AuditRecord"]["properties"]["sequence"] == {"type": "string", "format": "int64"}
    assert schemas["innominatus.identity.v1.LoginResponse"]["properties"]["expiresIn"]["type"] == "integer"
    problem = schemas["Problem"]
    assert {"type", "title", "status", "detail", "reason", "metadata", "violations", "requestId"} <= set(
        problem["properties"]
    )


def test_security_and_errors(document):
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    login = document["paths"]["/api/v1/auth:login"]["post"]
    assert {} in login["security"]  # anonymous
    for _, _, op in _operations(document):
        assert op["responses"]["default"] == {"$ref": "#/components/responses/ProblemDefault"}
        assert "429" in op["responses"]
    problem_default = document["components"]["responses"]["ProblemDefault"]
    assert "application/problem+json" in problem_default["content"]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_ref_resolves(document):
    refs = set(_refs(document))
    assert refs
    for ref in refs:
        assert ref.startswith("#/")
        node = document
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]
    # And nothing defined is unreachable garbage.
    used = {r.rsplit("/", 1)[1] for r in refs if r.startswith("#/components/schemas/")}
    assert used == set(document["components"]["schemas"])


def test_document_is_valid_openapi_31(document):
    validator = pytest.importorskip("openapi_spec_validator")
    assert document["openapi"] == "3.1.0"
    validator.validate(document)
