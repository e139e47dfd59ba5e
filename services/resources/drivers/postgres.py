"""``postgres``: a real database and login role per resource, on a configured server.

Config (from the resource definition):

- ``admin_url`` (required): libpq or SQLAlchemy URL of a role with CREATEROLE and CREATEDB,
  e.g. ``postgresql://provisioner:...@db.internal:5432/postgres``.
- ``host`` / ``port`` (optional): what workloads should connect to, when that differs from the
  admin URL's host (an in-cluster service name, say). Health checks always use the admin URL's host.
- ``name_prefix`` (optional): prepended to the derived database and role name.

Provision creates role ``<name>`` (LOGIN, random 32-character password, sent to the server only as a
SCRAM-SHA-256 verifier) and database ``<name>`` owned by it, revokes CONNECT and TEMPORARY on it
from PUBLIC, and marks both with a comment ``innominatus:<resource_id>``; a role or database of that
name without our mark is never taken over or dropped.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import quote

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
    scram_sha256_verifier,
    sql_name,
)

log = get_logger("innominatus.resources.drivers.postgres")

CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class _Server:
    # libpq connection parameters of the admin connection: the password is in there, so no repr
    params: dict[str, Any] = field(repr=False)

    @property
    def host(self) -> str:
        return str(self.params.get("host") or "localhost")

    @property
    def port(self) -> int:
        return int(self.params.get("port") or 5432)

    @property
    def admin_password(self) -> str | None:
        return self.params.get("password")

    def conninfo(self, **override: Any) -> str:
        from psycopg.conninfo import make_conninfo

        params = {**self.params, **override}
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def _server(ctx: ProvisionContext) -> _Server:
    from psycopg.conninfo import conninfo_to_dict

    raw = str(require_config(ctx, "admin_url", "postgres", "postgresql://provisioner:PASSWORD@db:5432/postgres"))
    url = re.sub(r"^postgres(ql)?\+[a-z0-9_]+://", "postgresql://", raw.strip(), flags=re.IGNORECASE)
    try:
        params = conninfo_to_dict(url)
    except Exception:  # the parser's message may quote the URL, password included
        raise ProvisionError(
            f"config.admin_url of the postgres driver for resource {ctx.resource_id} is not a valid "
            "PostgreSQL connection URL",
            retryable=False,
            reason="DRIVER_MISCONFIGURED",
        ) from None
    if not str(params.get("port") or "5432").isdigit():
        raise ProvisionError(
            f"config.admin_url of the postgres driver for resource {ctx.resource_id} has an invalid port",
            retryable=False,
            reason="DRIVER_MISCONFIGURED",
        )
    return _Server(params)


def _names(ctx: ProvisionContext, state: Mapping[str, Any] | None = None) -> tuple[str, str]:
    state = state or {}
    name = sql_name(ctx.resource_id, prefix=str((ctx.config or {}).get("name_prefix") or ""))
    return str(state.get("database") or name), str(state.get("role") or name)


def _marker(ctx: ProvisionContext) -> str:
    return f"innominatus:{ctx.resource_id}"


def _failure(action: str, exc: BaseException, server: _Server, *secrets: str | None) -> ProvisionError:
    import psycopg

    retryable = isinstance(exc, (psycopg.OperationalError, OSError, asyncio.TimeoutError))
    return ProvisionError(
        f"{action}: {error_text(exc, server.admin_password, *secrets)}",
        retryable=retryable,
        reason="PROVISIONER_UNAVAILABLE" if retryable else "PROVISION_FAILED",
    )


async def _admin_connection(ctx: ProvisionContext, server: _Server):
    import psycopg

    try:
        return await psycopg.AsyncConnection.connect(server.conninfo(), autocommit=True)
    except Exception as exc:
        raise _failure(
            f"cannot connect to the admin PostgreSQL server {server.host}:{server.port} for resource {ctx.resource_id}",
            exc,
            server,
        ) from None


async def _lock(conn, name: str) -> None:
    # One provision/deprovision of a name at a time on this server (released when the connection closes).
    await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"innominatus:postgres:{name}",))


async def _role_row(conn, role: str):
    cur = await conn.execute(
        "SELECT rolcanlogin, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", (role,)
    )
    return await cur.fetchone()


async def _database_row(conn, database: str):
    cur = await conn.execute(
        """
        SELECT r.rolname,
               shobj_description(d.oid, 'pg_database'),
               EXISTS (SELECT 1 FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                       WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT')
          FROM pg_database d LEFT JOIN pg_roles r ON r.oid = d.datdba
         WHERE d.datname = %s
        """,
        (database,),
    )
    return await cur.fetchone()


class PostgresDriver:
    name = "postgres"
    types = ("postgres",)
    description = "a PostgreSQL database and its own login role on a configured server (config: admin_url)"

    async def provision(self, ctx: ProvisionContext) -> ProvisionResult:
        from psycopg import sql

        server = _server(ctx)
        database, role = _names(ctx)
        marker = _marker(ctx)
        previous = (ctx.previous_secrets or {}).get("password")
        password = previous or generate_password()
        created: list[str] = []  # what this attempt created, in creation order
        conn = await _admin_connection(ctx, server)
        try:
            await _lock(conn, database)
            row = await _role_row(conn, role)
            verifier = sql.Literal(scram_sha256_verifier(password))
            if row is None:
                await conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(role), verifier))
                created.append("role")
                await conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(marker)))
            elif row[1] != marker:
                raise ProvisionError(
                    f"role {role} already exists and is not managed by innominatus for resource {ctx.resource_id}; "
                    "refusing to take it over (drop or rename it, or change the resource id)",
                    retryable=False,
                    reason="RESOURCE_NAME_TAKEN",
                )
            else:  # ours: converge (log in allowed, password is the one we hand out)
                await conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(role), verifier))
            # A non-superuser admin (CREATEROLE, CREATEDB) must be a member of the role to create a
            # database owned by it, and later to drop that database and end its sessions.
            cur = await conn.execute(
                "SELECT rolsuper, pg_has_role(current_user, %s, 'MEMBER') FROM pg_roles WHERE rolname = current_user",
                (role,),
            )
            superuser, member = await cur.fetchone()
            if not superuser and not member:
                await conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))

            row = await _database_row(conn, database)
            if row is None:
                await conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role))
                )
                created.append("database")
                await conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(database), sql.Literal(marker))
                )
            elif row[1] != marker or row[0] != role:
                owner = row[0] or "an unknown role"
                raise ProvisionError(
                    f"database {database} already exists (owned by {owner}) and is not managed by innominatus "
                    f"for resource {ctx.resource_id}; refusing to take it over",
                    retryable=False,
                    reason="RESOURCE_NAME_TAKEN",
                )
            await conn.execute(
                sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database))
            )
            await conn.execute(
                sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
        except BaseException as exc:
            left = await asyncio.shield(self._undo(ctx, server, conn, database, role, created))
            if isinstance(exc, ProvisionError):
                error = exc
            elif isinstance(exc, Exception):
                error = _failure(f"provisioning database {database} for resource {ctx.resource_id} failed", exc, server, password)
            else:  # cancelled: cleaned up, propagate as is
                raise
            if left:
                error = ProvisionError(
                    f"{error.message}; cleaning up also failed, left behind: {', '.join(left)}",
                    retryable=error.retryable,
                    reason=error.reason,
                )
            log.warning(
                "postgres.provision_failed",
                resource_id=ctx.resource_id,
                database=database,
                error=error.message,
                retryable=error.retryable,
                rolled_back=created,
            )
            raise error from None
        finally:
            await conn.close()

        host = str((ctx.config or {}).get("host") or server.host)
        port = int((ctx.config or {}).get("port") or server.port)
        log.info(
            "postgres.provisioned",
            resource_id=ctx.resource_id,
            database=database,
            role=role,
            created=created,
            rotated=not previous,
            idempotency_key=ctx.idempotency_key,
        )
        url = f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(database, safe='')}"
        return ProvisionResult(
            outputs={"host": host, "port": port, "name": database, "database": database, "username": role},
            secret_outputs={"password": password, "url": url},
            state={"database": database, "role": role, "host": server.host, "port": server.port, "marker": marker},
        )

    async def _undo(self, ctx, server: _Server, conn, database: str, role: str, created: list[str]) -> list[str]:
        """Drop what this attempt created; the names of what could not be dropped."""
        if not created:
            return []
        from psycopg import sql

        left: list[str] = []
        own = None
        try:
            if conn.closed or conn.broken:
                import psycopg

                conn = own = await psycopg.AsyncConnection.connect(server.conninfo(), autocommit=True)
            if "database" in created:
                try:
                    await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
                except Exception:
                    left.append(f"database {database}")
            if "role" in created:
                try:
                    await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
                except Exception:
                    left.append(f"role {role}")
        except Exception:
            left = [f"{kind} {database if kind == 'database' else role}" for kind in created]
        finally:
            if own is not None:
                await own.close()
        return left

    async def deprovision(self, ctx: ProvisionContext, state: Mapping[str, Any]) -> None:
        from psycopg import sql

        server = _server(ctx)
        database, role = _names(ctx, state)
        marker = str((state or {}).get("marker") or _marker(ctx))
        conn = await _admin_connection(ctx, server)
        try:
            await _lock(conn, database)
            row = await _database_row(conn, database)
            if row is not None:
                if row[1] != marker:
                    raise ProvisionError(
                        f"refusing to drop database {database}: it is not managed by innominatus for resource {ctx.resource_id}",
                        retryable=False,
                        reason="RESOURCE_NOT_MANAGED",
                    )
                # WITH (FORCE) terminates the sessions still connected to it (PostgreSQL 13+).
                await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            row = await _role_row(conn, role)
            if row is not None:
                if row[1] != marker:
                    raise ProvisionError(
                        f"refusing to drop role {role}: it is not managed by innominatus for resource {ctx.resource_id}",
                        retryable=False,
                        reason="RESOURCE_NOT_MANAGED",
                    )
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
                    (role,),
                )
                await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        except ProvisionError:
            raise
        except Exception as exc:
            raise _failure(f"deprovisioning database {database} of resource {ctx.resource_id} failed", exc, server) from None
        finally:
            await conn.close()
        log.info("postgres.deprovisioned", resource_id=ctx.resource_id, database=database, role=role)

    async def health(self, ctx: ProvisionContext, state: Mapping[str, Any], secret_outputs: Mapping[str, str]) -> Health:
        import psycopg

        server = _server(ctx)
        database, role = _names(ctx, state)
        password = (secret_outputs or {}).get("password")
        if not password:
            return Health(False, f"no password for role {role} to check database {database} with")
        try:
            conn = await psycopg.AsyncConnection.connect(
                server.conninfo(user=role, password=password, dbname=database, connect_timeout=5), autocommit=True
            )
            try:
                cur = await conn.execute("SELECT 1")
                await cur.fetchone()
            finally:
                await conn.close()
        except Exception as exc:
            return Health(
                False,
                f"cannot use database {database} as {role} on {server.host}:{server.port}: "
                f"{error_text(exc, password, server.admin_password)}",
            )
        return Health(True, f"connected to database {database} as {role}")

    async def drift(self, ctx: ProvisionContext, state: Mapping[str, Any]) -> Drift:
        server = _server(ctx)
        database, role = _names(ctx, state)
        marker = str((state or {}).get("marker") or _marker(ctx))
        conn = await _admin_connection(ctx, server)
        try:
            db_row = await _database_row(conn, database)
            role_row = await _role_row(conn, role)
        except Exception as exc:
            raise _failure(f"checking database {database} of resource {ctx.resource_id} for drift failed", exc, server) from None
        finally:
            await conn.close()
        reasons = []
        if db_row is None:
            reasons.append(f"database {database} was dropped")
        else:
            owner, comment, public_connect = db_row
            if comment != marker:
                reasons.append(f"database {database} is no longer marked as managed by innominatus")
            if owner != role:
                reasons.append(f"database {database} is now owned by {owner}, not {role}")
            if public_connect:
                reasons.append(f"CONNECT on database {database} was granted to PUBLIC again")
        if role_row is None:
            reasons.append(f"role {role} was dropped")
        else:
            can_login, comment = role_row
            if not can_login:
                reasons.append(f"role {role} can no longer log in")
            if comment != marker:
                reasons.append(f"role {role} is no longer marked as managed by innominatus")
        return Drift(not reasons, "; ".join(reasons))
