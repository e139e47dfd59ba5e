"""The wheel users install: only the ``innominatus`` package, with the data files it needs
at run time (type stubs, migrations, the Score schema, the policies) and its console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES_WITH_MIGRATIONS = ("audit", "engine", "identity", "resources", "specs")


_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".ci-cache", ".pytest_cache", ".hypothesis", ".innominatus", "build", "dist", "*.egg-info", "__pycache__"
)


def _build(out: Path) -> Path:
    # Build from a copy of the source tree: an in-tree build would leave build/ and
    # *.egg-info behind in the checkout, and a stale build/ there could leak into the wheel.
    source = out / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out)]
    attempts = [[*base, "--no-build-isolation", str(source)], [*base, str(source)]]
    errors = []
    for command in attempts:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheels = sorted(out.glob("innominatus-*.whl"))
        if done.returncode == 0 and wheels:
            return wheels[-1]
        errors.append(f"{' '.join(command[3:])}: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    pytest.fail("could not build the wheel:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def names(wheel) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def dist_info(names) -> str:
    found = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    assert len(found) == 1, found
    return found.pop()


def test_only_the_innominatus_package_is_installed(names, dist_info):
    top_level = {n.split("/", 1)[0] for n in names}
    assert top_level == {"innominatus", dist_info}, sorted(top_level)
    assert not any(n.startswith("services/") for n in names)
    # The service packages are mapped under innominatus.*
    for package in ("kit", "cli", "gateway", "common", *SERVICES_WITH_MIGRATIONS):
        assert f"innominatus/{package}/__init__.py" in names, package


def test_data_files_needed_at_run_time_are_in_the_wheel(names):
    assert "innominatus/specs/v1/specs_pb2.pyi" in names
    assert "innominatus/specs/v1/specs_pb2.py" in names
    assert "innominatus/specs/score_v1b1.schema.yaml" in names


def test_each_services_migrations_are_in_the_wheel(names):
    for service in SERVICES_WITH_MIGRATIONS:
        assert f"innominatus/{service}/migrations/env.py" in names, service
        assert any(
            n.startswith(f"innominatus/{service}/migrations/versions/") and n.endswith(".py") for n in names
        ), f"{service}: no migration revisions in the wheel"


def test_console_script_is_declared(wheel, dist_info):
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    lines = [line.strip() for line in entry_points.splitlines()]
    section = lines.index("[console_scripts]")
    scripts = {}
    for line in lines[section + 1 :]:
        if line.startswith("["):
            break
        if "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            scripts[key] = value
    assert scripts.get("innominatus") == "innominatus.cli.main:main"


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked as site-packages would hold it, away from the checkout."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def _installed_env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install of the checkout
    return env


def test_the_installed_wheel_migrates_every_service(installed, tmp_path):
    data = tmp_path / "data"
    env = {**_installed_env(installed), "INNOMINATUS_DATA_DIR": str(data)}
    probe = "import sys, innominatus.kit.migrate as m; assert m.__file__.startswith(sys.argv[1]), m.__file__"
    where = subprocess.run([sys.executable, "-c", probe, str(installed)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr[-1500:]
    done = subprocess.run(
        [sys.executable, "-m", "innominatus.cli.main", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for service in SERVICES_WITH_MIGRATIONS:
        assert f"{service}: migrated" in done.stdout, done.stdout
        assert (data / f"{service}.db").is_file(), service


def test_the_installed_wheel_finds_its_policies(names, installed, tmp_path):
    """Installed (not the editable checkout), the package must find and load the Rego policies."""
    assert any(n.endswith(".rego") for n in names), "no .rego file in the wheel"
    site = installed
    env = _installed_env(site)
    # The default engine must load them and answer (a deny is an answer; "unavailable" is not).
    probe = """
import asyncio, sys
import innominatus.kit.policy as p
assert p.__file__.startswith(sys.argv[1]), p.__file__
d = p.default_policy_dir()
print(d)
assert d.is_dir() and any(d.rglob("*.rego")), "no policies there"

async def decide():
    engine = p.make_policy_engine(None)
    try:
        return await engine.decide({
            "subject": {"type": "user", "name": "users/v", "username": "v", "roles": ["viewer"], "teams": []},
            "peer": {"service": "gateway", "spiffe_id": "spiffe://innominatus.local/service/gateway"},
            "method": "/innominatus.specs.v1.SpecsService/CreateDeployment",
            "permission": "deployments.create",
            "request": {},
            "resource": {"type": "deployment", "name": "", "environment": "dev", "application": ""},
        })
    finally:
        await engine.close()

decision = asyncio.run(decide())
assert decision.allow is False and decision.reasons, decision
"""
    done = subprocess.run(
        [sys.executable, "-c", probe, str(site)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert done.returncode == 0, f"policy dir {done.stdout.strip()!r} missing or empty; {done.stderr[-1500:]}"
