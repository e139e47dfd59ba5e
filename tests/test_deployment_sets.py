"""Deployment sets: hashing, diff, Kubernetes/compose artifacts (no plaintext secrets) and GitOps
commits to a real (bare) git repository, including rollback."""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from innominatus.specs.artifacts import (INPUTS_ANNOTATION, ArtifactError, compose_env_file, render_artifacts,
                                         workload_inputs_hash)
from innominatus.specs.deployment_sets import DeploymentSet, DeploymentSetError, build_set, diff_sets
from innominatus.specs.diff import ADDED, CHANGED, REMOVED
from innominatus.kit.git import Clone
from innominatus.specs.gitops import PUSH_ATTEMPTS, GitOpsError, commit_set, history, read_set, rollback

PASSWORD_REF = "secret://embedded/apps/shop/dev/checkout-db#password"
REDIS_REF = "secret://embedded/apps/shop/dev/checkout-cache#password"
FAKE_PASSWORD = "s3cr3t-Plaintext-Value-9f2c"


def checkout() -> dict:
    return {
        "apiVersion": "score.dev/v1b1",
        "metadata": {"name": "checkout", "annotations": {"innominatus.dev/golden-path": "deploy-app"}},
        "service": {"ports": {"http": {"port": 80, "targetPort": 8080}, "metrics": {"port": 9090}}},
        "containers": {
            "api": {
                "image": "ghcr.io/acme/checkout:1.4.2",
                "command": ["/bin/checkout"],
                "args": ["--listen", ":8080"],
                "variables": {
                    "DB_HOST": "${resources.db.host}",
                    "DB_PORT": "${resources.db.port}",
                    "DB_USER": "${resources.db.username}",
                    "DB_PASSWORD": "${resources.db.password}",
                    "DATABASE_URL": "postgres://${resources.db.username}:${resources.db.password}@"
                                    "${resources.db.host}:${resources.db.port}/${resources.db.name}",
                    "REDIS_ADDR": "${resources.cache.host}:${resources.cache.port}",
                    "REDIS_PASSWORD": "${resources.cache.password}",
                    "PUBLIC_URL": "https://${resources.web.host}${resources.web.path}",
                    "PRICE_FORMAT": "$$%.2f",
                    "SHELL_REF": "$$(HOME)",
                },
                "files": {
                    "/etc/checkout/app.conf": {"content": "service=${metadata.name}\nport=8080\n", "mode": "0644"},
                    "/etc/checkout/logo.png": {"binaryContent": "iVBORw0KGgo="},
                },
                "volumes": {"/var/lib/checkout": {"source": "${resources.data}", "readOnly": False}},
                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                "livenessProbe": {"httpGet": {"port": 8080, "path": "/healthz",
                                              "httpHeaders": [{"name": "X-Probe", "value": "1"}]}},
                "readinessProbe": {"exec": {"command": ["/bin/checkout", "ready"]}},
            },
        },
        "resources": {
            "db": {"type": "postgres"},
            "cache": {"type": "redis"},
            "web": {"type": "route", "params": {"host": "shop.example.com", "path": "/checkout", "port": 80}},
            "data": {"type": "volume"},
        },
    }


def worker(image: str = "ghcr.io/acme/worker:2.0.0") -> dict:
    return {
        "apiVersion": "score.dev/v1b1",
        "metadata": {"name": "worker"},
        "containers": {"main": {"image": image, "variables": {"QUEUE": "orders", "DB_HOST": "${resources.db.host}"}}},
        "resources": {"db": {"type": "postgres", "id": "shop-db"}},
    }


def resources() -> dict:
    return {
        "checkout.db": {"type": "postgres", "class": "default", "id": "",
                        "outputs": {"host": "pg.internal", "port": 5432, "username": "checkout_app", "name": "checkout"},
                        "secret_refs": {"password": PASSWORD_REF}},
        "checkout.cache": {"type": "redis", "outputs": {"host": "redis.internal", "port": 6379, "username": "checkout"},
                           "secret_refs": {"password": REDIS_REF}},
        "checkout.web": {"type": "route", "outputs": {"host": "shop.example.com", "path": "/checkout", "port": 80}},
        "checkout.data": {"type": "volume", "outputs": {"source": "checkout-data"}},
        "shop-db": {"type": "postgres", "id": "shop-db", "outputs": {"host": "shared-pg.internal", "port": 5432}},
    }


def make_set(workloads=None, res=None, **kwargs) -> DeploymentSet:
    workloads = workloads if workloads is not None else {"checkout": checkout(), "worker": worker()}
    kwargs.setdefault("created_by", "alice")
    kwargs.setdefault("reason", "release 1.4.2")
    return build_set("shop", "dev", workloads, res if res is not None else resources(), **kwargs)


def _reorder(value):
    if isinstance(value, dict):
        return {key: _reorder(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reorder(item) for item in value]
    return value


def _docs(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


# -- hashing ---------------------------------------------------------------------------------


def test_hash_is_stable_and_ignores_who_why_and_key_order():
    a = make_set()
    b = make_set(created_by="bob", reason="again", parent="0" * 64)
    c = build_set("shop", "dev", _reorder({"checkout": checkout(), "worker": worker()}), _reorder(resources()),
                  created_by="carol")
    assert a.content_hash == b.content_hash == c.content_hash
    assert a.artifacts == c.artifacts  # identical bytes whatever the input key order
    assert len(a.content_hash) == 64 and a.short_hash == a.content_hash[:12]
    # stable across runs: the hash is recomputed from canonical JSON, not from object identity
    again = DeploymentSet.from_json(a.to_json())
    assert again.content_hash == a.content_hash
    # content changes change the hash
    changed = make_set(workloads={"checkout": checkout(), "worker": worker("ghcr.io/acme/worker:2.0.1")})
    assert changed.content_hash != a.content_hash
    assert build_set("shop", "staging", {"checkout": checkout(), "worker": worker()}, resources()).content_hash != \
        a.content_hash


def test_hash_of_a_known_set_is_pinned():
    s = DeploymentSet("shop", "dev", {"w": {"apiVersion": "score.dev/v1b1", "metadata": {"name": "w"}}},
                      {}, {"a.txt": "x"}, created_by="x", reason="y")
    expected = __import__("hashlib").sha256(json.dumps(
        {"application": "shop", "artifacts": {"a.txt": "x"}, "environment": "dev", "resources": {},
         "workloads": {"w": {"apiVersion": "score.dev/v1b1", "metadata": {"name": "w"}}}},
        sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert s.content_hash == expected


def test_json_round_trip_is_exact_and_tampering_is_detected():
    s = make_set(parent="a" * 64)
    text = s.to_json()
    back = DeploymentSet.from_json(text)
    assert back == s and back.to_json() == text
    assert (back.created_by, back.reason, back.parent) == ("alice", "release 1.4.2", "a" * 64)
    data = json.loads(text)
    data["workloads"]["worker"]["containers"]["main"]["image"] = "evil:latest"
    with pytest.raises(DeploymentSetError, match="content hash mismatch"):
        DeploymentSet.from_json(json.dumps(data))


def test_set_is_immutable_and_validated():
    s = make_set()
    with pytest.raises(TypeError):
        s.workloads["checkout"]["containers"] = {}  # type: ignore[index]
    with pytest.raises(Exception):
        s.application = "other"  # type: ignore[misc]
    plain = s.thaw()
    plain["workloads"]["worker"]["metadata"]["name"] = "x"  # a copy: the set is untouched
    assert s.workloads["worker"]["metadata"]["name"] == "worker"
    with pytest.raises(DeploymentSetError, match="not a secret reference") as exc:
        DeploymentSet("shop", "dev", {"w": {}}, {"w.db": {"type": "postgres", "secret_refs": {"password": FAKE_PASSWORD}}})
    assert FAKE_PASSWORD not in str(exc.value)
    with pytest.raises(DeploymentSetError, match="must be relative"):
        DeploymentSet("shop", "dev", {"w": {}}, {}, {"../escape.yaml": ""})
    with pytest.raises(DeploymentSetError, match="RFC 1123"):
        DeploymentSet("Shop", "dev", {"w": {}})


# -- diff ------------------------------------------------------------------------------------


def test_diff_lists_exactly_what_changed():
    a = make_set()
    w2, res2 = checkout(), resources()
    w2["containers"]["api"]["image"] = "ghcr.io/acme/checkout:1.5.0"
    w2["containers"]["api"]["variables"]["FEATURE_X"] = "on"
    del w2["resources"]["cache"]
    for name in ("REDIS_ADDR", "REDIS_PASSWORD"):
        del w2["containers"]["api"]["variables"][name]
    del res2["checkout.cache"]
    b = make_set(workloads={"checkout": w2, "worker": worker()}, res=res2)

    spec_changes = {(c.op, c.pointer) for c in diff_sets(a, b, sections=("workloads", "resources"))}
    assert spec_changes == {
        (CHANGED, "/workloads/checkout/containers/api/image"),
        (ADDED, "/workloads/checkout/containers/api/variables/FEATURE_X"),
        (REMOVED, "/workloads/checkout/containers/api/variables/REDIS_ADDR"),
        (REMOVED, "/workloads/checkout/containers/api/variables/REDIS_PASSWORD"),
        (REMOVED, "/workloads/checkout/resources/cache"),
        (REMOVED, "/resources/checkout.cache"),
    }
    changes = {c.pointer: c for c in diff_sets(a, b)}
    image = changes["/workloads/checkout/containers/api/image"]
    assert (image.old, image.new) == ("ghcr.io/acme/checkout:1.4.2", "ghcr.io/acme/checkout:1.5.0")
    assert changes["/resources/checkout.cache"].old["secret_refs"] == {"password": REDIS_REF}  # the ref, as is
    # artifacts: the checkout manifests and compose changed, the worker's did not
    artifact_changes = {p for p in changes if p.startswith("/artifacts/")}
    assert artifact_changes == {"/artifacts/compose.yaml", "/artifacts/k8s~1checkout~1deployment.yaml",
                                "/artifacts/k8s~1checkout~1secret-refs.yaml", "/artifacts/k8s~1checkout~1service.yaml",
                                "/artifacts/k8s~1checkout~1configmap.yaml", "/artifacts/k8s~1checkout~1ingress.yaml"}
    # (every checkout manifest carries its workload's inputs hash, so each one changes; the worker's do not)
    assert diff_sets(a, make_set(created_by="zed")) == []


def test_diff_compares_secret_refs_as_refs():
    a = make_set()
    res = resources()
    res["checkout.db"]["secret_refs"]["password"] = PASSWORD_REF.replace("#password", "?version=2#password")
    b = make_set(res=res)
    changes = {c.pointer: c for c in diff_sets(a, b, sections=("resources",))}
    assert list(changes) == ["/resources/checkout.db/secret_refs/password"]
    assert changes["/resources/checkout.db/secret_refs/password"].new.startswith("secret://")


# -- artifacts -----------------------------------------------------------------------------


def test_kubernetes_artifacts_for_a_realistic_workload():
    s = make_set()
    arts = s.artifacts
    assert sorted(arts) == ["compose.yaml", "k8s/checkout/configmap.yaml", "k8s/checkout/deployment.yaml",
                            "k8s/checkout/ingress.yaml", "k8s/checkout/secret-refs.yaml", "k8s/checkout/service.yaml",
                            "k8s/worker/deployment.yaml"]
    [deployment] = _docs(arts["k8s/checkout/deployment.yaml"])
    assert deployment["kind"] == "Deployment" and deployment["metadata"]["name"] == "checkout"
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "checkout" and labels["app.kubernetes.io/part-of"] == "shop"
    digest = deployment["metadata"]["annotations"][INPUTS_ANNOTATION]
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    used = {"db": {**resources()["checkout.db"]["outputs"], "password": PASSWORD_REF},
            "cache": {**resources()["checkout.cache"]["outputs"], "password": REDIS_REF},
            "web": resources()["checkout.web"]["outputs"], "data": resources()["checkout.data"]["outputs"]}
    assert digest == "sha256:" + workload_inputs_hash("shop", "dev", "checkout", checkout(), used)
    [api] = deployment["spec"]["template"]["spec"]["containers"]
    assert api["image"] == "ghcr.io/acme/checkout:1.4.2"
    assert api["command"] == ["/bin/checkout"] and api["args"] == ["--listen", ":8080"]
    env = {e["name"]: e for e in api["env"]}
    for secret_var in ("DB_PASSWORD", "DATABASE_URL", "REDIS_PASSWORD"):
        assert env[secret_var] == {"name": secret_var, "valueFrom": {"secretKeyRef": {"name": "checkout-secrets",
                                                                                      "key": secret_var}}}
    assert env["DB_HOST"] == {"name": "DB_HOST", "value": "pg.internal"}
    assert env["DB_PORT"]["value"] == "5432" and env["DB_USER"]["value"] == "checkout_app"
    assert env["REDIS_ADDR"]["value"] == "redis.internal:6379"
    assert env["PUBLIC_URL"]["value"] == "https://shop.example.com/checkout"
    assert env["PRICE_FORMAT"]["value"] == "$%.2f"
    assert env["SHELL_REF"]["value"] == "$$(HOME)"  # kubelet would expand $(HOME): escaped
    assert [e["name"] for e in api["env"]] == sorted(env)
    assert api["resources"] == {"limits": {"cpu": "500m", "memory": "256Mi"},
                                "requests": {"cpu": "100m", "memory": "128Mi"}}
    assert api["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": 8080,
                                                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}}
    assert api["readinessProbe"] == {"exec": {"command": ["/bin/checkout", "ready"]}}
    mounts = {m["mountPath"]: m for m in api["volumeMounts"]}
    assert mounts["/etc/checkout/app.conf"]["name"] == "files"
    assert mounts["/var/lib/checkout"]["name"] == "vol-checkout-data"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["vol-checkout-data"]["persistentVolumeClaim"] == {"claimName": "checkout-data"}
    assert volumes["files"]["configMap"]["name"] == "checkout-files"
    modes = {item["key"]: item.get("mode") for item in volumes["files"]["configMap"]["items"]}
    assert modes[mounts["/etc/checkout/app.conf"]["subPath"]] == 0o644

    [configmap] = _docs(arts["k8s/checkout/configmap.yaml"])
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "checkout-files"
    assert list(configmap["data"].values()) == ["service=checkout\nport=8080\n"]
    assert list(configmap["binaryData"].values()) == ["iVBORw0KGgo="]

    [service] = _docs(arts["k8s/checkout/service.yaml"])
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"},
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    [ingress] = _docs(arts["k8s/checkout/ingress.yaml"])
    assert ingress["kind"] == "Ingress"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "shop.example.com"
    [path] = rule["http"]["paths"]
    assert path["path"] == "/checkout" and path["backend"]["service"] == {"name": "checkout", "port": {"number": 80}}

    [external] = _docs(arts["k8s/checkout/secret-refs.yaml"])
    assert external["kind"] == "ExternalSecret" and external["spec"]["target"]["name"] == "checkout-secrets"
    remote = {d["secretKey"]: d["remoteRef"] for d in external["spec"]["data"]}
    assert sorted(r["key"] for r in remote.values()) == ["apps/shop/dev/checkout-cache", "apps/shop/dev/checkout-db"]
    template = external["spec"]["target"]["template"]["data"]
    assert set(template) == {"DB_PASSWORD", "DATABASE_URL", "REDIS_PASSWORD"}
    db_key = next(k for k, r in remote.items() if r == {"key": "apps/shop/dev/checkout-db", "property": "password"})
    assert template["DB_PASSWORD"] == f"{{{{ .{db_key} }}}}"
    assert template["DATABASE_URL"] == f"postgres://checkout_app:{{{{ .{db_key} }}}}@pg.internal:5432/checkout"

    # the shared resource (matched by type and id) feeds the worker
    [worker_deployment] = _docs(arts["k8s/worker/deployment.yaml"])
    worker_env = {e["name"]: e["value"] for e in worker_deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert worker_env == {"DB_HOST": "shared-pg.internal", "QUEUE": "orders"}


def test_compose_artifact():
    compose = yaml.safe_load(make_set().artifacts["compose.yaml"])
    assert compose["name"] == "shop"
    assert sorted(compose["services"]) == ["checkout-api", "worker-main"]
    api = compose["services"]["checkout-api"]
    assert api["image"] == "ghcr.io/acme/checkout:1.4.2"
    assert api["entrypoint"] == ["/bin/checkout"] and api["command"] == ["--listen", ":8080"]
    assert api["environment"]["DB_HOST"] == "pg.internal"
    assert api["environment"]["DB_PASSWORD"] == "${CHECKOUT_API_DB_PASSWORD}"
    assert api["environment"]["DATABASE_URL"] == "${CHECKOUT_API_DATABASE_URL}"
    assert api["environment"]["PRICE_FORMAT"] == "$$%.2f"  # a literal $ escaped for compose
    assert api["ports"] == [{"target": 8080, "published": 80, "protocol": "tcp"},
                            {"target": 9090, "published": 9090, "protocol": "tcp"}]
    assert api["volumes"] == [{"type": "volume", "source": "checkout-data", "target": "/var/lib/checkout"}]
    assert "checkout-data" in compose["volumes"]
    [config] = api["configs"]
    assert config["target"] == "/etc/checkout/app.conf" and config["mode"] == 0o644
    assert compose["configs"][config["source"]] == {"content": "service=checkout\nport=8080\n"}
    assert compose["x-innominatus-secrets"]["CHECKOUT_API_DB_PASSWORD"] == [{"ref": PASSWORD_REF}]


def test_no_plaintext_secret_in_artifacts_and_env_file_resolves_refs():
    s = make_set()
    resolved = {PASSWORD_REF: FAKE_PASSWORD, REDIS_REF: FAKE_PASSWORD + "-redis"}
    # The artifacts only ever hold references ...
    for path, text in s.artifacts.items():
        assert FAKE_PASSWORD not in text, path
    assert FAKE_PASSWORD not in s.to_json()
    assert PASSWORD_REF in s.artifacts["k8s/checkout/secret-refs.yaml"] or \
        "apps/shop/dev/checkout-db" in s.artifacts["k8s/checkout/secret-refs.yaml"]
    # ... and the deploy-time helper is what turns them into values (outside Git).
    env_file = compose_env_file(s.artifacts["compose.yaml"], resolved.__getitem__)
    lines = dict(line.split("=", 1) for line in env_file.splitlines())
    assert lines["CHECKOUT_API_DB_PASSWORD"] == f"'{FAKE_PASSWORD}'"
    assert lines["CHECKOUT_API_DATABASE_URL"] == f"'postgres://checkout_app:{FAKE_PASSWORD}@pg.internal:5432/checkout'"
    assert lines["CHECKOUT_API_REDIS_PASSWORD"] == f"'{FAKE_PASSWORD}-redis'"
    for path, text in s.artifacts.items():  # still nothing in the set
        assert FAKE_PASSWORD not in text, path


def test_file_content_using_a_secret_goes_to_the_secret_not_the_configmap():
    w = worker()
    w["containers"]["main"]["files"] = {"/etc/worker/db.ini": {"content": "password=${resources.db.password}\n"}}
    res = resources()
    res["shop-db"]["secret_refs"] = {"password": PASSWORD_REF}
    s = build_set("shop", "dev", {"worker": w}, res)
    assert "k8s/worker/configmap.yaml" not in s.artifacts
    [external] = _docs(s.artifacts["k8s/worker/secret-refs.yaml"])
    [(key, template)] = external["spec"]["target"]["template"]["data"].items()
    assert key.startswith("file.") and template.startswith("password={{ .s_")
    [deployment] = _docs(s.artifacts["k8s/worker/deployment.yaml"])
    [volume] = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["secret"]["secretName"] == "worker-secrets"
    compose = yaml.safe_load(s.artifacts["compose.yaml"])
    assert compose["secrets"] and "configs" not in compose


def test_render_problems_and_source_files_are_errors():
    w = worker()
    w["containers"]["main"]["variables"]["X"] = "${resources.db.nope}"
    with pytest.raises(ArtifactError, match="has no output 'nope'"):
        build_set("shop", "dev", {"worker": w}, resources())
    w = worker()
    w["containers"]["main"]["files"] = {"/etc/x": {"source": "x.conf"}}
    with pytest.raises(ArtifactError, match="read into `content`"):
        build_set("shop", "dev", {"worker": w}, resources())


def test_render_artifacts_accepts_plain_inputs():
    s = make_set()
    assert render_artifacts({"application": "shop", "environment": "dev", "workloads": s.thaw()["workloads"],
                             "resources": s.thaw()["resources"]}) == dict(s.artifacts)


# -- GitOps ----------------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def bare(tmp_path) -> Path:
    repo = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(repo)], check=True)
    return repo


def test_gitops_commit_history_rollback(bare):
    base = "environments/dev/shop/"
    first = make_set()
    c1 = commit_set(bare, "main", "dev", first, "alice", "release 1.4.2")
    assert git("log", "--format=%B", "-1", c1, cwd=bare).strip() == \
        f"deploy shop to dev: {first.short_hash}\n\nrelease 1.4.2\n\nby alice"
    files = set(git("ls-tree", "-r", "--name-only", c1, cwd=bare).split())
    assert files == {base + p for p in first.artifacts} | {base + "deployment-set.json"}

    # identical content (whoever deploys it, whatever the reason): no commit
    again = make_set(created_by="bob", reason="redeploy")
    assert commit_set(f"file://{bare}", "main", "dev", again, "bob", "redeploy") == c1
    assert git("rev-list", "--count", "main", cwd=bare).strip() == "1"

    # second deployment: the worker is gone, the image changed
    w2 = checkout()
    w2["containers"]["api"]["image"] = "ghcr.io/acme/checkout:1.5.0"
    second = make_set(workloads={"checkout": w2}, created_by="bob", reason="drop worker")
    c2 = commit_set(bare, "main", "dev", second, "Bob <bob@example.com>", "drop worker")
    assert c2 != c1
    files2 = set(git("ls-tree", "-r", "--name-only", c2, cwd=bare).split())
    assert base + "k8s/worker/deployment.yaml" not in files2
    assert base + "k8s/checkout/deployment.yaml" in files2
    assert git("log", "--format=%an <%ae>", "-1", c2, cwd=bare).strip() == "Bob <bob@example.com>"

    entries = history(bare, "dev", "shop")
    assert [(e.commit, e.set_hash) for e in entries] == [(c2, second.content_hash), (c1, first.content_hash)]
    assert entries[0].author == "Bob" and entries[1].message.startswith("deploy shop to dev:")
    assert history(bare, "prod", "shop") == []

    assert read_set(bare, c1) == first
    back = read_set(f"file://{bare}", c2, "dev", "shop")
    assert back.content_hash == second.content_hash and back.parent == first.content_hash  # filled in on commit
    assert diff_sets(read_set(bare, c1), back)  # the two commits differ

    # rollback to the first set: a new commit restoring its files
    c3 = rollback(bare, "main", "dev", "shop", c1[:10], "carol", "1.5.0 breaks checkout")
    assert c3 not in (c1, c2)
    message = git("log", "--format=%B", "-1", c3, cwd=bare)
    assert message.startswith(f"deploy shop to dev: {first.short_hash}\n\nrollback to {first.short_hash} (commit {c1[:12]})")
    assert "1.5.0 breaks checkout" in message and message.rstrip().endswith("by carol")
    for path, text in first.artifacts.items():
        assert git("show", f"{c3}:{base}{path}", cwd=bare) == text
    assert set(git("ls-tree", "-r", "--name-only", c3, cwd=bare).split()) == files
    entries = history(bare, "dev", "shop")
    assert [e.commit for e in entries] == [c3, c2, c1]
    assert entries[0].set_hash == first.content_hash
    restored = read_set(bare, c3)
    assert restored.content_hash == first.content_hash and restored.parent == second.content_hash
    assert restored.created_by == "carol"
    # rolling back to what is already deployed makes no commit
    assert rollback(bare, "main", "dev", "shop", first.content_hash[:12], "carol") == c3


def test_gitops_keeps_other_apps_and_restores_hand_edits(bare, tmp_path):
    shop = make_set()
    other = build_set("blog", "dev", {"worker": worker()}, resources())
    c1 = commit_set(bare, "main", "dev", shop, "alice", "shop")
    c2 = commit_set(bare, "main", "dev", other, "alice", "blog")
    assert c1 != c2
    # someone edits a manifest by hand: redeploying the same set puts it back
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--branch", "main", str(bare), str(clone)], check=True)
    target = clone / "environments/dev/shop/k8s/worker/deployment.yaml"
    target.write_text("hacked\n")
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "--quiet", "-am", "hand edit", cwd=clone)
    git("push", "--quiet", "origin", "HEAD:main", cwd=clone)
    c3 = commit_set(bare, "main", "dev", shop, "alice", "restore")
    assert git("show", f"{c3}:environments/dev/shop/k8s/worker/deployment.yaml", cwd=bare) == \
        shop.artifacts["k8s/worker/deployment.yaml"]
    # blog untouched
    assert git("show", f"{c3}:environments/dev/blog/deployment-set.json", cwd=bare) == \
        git("show", f"{c2}:environments/dev/blog/deployment-set.json", cwd=bare)
    assert read_set(bare, c2).application == "blog"


def test_gitops_concurrent_commits_are_serialised(bare):
    sets = []
    for i in range(4):
        w = worker(f"ghcr.io/acme/worker:2.0.{i}")
        sets.append(build_set(f"app{i}", "dev", {"worker": w}, resources()))
    results, errors = [], []

    def deploy(s):
        try:
            results.append(commit_set(bare, "main", "dev", s, "alice", "parallel"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deploy, args=(s,)) for s in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert git("rev-list", "--count", "main", cwd=bare).strip() == "4"
    for i in range(4):
        assert len(history(bare, "dev", f"app{i}")) == 1


def test_gitops_errors(bare, tmp_path):
    s = make_set()
    with pytest.raises(GitOpsError, match="not 'prod'"):
        commit_set(bare, "main", "prod", s, "alice", "x")
    with pytest.raises(GitOpsError, match="clone failed"):
        commit_set(tmp_path / "missing.git", "main", "dev", s, "alice", "x")
    with pytest.raises(GitOpsError, match="author"):
        commit_set(bare, "main", "dev", s, "", "x")
    c1 = commit_set(bare, "main", "dev", s, "alice", "x")
    with pytest.raises(GitOpsError, match="not a deployment"):
        rollback(bare, "main", "dev", "shop", "abcdef1234", "alice")
    with pytest.raises(GitOpsError, match="no commit"):
        read_set(bare, "abcdef1234")
    assert read_set(bare, c1[:8]).content_hash == s.content_hash


def test_gitops_retries_when_another_host_moves_the_branch(bare, tmp_path, monkeypatch):
    """Another host (which this host's locks do not hold back) pushes between our clone and our
    push: the rejected push starts over from the new tip, up to PUSH_ATTEMPTS times."""
    commit_set(bare, "main", "dev", make_set(), "alice", "first")
    other = tmp_path / "other-host"
    subprocess.run(["git", "clone", "--quiet", str(bare), str(other)], check=True)
    pushes_by_the_other_host = 0
    moves: list[str] = []
    names = itertools.count()
    real_push = Clone.push

    async def push_after_the_other_host(self):
        if len(moves) < pushes_by_the_other_host:
            git("fetch", "--quiet", "origin", cwd=other)
            git("reset", "--quiet", "--hard", "origin/main", cwd=other)
            (other / f"other-{next(names)}.txt").write_text("theirs\n")
            git("add", ".", cwd=other)
            git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "--quiet", "-m", "theirs", cwd=other)
            git("push", "--quiet", "origin", "HEAD:main", cwd=other)
            moves.append(git("rev-parse", "HEAD", cwd=other).strip())
        return await real_push(self)

    monkeypatch.setattr(Clone, "push", push_after_the_other_host)
    pushes_by_the_other_host = 1
    second = make_set(workloads={"worker": worker("ghcr.io/acme/worker:2.0.1")}, created_by="bob")
    commit = commit_set(bare, "main", "dev", second, "bob", "second")
    assert len(moves) == 1 and git("rev-parse", f"{commit}^", cwd=bare).strip() == moves[0]  # on the new tip
    assert git("show", f"{commit}:other-0.txt", cwd=bare) == "theirs\n"
    assert read_set(bare, commit).content_hash == second.content_hash

    # The branch moves before every attempt: the last rejection is reported.
    moves.clear()
    pushes_by_the_other_host = PUSH_ATTEMPTS
    third = make_set(workloads={"worker": worker("ghcr.io/acme/worker:2.0.2")}, created_by="bob")
    with pytest.raises(GitOpsError, match=r"committing to .* failed: git push to main was rejected \(the branch moved\)"):
        commit_set(bare, "main", "dev", third, "bob", "third")
    assert len(moves) == PUSH_ATTEMPTS
    assert git("rev-parse", "main", cwd=bare).strip() == moves[-1]


async def test_commit_set_from_async_code(bare):
    """The service calls the library from its event loop: commit_set still works (in a thread)."""
    s = make_set()
    commit = commit_set(bare, "main", "dev", s, "alice", "from async")
    assert read_set(bare, commit).content_hash == s.content_hash
