"""``redis``: a Redis ACL user confined to its own key prefix, on a configured server.

Config (from the resource definition):

- ``admin_url`` (required): ``redis://[user:password@]host:port/db`` (or ``rediss://``) of a user
  allowed to run ``ACL SETUSER`` / ``ACL DELUSER``.
- ``host`` / ``port`` (optional): what workloads should connect to, when that differs from the
  admin URL's host. Health checks always use the admin URL's host.
- ``delete_keys`` (optional, default ``true``): deprovision also deletes every key under the
  resource's prefix (like the postgres driver drops the database). ``false`` keeps the data.

The user is ``<name>`` derived from the resource id (``checkout-dev-cache``), its prefix
``<name>:``. Its password is sent to Redis only as a SHA-256 hash (``#<hex>`` rule). See
:data:`ACL_RULES` for what it may do.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping
from urllib.parse import quote, unquote, urlsplit

from innominatus.kit.logs import get_logger
from innominatus.resources.drivers.base import (
    Drift,
    Health,
    ProvisionContext,
    ProvisionError,
    ProvisionResult,
    error_text,
    generate_password,
    require_config,
    short_hash,
)

log = get_logger("innominatus.resources.drivers.redis")

# After the key pattern ~<prefix>* and channel pattern &<prefix>*: every command except the
# administrative and dangerous ones (FLUSHALL, FLUSHDB, CONFIG, KEYS, INFO, CLIENT LIST/KILL,
# MONITOR, DEBUG, ACL SETUSER, ...), and except the few harmless-looking commands that reach beyond
# the prefix: SCAN / RANDOMKEY / DBSIZE (see other tenants' key names or counts), FUNCTION
# (functions are global: FUNCTION FLUSH would delete every tenant's), SCRIPT FLUSH / KILL.
# Every command that names keys or channels is checked against the patterns, scripts included.
ACL_RULES = (
    "+@all",
    "-@admin",
    "-@dangerous",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-function",
    "-script|flush",
    "-script|kill",
)

TIMEOUT = 10


def _redis():
    try:
        import redis.asyncio as aioredis
        import redis.exceptions as redis_errors
    except ImportError:  # pragma: no cover - the dependency is declared in pyproject.toml
        raise ProvisionError(
            "the redis driver needs the 'redis' Python package (redis-py)", retryable=False, reason="DRIVER_MISCONFIGURED"
        ) from None
    return aioredis, redis_errors


def _user_name(ctx: ProvisionContext) -> str:
    """An ACL user name from the resource id: ``checkout-dev-cache`` (letters, digits, ``-``, ``_``)."""
    prefix = str((ctx.config or {}).get("name_prefix") or "")
    name = re.sub(r"[^a-z0-9_-]+", "-", (prefix + ctx.resource_id).lower())
    name = re.sub(r"-+", "-", name).strip("-_") or "r-" + short_hash(ctx.resource_id)
    if len(name) > 100:
        name = name[:91].rstrip("-_") + "-" + short_hash(prefix + ctx.resource_id)
    return name


class _Server:
    def __init__(self, ctx: ProvisionContext) -> None:
        raw = str(require_config(ctx, "admin_url", "redis", "redis://provisioner:PASSWORD@cache:6379/0")).strip()
        try:
            parts = urlsplit(raw)
            port = parts.port or 6379
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ProvisionError(
                f"config.admin_url of the redis driver for resource {ctx.resource_id} is not a redis:// or rediss:// URL",
                retryable=False,
                reason="DRIVER_MISCONFIGURED",
            )
        self.host = parts.hostname
        self.port = port
        self.ssl = parts.scheme == "rediss"
        self.admin_user = unquote(parts.username) if parts.username else None
        self.admin_password = unquote(parts.password) if parts.password else None
        path = (parts.path or "/").strip("/")
        self.db = int(path) if path.isdigit() else 0

    def client(self, username: str | None = None, password: str | None = None):
        aioredis, _ = _redis()
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        admin = username is None
        return aioredis.Redis(
            host=self.host,
            port=self.port,
            db=self.db,
            username=self.admin_user if admin else username,
            password=self.admin_password if admin else password,
            ssl=self.ssl,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            decode_responses=True,
            # No retries inside the driver: a wrong password fails at once (redis-py would otherwise
            # back off and retry its AuthenticationError), and the engine's step retry policy decides.
            retry=Retry(NoBackoff(), 0),
        )


def _failure(action: str, exc: BaseException, server: _Server, *secrets: str | None) -> ProvisionError:
    _, redis_errors = _redis()
    retryable = isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError))
    return ProvisionError(
        f"{action}: {error_text(exc, server.admin_password, *secrets)}",
        retryable=retryable,
        reason="PROVISIONER_UNAVAILABLE" if retryable else "PROVISION_FAILED",
    )


class RedisDriver:
    name = "redis"
    types = ("redis",)
    description = "a Redis ACL user restricted to its own key prefix (config: admin_url)"

    async def provision(self, ctx: ProvisionContext) -> ProvisionResult:
        server = _Server(ctx)
        username = _user_name(ctx)
        prefix = f"{username}:"
        if username == "default" or username == server.admin_user:
            raise ProvisionError(
                f"resource {ctx.resource_id} would be the Redis user {username}, which innominatus must not manage; "
                "change the resource id or set config.name_prefix",
                retryable=False,
                reason="RESOURCE_NAME_TAKEN",
            )
        previous = (ctx.previous_secrets or {}).get("password")
        password = previous or generate_password()
        rules = [
            "reset",  # converge: whatever the user had before, it now has exactly these rules
            "on",
            "#" + hashlib.sha256(password.encode()).hexdigest(),
            f"~{prefix}*",
            f"&{prefix}*",
            *ACL_RULES,
        ]
        client = server.client()
        try:
            existed = await client.acl_getuser(username) is not None
            await client.execute_command("ACL", "SETUSER", username, *rules)
        except Exception as exc:
            # ACL SETUSER is one atomic command: it either applied every rule or none, so a failure
            # leaves nothing of this attempt behind.
            error = _failure(f"creating Redis ACL user {username} for resource {ctx.resource_id} failed", exc, server, password)
            log.warning("redis.provision_failed", resource_id=ctx.resource_id, username=username, error=error.message)
            raise error from None
        finally:
            await client.aclose()

        host = str((ctx.config or {}).get("host") or server.host)
        port = int((ctx.config or {}).get("port") or server.port)
        log.info(
            "redis.provisioned",
            resource_id=ctx.resource_id,
            username=username,
            key_prefix=prefix,
            created=not existed,
            rotated=not previous,
            idempotency_key=ctx.idempotency_key,
        )
        scheme = "rediss" if server.ssl else "redis"
        url = f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@{host}:{port}/{server.db}"
        return ProvisionResult(
            outputs={"host": host, "port": port, "username": username, "key_prefix": prefix},
            secret_outputs={"password": password, "url": url},
            state={"username": username, "key_prefix": prefix, "host": server.host, "port": server.port, "db": server.db},
        )

    async def deprovision(self, ctx: ProvisionContext, state: Mapping[str, Any]) -> None:
        server = _Server(ctx)
        username = str((state or {}).get("username") or _user_name(ctx))
        prefix = str((state or {}).get("key_prefix") or f"{username}:")
        delete_keys = (ctx.config or {}).get("delete_keys", True) not in (False, "false", "False", 0, "0")
        client = server.client()
        deleted = 0
        try:
            # Deleting the user also disconnects its clients, so nothing writes while the keys go.
            await client.execute_command("ACL", "DELUSER", username)
            if delete_keys:
                batch: list[str] = []
                async for key in client.scan_iter(match=f"{prefix}*", count=500):
                    batch.append(key)
                    if len(batch) >= 500:
                        deleted += await client.unlink(*batch)
                        batch = []
                if batch:
                    deleted += await client.unlink(*batch)
        except Exception as exc:
            raise _failure(f"deleting Redis ACL user {username} of resource {ctx.resource_id} failed", exc, server) from None
        finally:
            await client.aclose()
        log.info("redis.deprovisioned", resource_id=ctx.resource_id, username=username, keys_deleted=deleted)

    async def health(self, ctx: ProvisionContext, state: Mapping[str, Any], secret_outputs: Mapping[str, str]) -> Health:
        server = _Server(ctx)
        username = str((state or {}).get("username") or _user_name(ctx))
        password = (secret_outputs or {}).get("password")
        if not password:
            return Health(False, f"no password for Redis user {username} to check with")
        client = server.client(username, password)
        try:
            await client.ping()
        except Exception as exc:
            return Health(
                False,
                f"cannot use Redis on {server.host}:{server.port} as {username}: {error_text(exc, password, server.admin_password)}",
            )
        finally:
            await client.aclose()
        return Health(True, f"authenticated to Redis as {username} and got PONG")

    async def drift(self, ctx: ProvisionContext, state: Mapping[str, Any]) -> Drift:
        server = _Server(ctx)
        username = str((state or {}).get("username") or _user_name(ctx))
        prefix = str((state or {}).get("key_prefix") or f"{username}:")
        client = server.client()
        try:
            user = await client.acl_getuser(username)
        except Exception as exc:
            raise _failure(f"checking Redis ACL user {username} of resource {ctx.resource_id} failed", exc, server) from None
        finally:
            await client.aclose()
        if user is None:
            return Drift(False, f"Redis ACL user {username} was deleted")
        reasons = []
        if "on" not in (user.get("flags") or []):
            reasons.append(f"Redis ACL user {username} was disabled")
        keys = user.get("keys") or []
        keys = keys.split() if isinstance(keys, str) else list(keys)
        if keys != [f"~{prefix}*"]:
            reasons.append(f"key patterns of Redis ACL user {username} changed to {' '.join(keys) or '(none)'}")
        return Drift(not reasons, "; ".join(reasons))
