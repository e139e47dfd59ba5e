"""Verification of end-user access tokens, done by every service itself.

Identity signs tokens (EdDSA) and publishes its public keys as a JWKS; each service fetches
that set over mTLS, caches it, and verifies every token locally, so no service has to trust
the gateway (or any other peer) about who the user is.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Awaitable, Callable

import jwt

from innominatus.kit.context import Subject
from innominatus.kit.errors import Unauthenticated, Unavailable

ISSUER = "innominatus"
AUDIENCE = "innominatus"
ALGORITHM = "EdDSA"

JwksSource = Callable[[], Awaitable[str]]


class TokenVerifier:
    def __init__(self, jwks_source: JwksSource, refresh_after: float = 300.0, min_refetch_interval: float = 5.0) -> None:
        self._source = jwks_source
        self._keys: dict[str, object] = {}
        self._fetched_at = 0.0
        self._refresh_after = refresh_after
        self._min_refetch = min_refetch_interval
        self._lock = asyncio.Lock()

    async def _refresh(self, force: bool = False) -> None:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if self._keys and (age < self._min_refetch or (not force and age < self._refresh_after)):
                return
            try:
                document = await self._source()
            except Exception as exc:  # noqa: BLE001 - any failure to reach identity fails closed
                if self._keys and not force:
                    return  # keep verifying with the keys we have
                raise Unavailable(
                    "identity service unavailable: cannot fetch the keys that verify access tokens",
                    reason="IDENTITY_UNAVAILABLE",
                ) from exc
            keys = {}
            for jwk in json.loads(document).get("keys", []):
                keys[jwk["kid"]] = jwt.PyJWK(jwk).key
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def verify(self, token: str) -> Subject:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed access token: log in again", reason="TOKEN_MALFORMED") from None
        kid = header.get("kid", "")
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("access token uses an unsupported algorithm", reason="TOKEN_MALFORMED")
        await self._refresh()
        if kid not in self._keys:
            await self._refresh(force=True)
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("access token signed by an unknown key: log in again", reason="TOKEN_INVALID")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("access token expired: log in again", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid access token: {exc}", reason="TOKEN_INVALID") from None
        return subject_from_claims(claims)


def subject_from_claims(claims: dict) -> Subject:
    return Subject(
        type="user",
        name=claims["sub"],
        username=claims.get("preferred_username") or claims["sub"].split("/", 1)[-1],
        roles=tuple(claims.get("roles", ())),
        teams=tuple(claims.get("teams", ())),
    )


def bearer_token(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip()
    return None
