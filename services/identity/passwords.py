"""Password hashing: argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile).

Hashing and verifying are deliberately CPU- and memory-heavy, so the async helpers run
them in a worker thread instead of blocking the event loop.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # type ID argon2id
_dummy_hash: str | None = None


def hash_password_sync(password: str) -> str:
    return _hasher.hash(password)


def _verify_sync(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(hash_password_sync, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``.

    With no hash (unknown user) a dummy hash is verified anyway, so an unknown username
    costs as much time as a wrong password and the two cannot be told apart.
    """
    global _dummy_hash
    if password_hash is None:
        if _dummy_hash is None:
            _dummy_hash = await asyncio.to_thread(hash_password_sync, "innominatus-unknown-user")
        await asyncio.to_thread(_verify_sync, _dummy_hash, password)
        return False
    return await asyncio.to_thread(_verify_sync, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than the current ones."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return False
