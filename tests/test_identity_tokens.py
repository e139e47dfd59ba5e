"""The identity service's signing key and access tokens, without a server."""

from __future__ import annotations

import base64
import json
import stat
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from innominatus.identity import tokens
from innominatus.kit.auth import TokenVerifier
from innominatus.kit.config import Settings
from innominatus.kit.errors import Unauthenticated


@pytest.fixture(autouse=True)
def _no_signing_key_override(monkeypatch):
    monkeypatch.delenv(tokens.SIGNING_KEY_ENV, raising=False)


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def verifier_for(issuer: tokens.TokenIssuer) -> TokenVerifier:
    async def source() -> str:
        return issuer.jwks_json()

    return TokenVerifier(source)


def test_kid_is_the_rfc7638_thumbprint():
    # RFC 8037, appendix A.1 (key) and A.3 (its JWK thumbprint).
    d = _b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
    jwk = tokens.public_jwk(Ed25519PrivateKey.from_private_bytes(d).public_key())
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        "alg": "EdDSA",
        "use": "sig",
        "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
    }


def test_key_is_created_private_and_reused(tmp_path):
    settings = Settings(data_dir=tmp_path)
    first = tokens.TokenIssuer.from_settings(settings)
    path = tmp_path / "identity" / "signing-key.pem"
    assert tokens.signing_key_path(settings) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in path.read_bytes()
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary files left over

    second = tokens.TokenIssuer.from_settings(settings)
    assert second.kid == first.kid
    assert second.jwks_json() == first.jwks_json()


def test_default_key_directory_is_tightened(tmp_path):
    (tmp_path / "identity").mkdir(mode=0o755)
    (tmp_path / "identity").chmod(0o755)
    tokens.TokenIssuer.from_settings(Settings(data_dir=tmp_path))
    assert stat.S_IMODE((tmp_path / "identity").stat().st_mode) == 0o700


def test_concurrent_first_starts_agree_on_one_key(tmp_path):
    path = tmp_path / "keys" / "signing-key.pem"
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: tokens.load_or_create_signing_key(path), range(16)))
    kids = {tokens.public_jwk(k.public_key())["kid"] for k in keys}
    assert len(kids) == 1


def test_environment_variable_points_the_key_elsewhere(tmp_path, monkeypatch):
    elsewhere = tmp_path / "secrets" / "identity-signing.pem"
    monkeypatch.setenv(tokens.SIGNING_KEY_ENV, str(elsewhere))
    settings = Settings(data_dir=tmp_path / "data")
    issuer = tokens.TokenIssuer.from_settings(settings)
    assert tokens.signing_key_path(settings) == elsewhere
    assert elsewhere.exists() and stat.S_IMODE(elsewhere.stat().st_mode) == 0o600
    assert not (tmp_path / "data" / "identity" / "signing-key.pem").exists()

    # A provisioned key is used as is.
    provided = Ed25519PrivateKey.generate()
    elsewhere.write_bytes(
        provided.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    reloaded = tokens.TokenIssuer.from_settings(settings)
    assert reloaded.kid == tokens.public_jwk(provided.public_key())["kid"] != issuer.kid


def test_a_key_that_is_not_ed25519_is_a_configuration_error(tmp_path):
    path = tmp_path / "identity" / "signing-key.pem"
    path.parent.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(SystemExit, match="Ed25519"):
        tokens.TokenIssuer.from_settings(Settings(data_dir=tmp_path))
    path.write_text("not a key")
    with pytest.raises(SystemExit, match="not an unencrypted PEM private key"):
        tokens.TokenIssuer.from_settings(Settings(data_dir=tmp_path))


def test_jwks_publishes_only_the_public_key(tmp_path):
    issuer = tokens.TokenIssuer.from_settings(Settings(data_dir=tmp_path))
    document = json.loads(issuer.jwks_json())
    (jwk,) = document["keys"]
    assert set(jwk) == {"kty", "crv", "x", "alg", "use", "kid"}
    assert jwk["kid"] == issuer.kid
    assert len(_b64decode(jwk["x"])) == 32


async def test_issued_token_has_the_agreed_claims(tmp_path):
    issuer = tokens.TokenIssuer.from_settings(Settings(data_dir=tmp_path, token_ttl_seconds=600))
    token, expires_in = issuer.issue(
        {"username": "alice", "roles": ["developer", "viewer"], "teams": ["payments", "teams/checkout"]}
    )
    assert expires_in == 600
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == issuer.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == claims["aud"] == "innominatus"
    assert claims["sub"] == "users/alice" and claims["preferred_username"] == "alice"
    assert claims["roles"] == ["developer", "viewer"]
    assert claims["teams"] == ["teams/payments", "teams/checkout"]
    assert claims["exp"] - claims["iat"] == 600
    assert claims["jti"]
    assert issuer.issue({"username": "alice"})[0] != token  # unique jti

    subject = await verifier_for(issuer).verify(token)
    assert subject.name == "users/alice"
    assert subject.roles == ("developer", "viewer")
    assert subject.teams == ("teams/payments", "teams/checkout")


async def test_expired_token_is_rejected(tmp_path):
    issuer = tokens.TokenIssuer.from_settings(Settings(data_dir=tmp_path))
    token, _ = issuer.issue({"username": "alice", "roles": ["admin"]}, ttl=-1)
    with pytest.raises(Unauthenticated) as caught:
        await verifier_for(issuer).verify(token)
    assert caught.value.reason == "TOKEN_EXPIRED"


async def test_token_from_another_key_is_rejected(tmp_path):
    ours = tokens.TokenIssuer.from_settings(Settings(data_dir=tmp_path / "ours"))
    theirs = tokens.TokenIssuer.from_settings(Settings(data_dir=tmp_path / "theirs"))
    token, _ = theirs.issue({"username": "mallory", "roles": ["admin"]})
    with pytest.raises(Unauthenticated) as caught:
        await verifier_for(ours).verify(token)
    assert caught.value.reason == "TOKEN_INVALID"

    # Same kid, different key: the signature check still fails.
    forged = jwt.encode(
        jwt.decode(token, options={"verify_signature": False}),
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": ours.kid},
    )
    with pytest.raises(Unauthenticated) as caught:
        await verifier_for(ours).verify(forged)
    assert caught.value.reason == "TOKEN_INVALID"


def test_a_token_needs_a_username(tmp_path):
    issuer = tokens.TokenIssuer.from_settings(Settings(data_dir=tmp_path))
    with pytest.raises(ValueError):
        issuer.issue({"roles": ["admin"]})
