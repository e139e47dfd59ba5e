"""Access-token signing: the identity service's Ed25519 key, its JWKS, and JWT issuing.

The signing key is a PKCS#8 PEM file, not a database row:

* default location ``<data_dir>/identity/signing-key.pem``; created on first start with
  mode 0600 inside a directory with mode 0700;
* production points it elsewhere (e.g. a mounted secret) with the environment variable
  ``INNOMINATUS_IDENTITY_SIGNING_KEY=/path/to/signing-key.pem``. An existing file is used
  as is (it must hold an Ed25519 private key); a missing one is created there.

The key id (``kid``) is the RFC 7638 JWK thumbprint of the public key, so it is stable
across restarts and identical on every replica that shares the key file. Every service
verifies tokens itself with the public keys published by ``GetJwks``
(:class:`innominatus.kit.auth.TokenVerifier`).

Rotating the key: replace the file and restart identity. Tokens signed with the old key
fail verification from then on (services refetch the JWKS when they meet an unknown
``kid``), so users log in again; tokens live ``INNOMINATUS_TOKEN_TTL_SECONDS`` at most.

Token claims: ``iss``/``aud`` "innominatus", ``sub`` "users/<username>",
``preferred_username``, ``roles`` (role names), ``teams`` ("teams/<team>"), ``iat``,
``exp``, ``jti``; header ``alg`` EdDSA and ``kid``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from innominatus.kit.auth import ALGORITHM, AUDIENCE, ISSUER
from innominatus.kit.config import Settings
from innominatus.kit.logs import get_logger

log = get_logger(__name__)

SIGNING_KEY_ENV = "INNOMINATUS_IDENTITY_SIGNING_KEY"
DEFAULT_KEY_FILE = Path("identity") / "signing-key.pem"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signing_key_path(settings: Settings) -> Path:
    """Where the signing key lives: $INNOMINATUS_IDENTITY_SIGNING_KEY, else under data_dir."""
    override = os.environ.get(SIGNING_KEY_ENV, "").strip()
    if override:
        return Path(override)
    return settings.data_dir / DEFAULT_KEY_FILE


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load(path: Path) -> Ed25519PrivateKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("token signing key file is readable by others; chmod 600 it", path=str(path), mode=oct(mode))
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"configuration error: {path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"configuration error: {path} holds a {type(key).__name__}; identity needs an Ed25519 key")
    return key


def load_or_create_signing_key(path: Path, *, private_dir: bool = True) -> Ed25519PrivateKey:
    """The Ed25519 key in ``path``, generated (mode 0600) when the file does not exist.

    With ``private_dir`` the containing directory is created or tightened to mode 0700.
    Creation is atomic and never overwrites: the key is written to a temporary file and
    hard-linked into place, so concurrent first starts agree on one key.
    """
    directory = path.parent
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
    elif private_dir and stat.S_IMODE(directory.stat().st_mode) != 0o700:
        directory.chmod(0o700)
    if path.exists():
        return _load(path)
    key = Ed25519PrivateKey.generate()
    tmp = directory / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_private_pem(key))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _load(path)  # another process won the race: use its key
    finally:
        tmp.unlink(missing_ok=True)
    log.info("created token signing key", path=str(path))
    return key


def public_jwk(public_key: Ed25519PublicKey) -> dict:
    """The public key as an OKP JWK with its RFC 7638 thumbprint as ``kid``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = _b64url(raw)
    # RFC 7638: the required members only, lexicographic order, no whitespace.
    thumbprint_input = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    kid = _b64url(hashlib.sha256(thumbprint_input.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "alg": ALGORITHM, "use": "sig", "kid": kid}


def _field(user, name: str, default=()):
    if isinstance(user, Mapping):
        return user.get(name, default)
    return getattr(user, name, default)


class TokenIssuer:
    """Signs access tokens with one key and publishes it (plus any retired public keys)."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        ttl_seconds: int = 900,
        extra_public_keys: Sequence[Ed25519PublicKey] = (),
    ) -> None:
        self._key = private_key
        self.ttl_seconds = int(ttl_seconds)
        self._jwk = public_jwk(private_key.public_key())
        self._published = [self._jwk, *(public_jwk(k) for k in extra_public_keys)]

    @classmethod
    def from_settings(cls, settings: Settings) -> "TokenIssuer":
        path = signing_key_path(settings)
        default = not os.environ.get(SIGNING_KEY_ENV, "").strip()
        return cls(load_or_create_signing_key(path, private_dir=default), settings.token_ttl_seconds)

    @property
    def kid(self) -> str:
        return self._jwk["kid"]

    def jwks(self) -> dict:
        return {"keys": [dict(k) for k in self._published]}

    def jwks_json(self) -> str:
        return json.dumps(self.jwks(), separators=(",", ":"))

    def issue(self, user, ttl: int | None = None) -> tuple[str, int]:
        """A signed access token for ``user`` and its lifetime in seconds.

        ``user`` is a mapping or object with ``username``, ``roles`` (role names) and
        ``teams`` (team resource names or bare slugs).
        """
        ttl = self.ttl_seconds if ttl is None else int(ttl)
        username = _field(user, "username", "")
        if not username:
            raise ValueError("cannot issue a token without a username")
        now = int(time.time())
        teams = [t if t.startswith("teams/") else f"teams/{t}" for t in _field(user, "teams", ())]
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"users/{username}",
            "preferred_username": username,
            "roles": list(_field(user, "roles", ())),
            "teams": teams,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return token, ttl
