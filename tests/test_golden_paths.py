"""The golden-path catalog against PostgreSQL: the shipped paths, invalid files, versions,
params, real runs through the durable scheduler (git repositories in tmp), the TTL sweeper
of ephemeral environments, the GoldenPathService handlers and the CLI.

The engine here has no specs or resources service: `undeploy-app`'s plan step and the
`undeploy` sub-workflow's steps talk to stand-ins that speak those services' protos
(:class:`SpecsStandIn`, :class:`ResourcesStandIn`), named as such. The real services are
exercised by test_app_delete.py and test_golden_paths_api.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest

from innominatus.engine import catalog_models, ephemeral
from innominatus.engine.catalog import Catalog, content_hash, default_directory, scan_directory, version_key
from innominatus.engine.definition import ParamsError, bind_params
from innominatus.engine.executors import default_registry
from innominatus.engine.goldenpaths_service import GoldenPathServicer, GoldenPaths, _chain
from innominatus.engine.scheduler import Scheduler
from innominatus.engine.v1 import golden_paths_pb2
from innominatus.engine.workflows import WORKFLOWS, builtin_executors
from innominatus.kit import times
from innominatus.kit.db import Database
from innominatus.resources.v1 import resources_pb2
from innominatus.specs.v1 import specs_pb2
from tests.helpers.database import drop_database, fresh_database
from tests.test_cli import FakeGateway, TOKEN

pytestmark = pytest.mark.postgres

SHIPPED = {"deploy-app", "undeploy-app", "ephemeral-env", "db-lifecycle", "onboard-team"}


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
async def database():
    url = fresh_database("goldenpaths")
    db = Database("engine", url)
    await asyncio.to_thread(db.migrate)
    try:
        yield db
    finally:
        await db.close()
        drop_database(url)


@pytest.fixture
def catalog_dir(tmp_path):
    directory = tmp_path / "catalog"
    shutil.copytree(default_directory(), directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return directory


class SpecsStandIn:
    """Stands in for the specs service's engine-facing RPCs PlanUndeploy and FinalizeUndeploy:
    same protos, answers set by the test (an application without a plan is not deployed)."""

    def __init__(self) -> None:
        self.plans: dict[tuple[str, str], specs_pb2.PlanUndeployResponse] = {}
        self.calls: list[tuple] = []

    async def PlanUndeploy(self, request, timeout=None):
        self.calls.append(("PlanUndeploy", request.name, request.environment))
        return self.plans.get((request.name.removeprefix("applications/"), request.environment),
                              specs_pb2.PlanUndeployResponse())

    async def FinalizeUndeploy(self, request, timeout=None):
        self.calls.append(("FinalizeUndeploy", request.name, request.environment, request.requested_by))
        return specs_pb2.FinalizeUndeployResponse(commit="0" * 40, removed_deployments=1)

    def of(self, method: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == method]


class ResourcesStandIn:
    """Stands in for ResourcesService.DeprovisionResource: records the calls; a resource named
    in ``hold`` blocks its call until the event is set (``entered`` says it got there)."""

    def __init__(self) -> None:
        self.calls: list[str] = []  # every attempt
        self.deprovisioned: list[str] = []  # attempts that completed, in order
        self.hold: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}

    async def DeprovisionResource(self, request, timeout=None):
        self.calls.append(request.name)
        if request.name in self.hold:
            self.entered.setdefault(request.name, asyncio.Event()).set()
            await self.hold[request.name].wait()
        self.deprovisioned.append(request.name)
        return resources_pb2.DeprovisionResourceResponse(
            resource=resources_pb2.Resource(name=request.name, state=resources_pb2.RESOURCE_STATE_DELETED))


def executors(workdir: Path):
    """The engine's lookup (service.py): the built-in workflows' step types, then the registry."""
    builtin = builtin_executors(workdir / "data")
    registry = default_registry()

    def lookup(step_type: str):
        if step_type in builtin:
            return builtin[step_type]
        try:
            return registry.get(step_type)
        except Exception:  # noqa: BLE001 - unknown type: the step fails saying so
            return None

    return lookup


class Engine:
    """A catalog, a real scheduler and the servicer, on one fresh database."""

    def __init__(self, db, directory: Path, workdir: Path, *, worker_id: str = "test-worker",
                 lease_seconds: float = 5, specs: SpecsStandIn | None = None,
                 resources: ResourcesStandIn | None = None) -> None:
        self.db = db
        self.specs = specs or SpecsStandIn()
        self.resources = resources or ResourcesStandIn()
        self.catalog = Catalog(db, directory, builtin=WORKFLOWS)
        self.scheduler = Scheduler(db, executors(workdir), worker_id=worker_id, lease_seconds=lease_seconds,
                                   poll_interval=0.05, workflows=WORKFLOWS, workdir=workdir,
                                   services={"specs": self.specs, "resources": self.resources})
        self.scheduler.workflows = _chain(self.catalog, WORKFLOWS)
        self.sweeper = ephemeral.Sweeper(db, self.scheduler, self.catalog, interval=0.1)
        self.paths = GoldenPaths(self.catalog, None)
        self.servicer = GoldenPathServicer(self.paths, self.scheduler)

    async def call(self, method: str, request):
        """A handler inside one transaction, as the kit's audit interceptor runs it."""
        async with self.db.transaction():
            return await getattr(self.servicer, method)(request, None)

    async def run(self, name: str, timeout: float = 60.0, **params):
        response = await self.call("RunGoldenPath", golden_paths_pb2.RunGoldenPathRequest(
            name=f"goldenPaths/{name}", params={k: str(v) for k, v in params.items()}))
        run_id = response.run.name.removeprefix("runs/")
        return response, await self.scheduler.wait(run_id, timeout=timeout, states=("SUCCEEDED", "FAILED", "CANCELLED"))

    async def steps(self, run_id: str) -> dict:
        _run, rows = await self.scheduler.get_run(run_id)
        return {r.step_id: r for r in rows}


@pytest.fixture
async def engine(database, catalog_dir, tmp_path):
    engine = Engine(database, catalog_dir, tmp_path / "work")
    await engine.catalog.load()
    engine.scheduler.start()
    try:
        yield engine
    finally:
        await engine.scheduler.stop()


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def bare_repo(path: Path) -> Path:
    git("init", "-q", "--bare", "--initial-branch=main", str(path))
    return path


def files_on(repo: Path, branch: str = "main") -> set[str]:
    if subprocess.run(["git", "--git-dir", str(repo), "rev-parse", "--verify", "--quiet", branch],
                      capture_output=True).returncode != 0:
        return set()  # the branch has no commit yet
    return set(git("--git-dir", str(repo), "ls-tree", "-r", "--name-only", branch).split())


def show(repo: Path, path: str, branch: str = "main") -> str:
    return git("--git-dir", str(repo), "show", f"{branch}:{path}")


# -- the shipped catalog ----------------------------------------------------------------------


# sha256 of the older versions still shipped, as first published: an engine that stored one
# keeps serving it (other content under that version would be GP-0001).
UNDEPLOY_APP_1_0_0_SHA256 = "c4c490d2059f0f6a43511f83c60e0e1aabc4f00229ea5913716fa4dfcf3af8e1"
PUBLISHED_SHA256 = {
    "undeploy-app-1.0.0.yaml": UNDEPLOY_APP_1_0_0_SHA256,
    "undeploy-app-2.0.0.yaml": "e1bd8f1439d077028ea3f980f529e7bf99902b7a317d4fa9ae2250167b76d803",
    "deploy-app-1.0.0.yaml": "dc18dcf56a69bb38a0d78c1d992691b270609ca90cf4c355771e62fc73107704",
    "ephemeral-env-1.0.0.yaml": "2f803fa7ca15fce337d421cdd1a476f07494b919fc06c0e4e8a494a9bd34d812",
}


def test_the_five_shipped_paths_load_without_findings():
    loaded, invalid = scan_directory(default_directory(), extra_workflows=WORKFLOWS)
    assert invalid == []
    assert {w.name for _f, _t, w in loaded} == SHIPPED
    # <name>.yaml is a path's latest version; an older one kept runnable is <name>-<version>.yaml
    files = {(w.name, w.version): file for file, _t, w in loaded}
    assert files == {**{(n, "1.0.0"): f"{n}.yaml" for n in SHIPPED - {"undeploy-app", "deploy-app", "ephemeral-env"}},
                     ("undeploy-app", "2.1.0"): "undeploy-app.yaml",
                     ("undeploy-app", "2.0.0"): "undeploy-app-2.0.0.yaml",
                     ("undeploy-app", "1.0.0"): "undeploy-app-1.0.0.yaml",
                     ("deploy-app", "1.1.0"): "deploy-app.yaml",
                     ("deploy-app", "1.0.0"): "deploy-app-1.0.0.yaml",
                     ("ephemeral-env", "1.1.0"): "ephemeral-env.yaml",
                     ("ephemeral-env", "1.0.0"): "ephemeral-env-1.0.0.yaml"}
    for file, text, workflow in loaded:
        assert workflow.description and workflow.owner and workflow.tags, file
        assert workflow.params, workflow.name
        if file in PUBLISHED_SHA256:
            assert content_hash(text) == PUBLISHED_SHA256[file], file
    # The paths acting on one application in one environment share its concurrency group with the
    # platform's deploys ("<app>/<environment>"): one of them at a time, oldest first.
    groups = {w.name: w.concurrency_group for f, _t, w in loaded if f == f"{w.name}.yaml"}
    for name in ("undeploy-app", "deploy-app", "ephemeral-env"):
        assert groups[name] == "${params.app}/${params.environment}", name


async def test_a_broken_file_is_reported_with_line_and_column_and_the_rest_load(engine, catalog_dir):
    (catalog_dir / "broken.yaml").write_text(
        "apiVersion: innominatus.dev/v1\nkind: Workflow\nmetadata: {name: broken, version: \"1.0.0\"}\n"
        "spec:\n  steps:\n    - {id: a, type: shel, with: {command: [true]}}\n"
        "    - {id: b, type: shell, depends_on: [zz], with: {command: [true]}}\n")
    (catalog_dir / "not-yaml.yaml").write_text("apiVersion: [unclosed\n")
    state = await engine.catalog.load()
    by_file = {bad.file: bad for bad in state.invalid}
    assert set(by_file) == {"broken.yaml", "not-yaml.yaml"}
    assert by_file["broken.yaml"].name == "broken"
    findings = "\n".join(by_file["broken.yaml"].findings)
    assert "broken.yaml:6:" in findings and "WF-1103" in findings and "did you mean 'shell'" in findings
    assert "broken.yaml:7:" in findings and "WF-1101" in findings
    assert by_file["not-yaml.yaml"].findings[0].startswith("not-yaml.yaml:")
    assert "WF-1000" in by_file["not-yaml.yaml"].findings[0]

    listing = await engine.call("ListGoldenPaths", golden_paths_pb2.ListGoldenPathsRequest())
    assert {p.name for p in listing.golden_paths} == {f"goldenPaths/{n}" for n in SHIPPED}
    assert {b.file for b in listing.invalid} == {"broken.yaml", "not-yaml.yaml"}
    with pytest.raises(Exception) as info:
        await engine.call("GetGoldenPath", golden_paths_pb2.GetGoldenPathRequest(name="broken"))
    assert getattr(info.value, "reason", "") == "GOLDEN_PATH_INVALID" and "broken.yaml:6:" in info.value.message


async def test_versions_are_kept_and_immutable(engine, catalog_dir, database):
    from sqlalchemy import select

    table = catalog_models.golden_path_versions

    async def stored(name):
        async with database.transaction() as s:
            return [(r.version, r.content_hash, r.origin) for r in
                    (await s.execute(select(table).where(table.c.name == name).order_by(table.c.version))).all()]

    first = await stored("onboard-team")
    assert [v for v, _h, _o in first] == ["1.0.0"] and first[0][2] == "catalog:onboard-team.yaml"
    await engine.catalog.load()  # same content: same version, nothing new
    assert await stored("onboard-team") == first

    path = catalog_dir / "onboard-team.yaml"
    original = path.read_text()
    path.write_text(original.replace("Give a new team", "Give each new team"))  # changed, version not bumped
    state = await engine.catalog.load()
    assert [b.file for b in state.invalid] == ["onboard-team.yaml"]
    assert "GP-0001" in state.invalid[0].findings[0] and "bump metadata.version" in state.invalid[0].findings[0]
    workflow, _ = await engine.catalog.get("onboard-team")
    assert workflow.source == original  # the stored version is still served

    path.write_text(original.replace('version: "1.0.0"', 'version: "1.1.0"').replace("Give a new team", "Give each new team"))
    state = await engine.catalog.load()
    assert state.invalid == []
    versions = await stored("onboard-team")
    assert [v for v, _h, _o in versions] == ["1.0.0", "1.1.0"] and versions[0] == first[0]
    latest, all_versions = await engine.catalog.get("onboard-team")
    assert latest.version == "1.1.0" and [v.version for v in all_versions] == ["1.1.0", "1.0.0"]
    old, _ = await engine.catalog.get("onboard-team", "1.0.0")
    assert old.source == original
    with pytest.raises(Exception) as info:
        await engine.catalog.get("onboard-team", "9.9.9")
    assert info.value.reason == "GOLDEN_PATH_VERSION_NOT_FOUND"

    shown = await engine.call("GetGoldenPath", golden_paths_pb2.GetGoldenPathRequest(name="goldenPaths/onboard-team"))
    assert shown.golden_path.version == "1.1.0" and [v.version for v in shown.golden_path.versions] == ["1.1.0", "1.0.0"]
    assert shown.golden_path.source_yaml and len(shown.golden_path.content_hash) == 64
    params = {p.name: p for p in shown.golden_path.params}
    assert params["team"].required and params["team"].type == "string"
    assert params["create_repository"].default_value.bool_value is True
    assert [s.id for s in shown.golden_path.steps] == ["create-repository", "skeleton"]


async def test_publish_a_new_version(engine):
    source = (default_directory() / "undeploy-app.yaml").read_text()
    with pytest.raises(Exception) as info:  # other content under a published version
        await engine.call("PublishGoldenPath", golden_paths_pb2.PublishGoldenPathRequest(
            source_yaml=source.replace("Remove an application", "Take an application")))
    assert info.value.reason == "GOLDEN_PATH_VERSION_EXISTS"
    same = await engine.call("PublishGoldenPath", golden_paths_pb2.PublishGoldenPathRequest(source_yaml=source))
    assert same.created is False
    newer = await engine.call("PublishGoldenPath", golden_paths_pb2.PublishGoldenPathRequest(
        source_yaml=source.replace('version: "2.1.0"', 'version: "2.1.1"')))
    assert newer.created and newer.golden_path.version == "2.1.1"
    assert [v.version for v in newer.golden_path.versions] == ["2.1.1", "2.1.0", "2.0.0", "1.0.0"]
    assert newer.golden_path.versions[0].origin == "api"
    assert newer.golden_path.versions[3].origin == "catalog:undeploy-app-1.0.0.yaml"
    with pytest.raises(Exception) as info:
        await engine.call("PublishGoldenPath", golden_paths_pb2.PublishGoldenPathRequest(source_yaml="kind: Workflow\n"))
    assert info.value.reason == "GOLDEN_PATH_INVALID" and info.value.violations


def test_version_order():
    assert sorted(["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9"], key=version_key) == ["0.9", "1.2.0-rc.1", "1.2.0", "1.10.0"]


# -- params -----------------------------------------------------------------------------------


def _shipped(name: str):
    loaded, _ = scan_directory(default_directory(), extra_workflows=WORKFLOWS)
    return next(w for _f, _t, w in loaded if w.name == name)


def test_bind_params_defaults_validation_and_unknown_params():
    deploy = _shipped("deploy-app")
    bound = bind_params(deploy, {"app": "shop", "image": "r.example/shop:1.2", "gitops_repo": "/srv/g.git",
                                 "replicas": "3"}, coerce=True)
    assert bound == {"app": "shop", "environment": "development", "image": "r.example/shop:1.2", "replicas": 3,
                     "port": 8080, "gitops_repo": "/srv/g.git", "branch": "main"}
    with pytest.raises(ParamsError) as info:
        bind_params(deploy, {"app": "Shop!", "replicas": "0", "colour": "red"}, coerce=True)
    problems = dict(info.value.problems)
    assert set(problems) == {"app", "replicas", "colour", "image", "gitops_repo"}
    assert "unknown param" in problems["colour"] and "required" in problems["image"]
    assert {v.field for v in info.value.violations} == {f"params.{n}" for n in problems}

    db = _shipped("db-lifecycle")
    with pytest.raises(ParamsError) as info:
        bind_params(db, {"app": "shop", "action": "drop"})
    assert dict(info.value.problems)["action"].startswith("'drop' is not one of")

    env = _shipped("ephemeral-env")
    params = bind_params(env, {"app": "shop", "image": "shop:1", "gitops_repo": "/g"})
    assert params["ttl"] == "1h" and ephemeral.ttl_of(env, params) == 3600
    with pytest.raises(ParamsError) as info:
        ephemeral.ttl_of(env, {**params, "ttl": "25h"})
    assert "longer than the maximum 24h" in dict(info.value.problems)["ttl"]


async def test_run_rejects_bad_params_with_one_violation_per_param(engine):
    with pytest.raises(ParamsError) as info:
        await engine.call("RunGoldenPath", golden_paths_pb2.RunGoldenPathRequest(
            name="goldenPaths/onboard-team", params={"team": "Bad Name", "owner": "not-an-email", "extra": "1"}))
    assert {v.field for v in info.value.violations} == {"params.team", "params.owner", "params.extra",
                                                        "params.repository"}
    with pytest.raises(Exception) as info:
        await engine.call("RunGoldenPath", golden_paths_pb2.RunGoldenPathRequest(name="goldenPaths/nope"))
    assert info.value.reason == "GOLDEN_PATH_NOT_FOUND"


# -- runs -------------------------------------------------------------------------------------


async def test_onboard_team_end_to_end_into_a_git_repository(engine, tmp_path):
    repo = tmp_path / "teams" / "payments.git"  # does not exist: the path creates it
    response, run = await engine.run("onboard-team", team="payments", owner="lead@payments.example",
                                     repository=str(repo), environments="[dev, prod]")
    assert run.state == "SUCCEEDED", run.error
    assert response.run.workflow == "onboard-team" and response.run.application == "payments"
    assert files_on(repo) == {"README.md", "CODEOWNERS", "score.yaml", ".innominatus/team.yaml"}
    assert "# Team payments" in show(repo, "README.md")
    assert show(repo, "CODEOWNERS").strip() == "* lead@payments.example"
    assert "environments: [\"dev\",\"prod\"]" in show(repo, ".innominatus/team.yaml")
    steps = await engine.steps(run.id)
    commit = steps["skeleton"].outputs["commit"]
    assert git("--git-dir", str(repo), "rev-parse", "main").strip() == commit

    _again, rerun = await engine.run("onboard-team", team="payments", owner="lead@payments.example",
                                     repository=str(repo), environments="[dev, prod]")
    assert rerun.state == "SUCCEEDED"
    assert (await engine.steps(rerun.id))["skeleton"].outputs["changed"] is False  # idempotent
    assert git("--git-dir", str(repo), "rev-list", "--count", "main").strip() == "1"


async def test_deploy_app_commits_to_gitops_and_undeploy_removes_it(engine, tmp_path):
    repo = bare_repo(tmp_path / "gitops.git")
    _r, run = await engine.run("deploy-app", app="shop", image="registry.example/shop:1.4.2", gitops_repo=str(repo),
                               replicas=3)
    assert run.state == "SUCCEEDED", run.error
    steps = await engine.steps(run.id)
    assert steps["approve"].state == "SKIPPED"  # not production: no approval
    assert steps["verify"].outputs["path"] == "apps/shop/development/deployment.yaml"
    manifest = show(repo, "apps/shop/development/deployment.yaml")
    assert "image: \"registry.example/shop:1.4.2\"" in manifest and "replicas: 3" in manifest

    _r, bad = await engine.run("deploy-app", app="shop", image="registry.example/shop:latest", gitops_repo=str(repo))
    assert bad.state == "FAILED" and "guardrails" in bad.error

    _r, gone = await engine.run("undeploy-app", app="shop", gitops_repo=str(repo))
    assert gone.state == "SUCCEEDED", gone.error
    assert "apps/shop/development/deployment.yaml" not in files_on(repo)
    # deployed by deploy-app, not by the platform: the plan is empty, the sub-workflow skipped
    steps = await engine.steps(gone.id)
    assert steps["plan"].outputs["deployed"] is False and steps["plan"].outputs["claims"] == []
    assert steps["undeploy"].state == "SKIPPED" and steps["undeploy"].child_run_id is None
    assert steps["approve"].state == "SKIPPED" and steps["nothing-to-remove"].state == "SKIPPED"
    assert steps["verify"].state == "SUCCEEDED"
    assert engine.specs.calls == [("PlanUndeploy", "applications/shop", "development")]
    assert engine.resources.calls == []

    # version 1.0.0 (GitOps only, no plan) stays runnable
    _r, run = await engine.run("deploy-app", app="shop", image="registry.example/shop:1.4.3", gitops_repo=str(repo))
    assert run.state == "SUCCEEDED", run.error
    response = await engine.call("RunGoldenPath", golden_paths_pb2.RunGoldenPathRequest(
        name="goldenPaths/undeploy-app", version="1.0.0", params={"app": "shop", "gitops_repo": str(repo)}))
    assert response.version == "1.0.0"
    old = await engine.scheduler.wait(response.run.name.removeprefix("runs/"), timeout=60)
    assert old.state == "SUCCEEDED", old.error
    assert "apps/shop/development/deployment.yaml" not in files_on(repo)
    assert len(engine.specs.calls) == 1


async def test_deploy_app_to_production_waits_for_an_approval(engine, tmp_path):
    repo = bare_repo(tmp_path / "gitops.git")
    response = await engine.call("RunGoldenPath", golden_paths_pb2.RunGoldenPathRequest(
        name="deploy-app", params={"app": "shop", "image": "shop:2.0.0", "gitops_repo": str(repo),
                                   "environment": "production"}))
    run_id = response.run.name.removeprefix("runs/")
    for _ in range(200):
        if (await engine.steps(run_id))["approve"].state == "WAITING_APPROVAL":
            break
        await asyncio.sleep(0.05)
    assert (await engine.steps(run_id))["approve"].state == "WAITING_APPROVAL"
    assert files_on(repo) == set()  # nothing committed before the approval
    await engine.scheduler.approve(run_id, "approve", "alice")
    run = await engine.scheduler.wait(run_id, timeout=60)
    assert run.state == "SUCCEEDED", run.error
    assert "apps/shop/production/deployment.yaml" in files_on(repo)


async def test_db_lifecycle_needs_the_resources_service_and_gates_deletes(engine):
    # This engine runs without a resources service: the provisioning step says so clearly.
    del engine.scheduler.services["resources"]
    _r, run = await engine.run("db-lifecycle", resource="resources/abc123", action="create")
    assert run.state == "FAILED"
    steps = await engine.steps(run.id)
    assert steps["create"].error_kind in ("not_wired", "unavailable"), steps["create"].error
    assert steps["delete"].state in ("SKIPPED", "CANCELLED")
    # A delete waits for an approval before anything is deprovisioned.
    response = await engine.call("RunGoldenPath", golden_paths_pb2.RunGoldenPathRequest(
        name="goldenPaths/db-lifecycle", params={"resource": "resources/abc123", "action": "delete"}))
    run_id = response.run.name.removeprefix("runs/")
    for _ in range(200):
        steps = await engine.steps(run_id)
        if steps["approve-delete"].state == "WAITING_APPROVAL":
            break
        await asyncio.sleep(0.05)
    assert steps["approve-delete"].state == "WAITING_APPROVAL"
    assert steps["delete"].state == "PENDING"


# -- ephemeral environments -------------------------------------------------------------------


async def test_ephemeral_env_is_torn_down_when_its_ttl_passes(engine, tmp_path):
    repo = bare_repo(tmp_path / "gitops.git")
    response, run = await engine.run("ephemeral-env", app="shop", environment="pr-7", image="shop:1.0.0",
                                     gitops_repo=str(repo), ttl="30m")
    assert run.state == "SUCCEEDED", run.error
    assert response.HasField("expire_time")
    expires = response.expire_time.ToDatetime(tzinfo=dt.timezone.utc)
    assert abs((expires - times.utc(run.created_at)) - dt.timedelta(minutes=30)) < dt.timedelta(seconds=5)
    assert "apps/shop/pr-7/deployment.yaml" in files_on(repo)
    [row] = await ephemeral.environments(engine.db, run.id)
    assert row.state == "active" and row.teardown == "undeploy-app" and row.params["ttl"] == "30m"
    assert times.utc(row.expires_at) == expires

    assert await engine.sweeper.sweep() == []  # not expired yet
    # The TTL passes: its expiry, moved into the past where a real TTL would have taken it (a
    # short real TTL would race the run itself on a slow machine; the background sweeper's test
    # below waits out a real one).
    async with engine.db.transaction() as session:
        await session.execute(ephemeral.envs_t.update().where(ephemeral.envs_t.c.run_id == run.id)
                              .values(expires_at=times.now() - dt.timedelta(seconds=1)))
    # A new sweeper, as in an engine restarted after the TTL: the expiry is in the database.
    restarted = ephemeral.Sweeper(engine.db, engine.scheduler, engine.catalog)
    [teardown_id] = await restarted.sweep()
    assert await engine.sweeper.sweep() == []  # started once
    teardown = await engine.scheduler.wait(teardown_id, timeout=60)
    assert teardown.state == "SUCCEEDED", teardown.error
    assert teardown.workflow == "undeploy-app" and teardown.creator == "engine:ephemeral-ttl"
    assert teardown.inputs == {"app": "shop", "environment": "pr-7", "gitops_repo": str(repo), "branch": "main"}
    assert "apps/shop/pr-7/deployment.yaml" not in files_on(repo)
    steps = await engine.steps(teardown_id)
    assert steps["undeploy"].state == "SKIPPED" and steps["remove"].state == "SUCCEEDED"  # nothing platform-deployed
    assert engine.specs.calls == [("PlanUndeploy", "applications/shop", "pr-7")] and engine.resources.calls == []
    await engine.sweeper.sweep()
    [row] = await ephemeral.environments(engine.db, run.id)
    assert row.state == "torn_down" and row.teardown_run_id == teardown_id


async def test_the_background_sweeper_starts_the_teardown(engine, tmp_path):
    repo = bare_repo(tmp_path / "gitops.git")
    _r, run = await engine.run("ephemeral-env", app="web", image="web:1.0.0", gitops_repo=str(repo), ttl="1s")
    assert run.state == "SUCCEEDED", run.error
    engine.sweeper.start()
    try:
        for _ in range(200):
            [row] = await ephemeral.environments(engine.db, run.id)
            if row.state == "torn_down":
                break
            await asyncio.sleep(0.1)
    finally:
        await engine.sweeper.stop()
    assert row.state == "torn_down"
    assert "apps/web/preview/deployment.yaml" not in files_on(repo)


# -- undeploy-app: the platform's plan, the `undeploy` sub-workflow -----------------------------


def plan_of(*claims, kind=specs_pb2.ENVIRONMENT_TYPE_DEVELOPMENT) -> specs_pb2.PlanUndeployResponse:
    plan = specs_pb2.PlanUndeployResponse(deployed=True, environment_type=kind, deployments=["deployments/d1"])
    for ref, resource, depends_on in claims:
        plan.claims.add(ref=ref, resource=resource, depends_on=depends_on)
    return plan


# app's params use db's outputs; cache is independent
CLAIMS = (("app", "resources/a", ["db"]), ("cache", "resources/c", []), ("db", "resources/d", []))
CHILD_STEPS = ["deprovision-app", "deprovision-cache", "deprovision-db", "remove"]


async def start(engine, application: str = "", version: str = "", **params) -> str:
    response = await engine.call("RunGoldenPath", golden_paths_pb2.RunGoldenPathRequest(
        name="goldenPaths/undeploy-app", params=params, application=application, version=version))
    return response.run.name.removeprefix("runs/")


async def child_of(engine, run_id: str):
    child_id = (await engine.steps(run_id))["undeploy"].child_run_id
    child, rows = await engine.scheduler.get_run(child_id)
    return child, {r.step_id: r for r in rows}


async def step_reaches(engine, run_id: str, step_id: str, state: str):
    for _ in range(400):
        steps = await engine.steps(run_id)
        if steps[step_id].state == state:
            return steps
        await asyncio.sleep(0.05)
    raise AssertionError(f"{step_id} of {run_id} is {steps[step_id].state}, not {state}")


async def test_undeploy_app_deprovisions_what_the_platform_planned_in_reverse_dependency_order(engine):
    engine.specs.plans[("shop", "dev")] = plan_of(*CLAIMS)
    _r, run = await engine.run("undeploy-app", app="shop", environment="dev")
    assert run.state == "SUCCEEDED", run.error
    steps = await engine.steps(run.id)
    assert [steps[s].state for s in ("plan", "nothing-to-remove", "approve", "undeploy", "remove", "verify")] == \
        ["SUCCEEDED", "SKIPPED", "SKIPPED", "SUCCEEDED", "SKIPPED", "SKIPPED"]

    child, rows = await child_of(engine, run.id)
    assert child.workflow == "undeploy" and child.parent_run_id == run.id and child.state == "SUCCEEDED"
    assert (child.application, child.environment) == ("shop", "dev")
    assert list(rows) == CHILD_STEPS and all(r.state == "SUCCEEDED" for r in rows.values())
    # built from the child's inputs and stored with it (not the input-independent shape)
    stored = {s["id"]: s for s in child.definition["steps"]}
    assert list(stored) == CHILD_STEPS
    assert stored["deprovision-db"]["depends_on"] == ["deprovision-app"]  # db only after what uses it
    assert stored["deprovision-app"]["depends_on"] == [] and stored["deprovision-cache"]["depends_on"] == []
    assert child.inputs["claims"] == [{"ref": r, "resource": n, "depends_on": d} for r, n, d in CLAIMS]

    done = engine.resources.deprovisioned
    assert sorted(done) == ["resources/a", "resources/c", "resources/d"]
    assert done.index("resources/d") > done.index("resources/a")
    assert rows["deprovision-db"].started_at >= rows["deprovision-app"].ended_at
    assert engine.specs.of("FinalizeUndeploy") == [("FinalizeUndeploy", "applications/shop", "dev", "")]
    assert rows["remove"].started_at >= max(rows[s].ended_at for s in CHILD_STEPS[:3])


async def test_undeploy_app_in_a_production_environment_waits_for_an_approval(engine):
    # "live" is production by its type (the plan), not by its name
    engine.specs.plans[("shop", "live")] = plan_of(*CLAIMS, kind=specs_pb2.ENVIRONMENT_TYPE_PRODUCTION)
    run_id = await start(engine, app="shop", environment="live")
    steps = await step_reaches(engine, run_id, "approve", "WAITING_APPROVAL")
    await asyncio.sleep(0.3)
    steps = await engine.steps(run_id)
    assert steps["undeploy"].state == "PENDING" and steps["undeploy"].child_run_id is None
    assert engine.resources.calls == [] and engine.specs.of("FinalizeUndeploy") == []
    await engine.scheduler.approve(run_id, "approve", "platform-alice")
    run = await engine.scheduler.wait(run_id, timeout=60)
    assert run.state == "SUCCEEDED", run.error
    assert sorted(engine.resources.deprovisioned) == ["resources/a", "resources/c", "resources/d"]

    # rejected: nothing is deprovisioned
    engine.specs.plans[("web", "live")] = plan_of(("db", "resources/w", []), kind=specs_pb2.ENVIRONMENT_TYPE_PRODUCTION)
    run_id = await start(engine, app="web", environment="live")
    await step_reaches(engine, run_id, "approve", "WAITING_APPROVAL")
    await engine.scheduler.reject(run_id, "approve", "platform-alice", "not today")
    run = await engine.scheduler.wait(run_id, timeout=60)
    assert run.state == "FAILED" and "rejected by platform-alice" in run.error
    assert "resources/w" not in engine.resources.calls


async def test_undeploy_app_with_nothing_to_remove_fails_saying_so(engine):
    _r, run = await engine.run("undeploy-app", app="ghost", environment="dev")
    assert run.state == "FAILED"
    steps = await engine.steps(run.id)
    assert steps["nothing-to-remove"].state == "FAILED"
    assert "not deployed to dev" in steps["nothing-to-remove"].error and "gitops_repo" in steps["nothing-to-remove"].error
    assert steps["undeploy"].state in ("SKIPPED", "CANCELLED") and engine.resources.calls == []


async def _runs(db) -> int:
    from sqlalchemy import func, select

    from innominatus.engine import models

    async with db.transaction() as s:
        return (await s.execute(select(func.count()).select_from(models.runs))).scalar_one()


VICTIM = [{"ref": "db", "resource": "resources/victim", "depends_on": []}]


async def test_claims_given_as_params_are_refused_and_nothing_is_deprovisioned(engine):
    engine.specs.plans[("shop", "development")] = plan_of(("db", "resources/d", []))
    values = golden_paths_pb2.RunGoldenPathRequest(name="goldenPaths/undeploy-app", params={"app": "shop"})
    values.param_values.update({"claims": VICTIM})
    with pytest.raises(ParamsError) as info:
        await engine.call("RunGoldenPath", values)
    assert "params.claims" in {v.field for v in info.value.violations}
    assert "unknown param" in dict(info.value.problems)["claims"]
    await asyncio.sleep(0.3)
    assert await _runs(engine.db) == 0 and engine.specs.calls == [] and engine.resources.calls == []


PUBLISHED = """\
apiVersion: innominatus.dev/v1
kind: Workflow
metadata: {{name: {name}, version: "1.0.0", description: a path that names its own claims, owner: someone, tags: [test]}}
spec:
  params:
    app: {{type: string, required: true}}
    environment: {{type: string, default: development}}
    claims: {{type: array}}
  steps:
{steps}"""
PLAN_STEP = ("    - {id: plan, type: undeploy.plan, with: {application: '${params.app}', "
             "environment: '${params.environment}'}OUTPUTS}\n")
SUB_STEP = "    - {id: undeploy, type: workflow, uses: USES, DEPENDS with: {claims: 'CLAIMS'}}\n"


@pytest.mark.parametrize("name, steps, kind", [
    ("literal-claims", SUB_STEP.replace("USES", "undeploy").replace("DEPENDS ", "")
     .replace("CLAIMS", "${params.claims}"), "untrusted_inputs"),
    ("claims-beside-a-plan", PLAN_STEP.replace("OUTPUTS", "") + SUB_STEP.replace("USES", "undeploy")
     .replace("DEPENDS", "depends_on: [plan],").replace("CLAIMS", "${params.claims}"), "untrusted_inputs"),
    ("plan-outputs-overwritten", PLAN_STEP.replace("OUTPUTS", ", outputs: {claims: 'params.claims'}")
     + SUB_STEP.replace("USES", "undeploy").replace("DEPENDS", "depends_on: [plan],")
     .replace("CLAIMS", "${steps.plan.outputs.claims}"), "untrusted_inputs"),
    ("uses-deploy", SUB_STEP.replace("USES", "deploy").replace("DEPENDS ", "").replace("CLAIMS", "${params.claims}"),
     "builtin_workflow"),
], ids=["literal-claims", "claims-beside-a-plan", "plan-outputs-overwritten", "uses-deploy"])
async def test_a_path_cannot_hand_the_undeploy_sub_workflow_claims_of_its_own(engine, name, steps, kind):
    # Paths are published by platform engineers; still, the engine builds a built-in child only
    # from what the platform planned for the run's own application.
    engine.specs.plans[("shop", "development")] = plan_of(("db", "resources/d", []))
    published = await engine.call("PublishGoldenPath", golden_paths_pb2.PublishGoldenPathRequest(
        source_yaml=PUBLISHED.format(name=name, steps=steps)))
    assert published.created
    request = golden_paths_pb2.RunGoldenPathRequest(name=f"goldenPaths/{name}", params={"app": "shop"})
    request.param_values.update({"claims": VICTIM})
    response = await engine.call("RunGoldenPath", request)
    run = await engine.scheduler.wait(response.run.name.removeprefix("runs/"), timeout=60)
    assert run.state == "FAILED"
    step = (await engine.steps(run.id))["undeploy"]
    assert step.state == "FAILED" and step.error_kind == kind, step.error
    assert step.child_run_id is None and await _runs(engine.db) == 1
    assert engine.resources.calls == [] and engine.specs.of("FinalizeUndeploy") == []


async def test_the_plan_of_another_application_is_refused(engine):
    # The run is for application "billing" but the plan (params.app) is shop's: its claims would
    # be deprovisioned and billing's directory removed. Refused before any child exists.
    engine.specs.plans[("shop", "development")] = plan_of(("db", "resources/d", []))
    run_id = await start(engine, application="billing", app="shop")
    run = await engine.scheduler.wait(run_id, timeout=60)
    assert run.state == "FAILED" and run.application == "billing"
    step = (await engine.steps(run_id))["undeploy"]
    assert step.error_kind == "untrusted_inputs" and "'billing'" in step.error
    assert engine.resources.calls == [] and engine.specs.of("FinalizeUndeploy") == []


async def test_a_resumed_run_keeps_its_childs_steps(database, catalog_dir, tmp_path):
    specs, resources = SpecsStandIn(), ResourcesStandIn()
    specs.plans[("shop", "dev")] = plan_of(*CLAIMS)
    release = resources.hold["resources/a"] = asyncio.Event()
    entered = resources.entered["resources/a"] = asyncio.Event()
    # a short lease, so the second worker takes over soon; 3 s (renewed every 1 s) so that a loaded
    # machine stalling this one for a moment does not lose it before the "crash"
    first = Engine(database, catalog_dir, tmp_path / "work-1", worker_id="crashing-worker", lease_seconds=3,
                   specs=specs, resources=resources)
    await first.catalog.load()
    first.scheduler.start()
    run_id = await start(first, app="shop", environment="dev")
    await asyncio.wait_for(entered.wait(), timeout=30)  # the child is deprovisioning `app`
    for _ in range(400):  # ... and `cache`, independent of it, is done and committed
        _child, rows = await child_of(first, run_id)
        if rows["deprovision-cache"].state == "SUCCEEDED":
            break
        await asyncio.sleep(0.05)

    # The worker dies mid-step: its tasks end, nothing is committed or released.
    tasks = [*first.scheduler._tasks, *first.scheduler._driver_tasks]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    child, rows = await child_of(first, run_id)
    assert child.lease_owner == "crashing-worker" and rows["deprovision-app"].state == "RUNNING"
    key = rows["deprovision-app"].idempotency_key
    release.set()

    # Another worker that cannot build `undeploy` at all: it can only run what the child stored.
    second = Engine(database, catalog_dir, tmp_path / "work-2", worker_id="second-worker", specs=specs,
                    resources=resources)
    second.scheduler.builtins = None
    second.scheduler.workflows = _chain(second.catalog, {})
    await second.catalog.load()
    second.scheduler.start()
    try:
        run = await second.scheduler.wait(run_id, timeout=60)
    finally:
        await second.scheduler.stop()
    assert run.state == "SUCCEEDED", run.error
    child, rows = await child_of(second, run_id)
    assert child.state == "SUCCEEDED" and list(rows) == CHILD_STEPS
    assert rows["deprovision-app"].attempts == 2 and rows["deprovision-app"].idempotency_key == key
    assert "run.resumed" in {e["kind"] for e in await second.scheduler.events(child.id)}
    # `app` was tried twice (the interrupted attempt, then the retry); `cache`, committed before
    # the crash, never ran again; each resource was deprovisioned once, db after app
    assert rows["deprovision-cache"].attempts == 1
    assert resources.calls.count("resources/a") == 2
    assert sorted(resources.deprovisioned) == ["resources/a", "resources/c", "resources/d"]
    assert resources.deprovisioned.index("resources/d") > resources.deprovisioned.index("resources/a")
    assert len(specs.of("FinalizeUndeploy")) == 1


# -- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path, monkeypatch):
    server = FakeGateway()
    server.thread.start()
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("INNOMINATUS_SERVER", server.url)
    monkeypatch.setenv("INNOMINATUS_TOKEN", TOKEN)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


PATH_JSON = {
    "name": "goldenPaths/deploy-app", "version": "1.0.0", "description": "Deploy an application", "owner": "team-platform",
    "tags": ["deploy", "gitops"],
    "params": [{"name": "app", "type": "string", "required": True},
               {"name": "replicas", "type": "integer", "defaultValue": 2}],
    "steps": [{"id": "render", "type": "shell"}, {"id": "approve", "type": "approval", "dependsOn": ["render"],
                                                  "condition": "params.environment == 'production'"}],
    "versions": [{"version": "1.0.0", "contentHash": "ab" * 32, "origin": "catalog:deploy-app.yaml"}],
}


def test_cli_goldenpaths_list_show_run(gateway, capsys):
    from innominatus.cli.main import main

    gateway.ok("GET", "/api/v1/goldenPaths", {"goldenPaths": [PATH_JSON], "invalid": [
        {"file": "broken.yaml", "name": "broken", "findings": ["broken.yaml:6:22: error WF-1103: unknown step type"]}]})
    assert main(["goldenpaths", "list"]) == 0
    out, err = capsys.readouterr()
    assert "deploy-app" in out and "1.0.0" in out and "team-platform" in out
    assert "broken.yaml:6:22: error WF-1103" in err

    gateway.ok("GET", "/api/v1/goldenPaths/deploy-app", {"goldenPath": PATH_JSON})
    assert main(["goldenpaths", "show", "deploy-app", "--version", "1.0.0"]) == 0
    out = capsys.readouterr().out
    assert "replicas" in out and "integer" in out and "params.environment == 'production'" in out
    assert gateway.last("GET", "/api/v1/goldenPaths/deploy-app")["query"] == {"version": "1.0.0"}

    run = {"name": "runs/r9", "workflow": "deploy-app", "state": "RUN_STATE_PENDING"}
    gateway.ok("POST", "/api/v1/goldenPaths/deploy-app:run", {"run": run, "version": "1.0.0"})
    gateway.routes[("GET", "/api/v1/runs/r9")] = [
        (200, {"run": {**run, "state": "RUN_STATE_RUNNING"}}, "application/json"),
        (200, {"run": {**run, "state": "RUN_STATE_SUCCEEDED"}}, "application/json")]
    code = main(["goldenpaths", "run", "deploy-app", "--param", "app=shop", "-p", "replicas=3", "--version", "1.0.0",
                 "--env", "dev", "--wait", "--interval", "0.01"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    body = gateway.last("POST", "/api/v1/goldenPaths/deploy-app:run")["body"]
    assert body["params"] == {"app": "shop", "replicas": "3"} and body["version"] == "1.0.0"
    assert body["environment"] == "dev" and body["requestId"]
    assert "runs/r9" in captured.out and "SUCCEEDED" in captured.out

    assert main(["goldenpaths", "run", "deploy-app", "--param", "novalue"]) == 2
