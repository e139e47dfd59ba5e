"""The policy gate: Rego in policies/, evaluated by a real OPA sidecar and by regopy.

Needs the opa binary ($INNOMINATUS_OPA_BIN, else `opa` on PATH). When it is missing
these tests FAIL (they never skip): the gate is security-critical.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the root
    sys.path.insert(0, str(REPO_ROOT))

from innominatus.kit.policy import (  # noqa: E402
    Decision,
    EmbeddedRegoPolicyEngine,
    OpaSidecarPolicyEngine,
    PolicyEngine,
    PolicyEngineUnavailable,
    default_policy_dir,
    make_policy_engine,
)
from tests.helpers.opa import OpaBinaryNotFound, OpaServer, find_opa_binary, free_port  # noqa: E402

POLICY_DIR = REPO_ROOT / "policies"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "policy_decisions.yaml"
CASES = YAML(typ="safe").load(FIXTURES.read_text(encoding="utf-8"))["cases"]


def _opa_binary() -> str:
    try:
        return find_opa_binary()
    except OpaBinaryNotFound as exc:
        pytest.fail(str(exc), pytrace=False)


def _opa_server(policy_dir: Path) -> OpaServer:
    _opa_binary()
    return OpaServer(policy_dir)


@pytest.fixture(scope="module")
def opa_server():
    with _opa_server(POLICY_DIR) as server:
        yield server


@pytest.fixture
async def opa_engine(opa_server):
    engine = OpaSidecarPolicyEngine(opa_server.url)
    yield engine
    await engine.close()


@pytest.fixture(scope="module")
def embedded_engine():
    return EmbeddedRegoPolicyEngine(POLICY_DIR)


def _write(dir_: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = dir_ / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return dir_


# ---------------------------------------------------------------------------
# The decision table
# ---------------------------------------------------------------------------


def test_fixture_table_covers_the_contract():
    assert len(CASES) >= 20
    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names), "case names must be unique"
    roles = {r for c in CASES for r in ((c["input"].get("subject") or {}).get("roles") or [])}
    assert {"admin", "platform-engineer", "developer", "viewer"} <= roles
    assert any(r not in {"admin", "platform-engineer", "developer", "viewer"} for r in roles), "unknown role"
    assert any((c["input"].get("subject") or {}).get("type") == "service" for c in CASES)
    assert any("subject" not in c["input"] for c in CASES), "missing subject"
    assert any(
        c["input"].get("permission") == "audit.append" and not c["allow"] for c in CASES
    ), "audit.append misuse"
    assert any((c["input"].get("peer") or {}).get("service") == "specs" for c in CASES)
    for case in CASES:
        assert isinstance(case["allow"], bool), case["name"]
        if not case["allow"]:
            assert case.get("reason"), f"deny case {case['name']!r} needs an expected reason"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_both_engines_agree_with_fixture(case, opa_engine, embedded_engine):
    from_opa = await opa_engine.decide(case["input"])
    embedded = await embedded_engine.decide(case["input"])

    for decision, engine in ((from_opa, "opa-sidecar"), (embedded, "embedded-rego")):
        assert isinstance(decision, Decision)
        assert decision.engine == engine
        assert uuid.UUID(decision.decision_id).version == 4
        assert decision.allow is case["allow"], f"{engine}: {decision.reasons}"
        assert isinstance(decision.reasons, tuple)
        if case["allow"]:
            assert decision.reasons == ()
        else:
            assert any(case["reason"] in r for r in decision.reasons), f"{engine}: {decision.reasons}"
    assert from_opa.reasons == embedded.reasons
    assert from_opa.decision_id != embedded.decision_id


async def test_decision_ids_are_fresh_per_decision(opa_engine, embedded_engine):
    inp = CASES[0]["input"]
    ids = {(await opa_engine.decide(inp)).decision_id for _ in range(3)}
    ids |= {(await embedded_engine.decide(inp)).decision_id for _ in range(3)}
    assert len(ids) == 6


async def test_embedded_engine_under_concurrency(embedded_engine):
    # regopy interpreters are not thread-safe; the engine must still answer correctly
    # when many decisions are in flight at once.
    batch = CASES * 8
    decisions = await asyncio.gather(*(embedded_engine.decide(c["input"]) for c in batch))
    assert [d.allow for d in decisions] == [c["allow"] for c in batch]


# ---------------------------------------------------------------------------
# Rego unit tests with the real OPA
# ---------------------------------------------------------------------------


def test_opa_unit_tests_pass():
    proc = subprocess.run(
        [_opa_binary(), "test", str(POLICY_DIR), "-v"], capture_output=True, text=True, timeout=120
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "FAIL" not in output and "PASS" in output, output


def test_opa_check_strict():
    proc = subprocess.run(
        [_opa_binary(), "check", "--strict", str(POLICY_DIR)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------
# Failing closed: OPA sidecar
# ---------------------------------------------------------------------------

ALLOWED_INPUT = next(c["input"] for c in CASES if c["allow"])


async def test_opa_stopped_raises_unavailable_and_recovers():
    with _opa_server(POLICY_DIR) as server:
        engine = OpaSidecarPolicyEngine(server.url, timeout=2.0)
        try:
            assert (await engine.decide(ALLOWED_INPUT)).allow is True
            server.stop()
            with pytest.raises(PolicyEngineUnavailable) as info:
                await engine.decide(ALLOWED_INPUT)
            message = str(info.value)
            assert message.startswith(f"policy engine unavailable: OPA at {server.url} did not answer"), message
            assert info.value.engine == f"OPA at {server.url}"
            server.start()  # same port: the same engine recovers
            assert (await engine.decide(ALLOWED_INPUT)).allow is True
        finally:
            await engine.close()


async def test_opa_connection_refused_message():
    url = f"http://127.0.0.1:{free_port()}"
    engine = OpaSidecarPolicyEngine(url, timeout=2.0)
    try:
        with pytest.raises(PolicyEngineUnavailable) as info:
            await engine.decide(ALLOWED_INPUT)
        assert str(info.value) == f"policy engine unavailable: OPA at {url} did not answer (connection refused)"
    finally:
        await engine.close()


async def test_opa_that_never_answers_times_out():
    async def silent(reader, writer):
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = OpaSidecarPolicyEngine(f"http://127.0.0.1:{port}", timeout=0.3)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PolicyEngineUnavailable, match=r"did not answer within 0\.3s \(timeout\)"):
            await engine.decide(ALLOWED_INPUT)
        assert loop.time() - started < 10  # the 0.3 s timeout, not the server's 30 s of silence
    finally:
        await engine.close()
        server.close()


async def test_opa_without_the_policy_raises_unavailable(tmp_path):
    with _opa_server(_write(tmp_path, {"other.rego": "package other\n\nx := 1\n"})) as server:
        engine = OpaSidecarPolicyEngine(server.url)
        try:
            with pytest.raises(PolicyEngineUnavailable, match="returned no result for data.innominatus.authz.decision"):
                await engine.decide(ALLOWED_INPUT)
        finally:
            await engine.close()


CONFLICTING_POLICY = """package innominatus.authz

decision := {"allow": true, "reasons": []} if input.subject
decision := {"allow": false, "reasons": ["x"]} if input.subject
"""

MALFORMED_POLICY = """package innominatus.authz

decision := {"allow": "yes", "reasons": []}
"""


async def test_opa_eval_error_raises_unavailable(tmp_path):
    with _opa_server(_write(tmp_path, {"authz.rego": CONFLICTING_POLICY})) as server:
        engine = OpaSidecarPolicyEngine(server.url)
        try:
            with pytest.raises(PolicyEngineUnavailable, match=r"answered HTTP 500"):
                await engine.decide(ALLOWED_INPUT)
        finally:
            await engine.close()


async def test_opa_malformed_decision_raises_unavailable(tmp_path):
    with _opa_server(_write(tmp_path, {"authz.rego": MALFORMED_POLICY})) as server:
        engine = OpaSidecarPolicyEngine(server.url)
        try:
            with pytest.raises(PolicyEngineUnavailable, match="malformed decision"):
                await engine.decide(ALLOWED_INPUT)
        finally:
            await engine.close()


def test_opa_url_validation():
    with pytest.raises(ValueError):
        OpaSidecarPolicyEngine("127.0.0.1:8181")
    with pytest.raises(ValueError):
        OpaSidecarPolicyEngine("http://127.0.0.1:8181/v1/data")


# ---------------------------------------------------------------------------
# Failing closed: embedded engine
# ---------------------------------------------------------------------------


async def test_embedded_syntax_error_raises_unavailable(tmp_path):
    _write(tmp_path, {"innominatus/authz.rego": "package innominatus.authz\n\ndecision := {\n"})
    engine = EmbeddedRegoPolicyEngine(tmp_path)
    with pytest.raises(PolicyEngineUnavailable, match=r"^policy engine unavailable: embedded Rego .* could not"):
        await engine.decide(ALLOWED_INPUT)
    with pytest.raises(PolicyEngineUnavailable):
        await engine.load()


async def test_embedded_missing_or_empty_dir_raises_unavailable(tmp_path):
    with pytest.raises(PolicyEngineUnavailable, match="does not exist"):
        await EmbeddedRegoPolicyEngine(tmp_path / "nope").decide(ALLOWED_INPUT)
    # Test files alone are not policy.
    _write(tmp_path, {"authz_test.rego": "package innominatus.authz_test\n\ntest_x if true\n"})
    with pytest.raises(PolicyEngineUnavailable, match=r"no \*\.rego policy files"):
        await EmbeddedRegoPolicyEngine(tmp_path).decide(ALLOWED_INPUT)


async def test_embedded_without_decision_raises_unavailable(tmp_path):
    _write(tmp_path, {"other.rego": "package other\n\nx := 1\n"})
    with pytest.raises(PolicyEngineUnavailable, match="returned no result"):
        await EmbeddedRegoPolicyEngine(tmp_path).decide(ALLOWED_INPUT)


async def test_embedded_eval_error_raises_unavailable(tmp_path):
    _write(tmp_path, {"authz.rego": CONFLICTING_POLICY})
    with pytest.raises(PolicyEngineUnavailable, match="failed to evaluate"):
        await EmbeddedRegoPolicyEngine(tmp_path).decide(ALLOWED_INPUT)


async def test_embedded_malformed_decision_raises_unavailable(tmp_path):
    _write(tmp_path, {"authz.rego": MALFORMED_POLICY})
    with pytest.raises(PolicyEngineUnavailable, match="malformed decision"):
        await EmbeddedRegoPolicyEngine(tmp_path).decide(ALLOWED_INPUT)


async def test_embedded_recovers_once_policy_is_fixed(tmp_path):
    broken = _write(tmp_path, {"authz.rego": "package innominatus.authz\n\ndecision := {\n"})
    engine = EmbeddedRegoPolicyEngine(broken)
    with pytest.raises(PolicyEngineUnavailable):
        await engine.decide(ALLOWED_INPUT)
    (broken / "authz.rego").write_text((POLICY_DIR / "innominatus" / "authz.rego").read_text())
    assert (await engine.decide(ALLOWED_INPUT)).allow is True


# ---------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------


def test_default_policy_dir(monkeypatch):
    monkeypatch.delenv("INNOMINATUS_POLICY_DIR", raising=False)
    assert default_policy_dir() == POLICY_DIR.resolve()
    assert (default_policy_dir() / "innominatus" / "authz.rego").is_file()
    monkeypatch.setenv("INNOMINATUS_POLICY_DIR", "/elsewhere/policies")
    assert default_policy_dir() == Path("/elsewhere/policies")


async def test_make_policy_engine(monkeypatch, tmp_path):
    monkeypatch.delenv("INNOMINATUS_POLICY_DIR", raising=False)
    sidecar = make_policy_engine("http://127.0.0.1:8181", None)
    assert isinstance(sidecar, OpaSidecarPolicyEngine) and isinstance(sidecar, PolicyEngine)
    embedded = make_policy_engine(None, None)
    assert isinstance(embedded, EmbeddedRegoPolicyEngine) and isinstance(embedded, PolicyEngine)
    assert embedded.policy_dir == default_policy_dir()
    assert make_policy_engine(None, tmp_path).policy_dir == tmp_path
    await sidecar.close()
    await embedded.close()
