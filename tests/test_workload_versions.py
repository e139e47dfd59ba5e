"""Every submitted version of a workload is kept (content hash, who, when), and any two can
be compared: over gRPC, through the REST gateway and with `innominatus workloads`."""

from __future__ import annotations

import asyncio
import hashlib
import json

import grpc
import pytest
from google.protobuf import json_format

from innominatus.cli.main import main as cli_main
from innominatus.identity.v1 import identity_pb2
from innominatus.kit.errors import decode_rpc_error
from innominatus.specs import diff as specdiff
from innominatus.specs.v1 import specs_pb2, specs_pb2_grpc

pytestmark = pytest.mark.postgres

V1 = """\
apiVersion: score.dev/v1b1
metadata:
  name: shop
containers:
  web:
    image: registry.example.com/shop/web:1.0.0
    variables:
      LOG_LEVEL: info
    resources:
      limits:
        memory: 256Mi
        cpu: 500m
resources:
  db:
    type: postgres
  cache:
    type: redis
"""
# An image tag change.
V2 = V1.replace("web:1.0.0", "web:1.1.0")
# An added variable and a removed resource.
V3 = V2.replace("      LOG_LEVEL: info\n", "      LOG_LEVEL: info\n      FEATURE_X: \"on\"\n").replace(
    "  cache:\n    type: redis\n", ""
)
SOURCES = {1: V1, 2: V2, 3: V3}

EXPECTED_1_TO_3 = [
    {"op": "OP_CHANGED", "pointer": "/containers/web/image",
     "oldValue": "registry.example.com/shop/web:1.0.0", "newValue": "registry.example.com/shop/web:1.1.0"},
    {"op": "OP_ADDED", "pointer": "/containers/web/variables/FEATURE_X", "newValue": "on"},
    {"op": "OP_REMOVED", "pointer": "/resources/cache", "oldValue": {"type": "redis"}},
]


def _auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def _deploy(stub, token: str, source: str) -> specs_pb2.CreateDeploymentResponse:
    return await stub.CreateDeployment(
        specs_pb2.CreateDeploymentRequest(score_yaml=source, environment="dev"), metadata=_auth(token), timeout=30
    )


async def _history(platform) -> tuple[str, str]:
    """shop: v1 and v2 by the admin, v3 by a developer, then v3 again (no new version)."""
    admin = await platform.login_admin()
    developer = await platform.create_user(admin, "dana", identity_pb2.ROLE_DEVELOPER)
    async with platform.channel("specs") as channel:
        stub = specs_pb2_grpc.SpecsServiceStub(channel)
        assert (await _deploy(stub, admin, V1)).deployment.workload_version == 1
        assert (await _deploy(stub, admin, V2)).deployment.workload_version == 2
        assert (await _deploy(stub, developer, V3)).deployment.workload_version == 3
        again = await _deploy(stub, admin, V3)
        assert again.deployment.workload_version == 3  # unchanged content: no new version
    return admin, developer


def _changes(response) -> list[dict]:
    return [json_format.MessageToDict(c) for c in response.changes]


async def test_versions_are_listed_got_and_diffed_over_grpc(platform):
    admin, _ = await _history(platform)
    admin_name = platform.admin_credentials()["username"]
    async with platform.channel("specs") as channel:
        stub = specs_pb2_grpc.SpecsServiceStub(channel)

        listed = await stub.ListWorkloads(specs_pb2.ListWorkloadsRequest(), metadata=_auth(admin))
        [workload] = listed.workloads
        assert workload.name == "workloads/shop"
        assert workload.latest_version == 3
        assert workload.latest_content_hash == hashlib.sha256(V3.encode()).hexdigest()
        assert workload.update_time.ToDatetime() >= workload.create_time.ToDatetime()
        assert not listed.next_page_token

        versions = await stub.ListWorkloadVersions(
            specs_pb2.ListWorkloadVersionsRequest(parent="workloads/shop"), metadata=_auth(admin)
        )
        assert [v.name for v in versions.workload_versions] == [f"workloads/shop/versions/{n}" for n in (3, 2, 1)]
        assert [v.creator for v in versions.workload_versions] == ["dana", admin_name, admin_name]
        assert [v.content_hash for v in versions.workload_versions] == [
            hashlib.sha256(SOURCES[n].encode()).hexdigest() for n in (3, 2, 1)
        ]
        assert all(not v.score_yaml for v in versions.workload_versions)  # lists leave the source out
        times = [v.create_time.ToDatetime() for v in versions.workload_versions]
        assert times == sorted(times, reverse=True)

        # AIP-158 pages, newest first, and a token only fits its own list.
        first = await stub.ListWorkloadVersions(
            specs_pb2.ListWorkloadVersionsRequest(parent="workloads/shop", page_size=2), metadata=_auth(admin)
        )
        assert [v.version for v in first.workload_versions] == [3, 2] and first.next_page_token
        second = await stub.ListWorkloadVersions(
            specs_pb2.ListWorkloadVersionsRequest(parent="workloads/shop", page_size=2, page_token=first.next_page_token),
            metadata=_auth(admin),
        )
        assert [v.version for v in second.workload_versions] == [1] and not second.next_page_token
        with pytest.raises(grpc.RpcError) as caught:
            await stub.ListWorkloadVersions(
                specs_pb2.ListWorkloadVersionsRequest(parent="workloads/other", page_token=first.next_page_token),
                metadata=_auth(admin),
            )
        assert decode_rpc_error(caught.value).reason == "INVALID_PAGE_TOKEN"

        for number, source in SOURCES.items():
            got = await stub.GetWorkloadVersion(
                specs_pb2.GetWorkloadVersionRequest(name=f"workloads/shop/versions/{number}"), metadata=_auth(admin)
            )
            assert got.workload_version.version == number
            assert got.workload_version.score_yaml == source  # exactly as submitted

        diff = await stub.DiffWorkloadVersions(
            specs_pb2.DiffWorkloadVersionsRequest(name="workloads/shop", base=1, target=3), metadata=_auth(admin)
        )
        assert diff.base_version == "workloads/shop/versions/1"
        assert diff.target_version == "workloads/shop/versions/3"
        assert _changes(diff) == EXPECTED_1_TO_3
        assert diff.unified_diff.startswith("--- workloads/shop/versions/1\n+++ workloads/shop/versions/3\n")
        assert "\n-    image: registry.example.com/shop/web:1.0.0\n" in diff.unified_diff
        assert "\n+    image: registry.example.com/shop/web:1.1.0\n" in diff.unified_diff
        assert '\n+      FEATURE_X: "on"\n' in diff.unified_diff
        assert "\n-  cache:\n-    type: redis\n" in diff.unified_diff

        # Backwards is the mirror image.
        back = await stub.DiffWorkloadVersions(
            specs_pb2.DiffWorkloadVersionsRequest(name="workloads/shop", base=3, target=1), metadata=_auth(admin)
        )
        assert [(c["op"], c["pointer"]) for c in _changes(back)] == [
            ("OP_CHANGED", "/containers/web/image"),
            ("OP_REMOVED", "/containers/web/variables/FEATURE_X"),
            ("OP_ADDED", "/resources/cache"),
        ]

        # The same version twice is an empty diff, not an error.
        same = await stub.DiffWorkloadVersions(
            specs_pb2.DiffWorkloadVersionsRequest(name="workloads/shop", base=2, target=2), metadata=_auth(admin)
        )
        assert list(same.changes) == [] and same.unified_diff == ""
        assert same.base_version == same.target_version == "workloads/shop/versions/2"


async def test_unknown_versions_are_not_found_with_the_range_that_exists(platform):
    admin, developer = await _history(platform)
    async with platform.channel("specs") as channel:
        stub = specs_pb2_grpc.SpecsServiceStub(channel)
        calls = [
            stub.GetWorkloadVersion(specs_pb2.GetWorkloadVersionRequest(name="workloads/shop/versions/7"),
                                    metadata=_auth(developer)),
            stub.DiffWorkloadVersions(specs_pb2.DiffWorkloadVersionsRequest(name="workloads/shop", base=1, target=7),
                                      metadata=_auth(developer)),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                await call
            error = decode_rpc_error(caught.value)
            assert error.code == grpc.StatusCode.NOT_FOUND
            assert error.reason == "WORKLOAD_VERSION_NOT_FOUND"
            assert "'shop'" in error.message and "version 7" in error.message and "1-3" in error.message
            assert error.metadata == {"workload": "shop", "version": "7", "versions": "1-3"}

        with pytest.raises(grpc.RpcError) as caught:
            await stub.ListWorkloadVersions(specs_pb2.ListWorkloadVersionsRequest(parent="workloads/nope"),
                                            metadata=_auth(admin))
        error = decode_rpc_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "WORKLOAD_NOT_FOUND")

        with pytest.raises(grpc.RpcError) as caught:
            await stub.DiffWorkloadVersions(specs_pb2.DiffWorkloadVersionsRequest(name="workloads/shop", target=2),
                                            metadata=_auth(admin))
        error = decode_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["base"]

        # Reads still need a user.
        with pytest.raises(grpc.RpcError) as caught:
            await stub.ListWorkloads(specs_pb2.ListWorkloadsRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_rest_routes_derived_from_the_annotations(platform):
    admin, _ = await _history(platform)
    async with platform.http(admin) as http:
        workloads = (await http.get("/api/v1/workloads")).json()
        assert [(w["name"], w["latestVersion"]) for w in workloads["workloads"]] == [("workloads/shop", 3)]

        versions = await http.get("/api/v1/workloads/shop/versions", params={"pageSize": 2})
        assert versions.status_code == 200
        body = versions.json()
        assert [v["version"] for v in body["workloadVersions"]] == [3, 2] and body["nextPageToken"]

        got = await http.get("/api/v1/workloads/shop/versions/2")
        assert got.status_code == 200
        assert got.json()["workloadVersion"]["scoreYaml"] == V2

        diff = await http.get("/api/v1/workloads/shop:diff", params={"base": 1, "target": 3})
        assert diff.status_code == 200, diff.text
        assert diff.json()["changes"] == EXPECTED_1_TO_3
        assert diff.json()["unifiedDiff"].startswith("--- workloads/shop/versions/1\n")

        same = (await http.get("/api/v1/workloads/shop:diff", params={"base": 3, "target": 3})).json()
        assert "changes" not in same and "unifiedDiff" not in same  # empty: omitted in proto3 JSON

        missing = await http.get("/api/v1/workloads/shop/versions/9")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        problem = missing.json()
        assert problem["reason"] == "WORKLOAD_VERSION_NOT_FOUND"
        assert "version 9" in problem["detail"] and "1-3" in problem["detail"]
        assert problem["metadata"]["versions"] == "1-3"

        missing_diff = await http.get("/api/v1/workloads/shop:diff", params={"base": 9, "target": 1})
        assert missing_diff.status_code == 404 and missing_diff.json()["reason"] == "WORKLOAD_VERSION_NOT_FOUND"

        not_a_number = await http.get("/api/v1/workloads/shop/versions/latest")
        assert not_a_number.status_code == 400

    async with platform.http() as anonymous:
        assert (await anonymous.get("/api/v1/workloads")).status_code == 401


async def _cli(monkeypatch, platform, token: str, *argv: str) -> int:
    monkeypatch.setenv("INNOMINATUS_SERVER", platform.gateway)
    monkeypatch.setenv("INNOMINATUS_TOKEN", token)
    # main() is synchronous (httpx sync client); the platform runs in this event loop.
    return await asyncio.to_thread(cli_main, list(argv))


async def test_cli_workloads_commands_against_the_gateway(platform, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
    admin, _ = await _history(platform)

    assert await _cli(monkeypatch, platform, admin, "workloads", "diff", "shop", "1", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["OP", "POINTER", "OLD", "NEW"]
    assert lines[1].split() == ["changed", "/containers/web/image", "registry.example.com/shop/web:1.0.0",
                                "registry.example.com/shop/web:1.1.0"]
    assert lines[2].split() == ["added", "/containers/web/variables/FEATURE_X", "-", "on"]
    assert lines[3].split() == ["removed", "/resources/cache", '{"type":"redis"}', "-"]
    assert len(lines) == 4

    assert await _cli(monkeypatch, platform, admin, "workloads", "diff", "workloads/shop", "1", "3", "--unified") == 0
    out = capsys.readouterr().out
    assert out.startswith("--- workloads/shop/versions/1\n+++ workloads/shop/versions/3\n")
    assert "-    image: registry.example.com/shop/web:1.0.0\n" in out

    assert await _cli(monkeypatch, platform, admin, "-o", "json", "workloads", "diff", "shop", "1", "3") == 0
    assert json.loads(capsys.readouterr().out)["changes"] == EXPECTED_1_TO_3

    assert await _cli(monkeypatch, platform, admin, "workloads", "diff", "shop", "2", "2") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "No differences between versions 2 and 2" in captured.err

    assert await _cli(monkeypatch, platform, admin, "workloads", "diff", "shop", "1", "8") == 5
    err = capsys.readouterr().err
    assert "WORKLOAD_VERSION_NOT_FOUND" in err and "1-3" in err

    assert await _cli(monkeypatch, platform, admin, "workloads", "versions", "shop") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["VERSION", "HASH", "CREATOR", "CREATED"]
    assert [r[0] for r in rows[1:]] == ["3", "2", "1"]
    assert rows[1][1] == hashlib.sha256(V3.encode()).hexdigest()[:12] and rows[1][2] == "dana"

    assert await _cli(monkeypatch, platform, admin, "workloads", "list") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[1][:2] == ["shop", "3"]

    assert await _cli(monkeypatch, platform, admin, "workloads", "get", "shop", "--version", "1", "-o", "yaml") == 0
    assert capsys.readouterr().out == V1
    assert await _cli(monkeypatch, platform, admin, "workloads", "get", "shop") == 0  # latest, as a table
    out = capsys.readouterr().out
    assert "workloads/shop/versions/3" in out and out.endswith(V3)
    assert await _cli(monkeypatch, platform, admin, "-o", "json", "workloads", "get", "shop", "--version", "2") == 0
    assert json.loads(capsys.readouterr().out)["workloadVersion"]["scoreYaml"] == V2


def test_structural_diff_is_deterministic_and_exact():
    base = {"b": [1, 2, 3], "a": {"x": 1, "y/z": True, "t~": None}, "k": "same"}
    target = {"a": {"x": 1.0, "y/z": 1, "t~": 0, "n": {"deep": [1]}}, "b": [1, 5], "k": "same", "c": []}
    changes = [c.as_dict() for c in specdiff.diff_documents(base, target)]
    assert changes == [
        {"op": "added", "pointer": "/a/n", "new": {"deep": [1]}},
        {"op": "changed", "pointer": "/a/t~0", "old": None, "new": 0},
        {"op": "changed", "pointer": "/a/x", "old": 1, "new": 1.0},
        {"op": "changed", "pointer": "/a/y~1z", "old": True, "new": 1},
        {"op": "changed", "pointer": "/b/1", "old": 2, "new": 5},
        {"op": "removed", "pointer": "/b/2", "old": 3},
        {"op": "added", "pointer": "/c", "new": []},
    ]
    assert specdiff.diff_documents(target, target) == []
    assert specdiff.diff_documents({"a": {"b": 1}}, {"a": "text"}) == [
        specdiff.Change("changed", "/a", old={"b": 1}, new="text")
    ]
    assert specdiff.unified_diff("a\nb\n", "a\nb\n") == ""
    assert specdiff.unified_diff("a\nb\n", "a\nc\n", "v1", "v2") == "--- v1\n+++ v2\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
