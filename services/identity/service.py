"""The identity service: users, teams, API keys, and the access tokens everything trusts.

Identity signs short-lived access tokens (JWT, EdDSA; see :mod:`innominatus.identity.tokens`)
and publishes their public keys with ``GetJwks``; every service verifies tokens itself.
Authorization is done by the kit's interceptors and the Rego policy; the only checks here
are what the policy cannot see: the caller's account is not disabled (every mutation, at one
seam: its token may outlive the disable), data scoping (whose API key a caller may list or revoke),
UpdateUser's guard rails (nobody disables themselves; the last enabled admin stays one) and
ChangePassword's (the current password for one's own; only admins reset another's).

On first start with an empty user table it creates the user ``admin`` with a random
password written to ``<data_dir>/bootstrap-admin.json`` (mode 0600). The file is never
overwritten and the bootstrap never runs again once any user exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import functools
import secrets
import uuid

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import String, and_, cast, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from innominatus.common.v1 import audit_event_pb2
from innominatus.identity import models, passwords
from innominatus.identity.tokens import TokenIssuer
from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit import context as reqctx
from innominatus.kit import db
from innominatus.kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InnominatusError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from innominatus.kit.logs import get_logger
from innominatus.kit.pagination import page_of
from innominatus.kit.server import Runtime, ServiceDefinition
from innominatus.kit import times
from innominatus.kit.methods import describe_service

log = get_logger(__name__)

Role = identity_pb2.Role
ROLE_NAMES: dict[int, str] = {
    Role.ROLE_ADMIN: "admin",
    Role.ROLE_PLATFORM_ENGINEER: "platform-engineer",
    Role.ROLE_DEVELOPER: "developer",
    Role.ROLE_VIEWER: "viewer",
}
ROLE_VALUES: dict[str, int] = {name: value for value, name in ROLE_NAMES.items()}
ADMIN_ROLE = "admin"

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MAX_DISPLAY_NAME_LENGTH = 256

API_KEY_PREFIX = "inn_"
API_KEY_PREFIX_LENGTH = 12
DEFAULT_API_KEY_TTL_DAYS = 90
MAX_API_KEY_TTL_DAYS = 365

BOOTSTRAP_FILE = "bootstrap-admin.json"
BOOTSTRAP_USERNAME = "admin"

INVALID_CREDENTIALS = "invalid credentials: check the username and password, or the API key"

# Fields of a User that UpdateUser may change (update_mask paths, snake_case), and why the
# others may not (for the refusal).
USER_UPDATABLE = ("display_name", "roles", "disabled")
USER_FIXED = {
    "name": "a user's name is fixed: create another user instead",
    "username": "a username is fixed: create another user instead",
    "teams": "teams change with AddTeamMember / RemoveTeamMember "
             "(innominatus teams add-member / remove-member)",
    "password": "passwords change with ChangePassword (innominatus users set-password)",
    "create_time": "it is set when the user is created",
    "update_time": "it is set by UpdateUser",
    "etag": "it is computed; send it to guard the update instead",
}


class EtagMismatch(InnominatusError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ETAG_MISMATCH"




def hash_api_key(key: str) -> str:
    """The stored form of an API key: hex SHA-256 (keys carry 256 random bits)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _role_values(names) -> list[int]:
    return [ROLE_VALUES[n] for n in names or () if n in ROLE_VALUES]


def user_etag(row) -> str:
    """AIP-154 etag of a user: changes whenever UpdateUser writes it (team membership is not
    part of it; AddTeamMember / RemoveTeamMember need no etag)."""
    stamp = row.updated_at.isoformat() if getattr(row, "updated_at", None) else ""
    payload = json.dumps([row.username, row.display_name or "", sorted(row.roles or ()), bool(row.disabled), stamp])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _user_proto(row, teams: list[str]) -> identity_pb2.User:
    # Built field by field so neither the password nor its hash can ever leak into it.
    return identity_pb2.User(
        name=f"users/{row.username}",
        username=row.username,
        display_name=row.display_name or "",
        roles=_role_values(row.roles),
        teams=sorted(f"teams/{t}" for t in teams),
        create_time=times.timestamp(row.created_at),
        disabled=bool(row.disabled),
        update_time=times.timestamp(getattr(row, "updated_at", None)),
        etag=user_etag(row),
    )


def _is_enabled_admin(row) -> bool:
    return ADMIN_ROLE in (row.roles or ()) and not row.disabled


def _team_proto(row, members: list[str]) -> identity_pb2.Team:
    return identity_pb2.Team(
        name=f"teams/{row.name}",
        display_name=row.display_name or "",
        members=sorted(f"users/{m}" for m in members),
        create_time=times.timestamp(row.created_at),
    )


def _api_key_proto(row) -> identity_pb2.ApiKey:
    return identity_pb2.ApiKey(
        name=f"apikeys/{row.id}",
        display_name=row.display_name or "",
        owner=f"users/{row.owner}",
        prefix=row.prefix,
        create_time=times.timestamp(row.created_at),
        expire_time=times.timestamp(row.expires_at),
        revoke_time=times.timestamp(row.revoked_at),
    )


async def _teams_by_user(session, usernames: list[str]) -> dict[str, list[str]]:
    table = models.team_members
    result: dict[str, list[str]] = {u: [] for u in usernames}
    if usernames:
        rows = await session.execute(select(table.c.username, table.c.team).where(table.c.username.in_(usernames)))
        for username, team in rows:
            result[username].append(team)
    return result


async def _members_by_team(session, teams: list[str]) -> dict[str, list[str]]:
    table = models.team_members
    result: dict[str, list[str]] = {t: [] for t in teams}
    if teams:
        rows = await session.execute(select(table.c.team, table.c.username).where(table.c.team.in_(teams)))
        for team, username in rows:
            result[team].append(username)
    return result


async def _user_row(session, username: str):
    table = models.users
    return (await session.execute(select(table).where(table.c.username == username))).one_or_none()


async def _team_row(session, name: str):
    table = models.teams
    return (await session.execute(select(table).where(table.c.name == name))).one_or_none()


async def _existing(session, column, values: list[str]) -> set[str]:
    if not values:
        return set()
    return set((await session.execute(select(column).where(column.in_(values)))).scalars())


def _user_not_found(username: str) -> NotFound:
    return NotFound(
        f"user 'users/{username}' not found (innominatus users list shows the users)",
        reason="USER_NOT_FOUND", metadata={"user": f"users/{username}"},
    )


def _team_not_found(slug: str) -> NotFound:
    return NotFound(
        f"team 'teams/{slug}' not found (innominatus teams list shows the teams)",
        reason="TEAM_NOT_FOUND", metadata={"team": f"teams/{slug}"},
    )


def _update_paths(mask_paths) -> list[str]:
    """UpdateUser's update_mask as USER_UPDATABLE paths, else INVALID_ARGUMENT."""
    paths = list(mask_paths)
    if not paths:
        raise InvalidArgument(
            "update_mask is required: name the fields to change (display_name, roles, disabled)",
            violations=[FieldViolation("update_mask", "list display_name, roles and/or disabled")],
        )
    if "*" in paths:
        paths = list(USER_UPDATABLE)
    # (The gateway turns a JSON updateMask's "displayName" into "display_name".)
    unknown = [p for p in dict.fromkeys(paths) if p not in USER_UPDATABLE]
    if unknown:
        violations = [
            FieldViolation("update_mask", f"{p!r} cannot be changed: {USER_FIXED.get(p, 'User has no such field')}")
            for p in unknown
        ]
        raise InvalidArgument(
            f"update_mask names {', '.join(repr(p) for p in unknown)}, which UpdateUser cannot change: "
            f"only {', '.join(USER_UPDATABLE)} ({violations[0].description})",
            violations=violations,
        )
    return paths


def password_violations(password: str, field: str) -> list[FieldViolation]:
    """The rules every password a user gets must meet: CreateUser's initial password and
    ChangePassword's new one (one place, so the two cannot drift apart)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return [FieldViolation(field, f"must be at least {MIN_PASSWORD_LENGTH} characters")]
    if len(password) > MAX_PASSWORD_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_PASSWORD_LENGTH} characters")]
    return []


def _role_names(values, violations: list[FieldViolation]) -> list[str]:
    """``user.roles`` (enum values) as role names, without repeats; unknown values are added
    to ``violations``."""
    roles: list[str] = []
    for index, value in enumerate(values):
        if value not in ROLE_NAMES:
            violations.append(
                FieldViolation(f"user.roles[{index}]", "must be one of " + ", ".join(Role.Name(v) for v in ROLE_NAMES))
            )
        elif ROLE_NAMES[value] not in roles:
            roles.append(ROLE_NAMES[value])
    return roles


async def _membership(session, request):
    """The team row and username an Add/RemoveTeamMember request names; both must exist."""
    violations = []
    slug, username = _strip(request.team, "teams"), _strip(request.user, "users")
    if not NAME_PATTERN.match(slug):
        violations.append(FieldViolation("team", "must look like teams/<name>"))
    if not NAME_PATTERN.match(username):
        violations.append(FieldViolation("user", "must look like users/<username>"))
    if violations:
        raise _invalid("team membership", violations)
    team = await _team_row(session, slug)
    if team is None:
        raise _team_not_found(slug)
    if await _user_row(session, username) is None:
        raise _user_not_found(username)
    return team, username


def _strip(value: str, collection: str) -> str:
    return value.removeprefix(f"{collection}/")


def _require_name(value: str, collection: str, field: str) -> str:
    """``<collection>/<id>`` (or the bare id) -> id, else InvalidArgument naming ``field``."""
    ident = _strip(value, collection)
    if not NAME_PATTERN.match(ident):
        raise InvalidArgument(
            f"{field} must be '{collection}/<name>' with a lowercase name, got {value!r}",
            violations=[FieldViolation(field, f"must look like {collection}/<name> matching {NAME_PATTERN.pattern}")],
        )
    return ident


def _invalid(what: str, violations: list[FieldViolation]) -> InvalidArgument:
    detail = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidArgument(f"invalid {what}: {detail}", violations=violations)


def _caller():
    ctx = reqctx.current()
    subject = ctx.subject if ctx is not None else None
    if subject is None or subject.type != "user":
        raise Unauthenticated("this call needs an end-user access token", reason="TOKEN_MISSING")
    return subject


def token_issuer(runtime: Runtime) -> TokenIssuer:
    """The service's token issuer, loading (or creating) the signing key on first use."""
    issuer = runtime.state.get("token_issuer")
    if issuer is None:
        issuer = TokenIssuer.from_settings(runtime.settings)
        runtime.state["token_issuer"] = issuer
    return issuer


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # -- authentication ------------------------------------------------------

    async def Login(self, request, context):
        session = db.session()
        if request.api_key:
            if request.username or request.password:
                raise InvalidArgument(
                    "send either username and password or api_key, not both",
                    violations=[FieldViolation("api_key", "must not be combined with username and password")],
                )
            row = await self._user_for_api_key(session, request.api_key)
        else:
            violations = []
            if not request.username:
                violations.append(FieldViolation("username", "is required (or send api_key)"))
            if not request.password:
                violations.append(FieldViolation("password", "is required (or send api_key)"))
            if violations:
                raise _invalid("login request", violations)
            row = await _user_row(session, request.username)
            ok = await passwords.verify_password(row.password_hash if row is not None else None, request.password)
            if not ok:
                raise Unauthenticated(INVALID_CREDENTIALS, reason="INVALID_CREDENTIALS")
            if passwords.needs_rehash(row.password_hash):
                new_hash = await passwords.hash_password(request.password)
                table = models.users
                await session.execute(update(table).where(table.c.username == row.username).values(password_hash=new_hash))
        if row.disabled:
            raise Unauthenticated(f"user {row.username!r} is disabled: ask an administrator", reason="USER_DISABLED")
        teams = (await _teams_by_user(session, [row.username]))[row.username]
        token, expires_in = token_issuer(self.runtime).issue(
            {"username": row.username, "roles": list(row.roles or ()), "teams": teams}
        )
        return identity_pb2.LoginResponse(
            access_token=token, token_type="Bearer", expires_in=expires_in, user=_user_proto(row, teams)
        )

    async def _user_for_api_key(self, session, key: str):
        table = models.api_keys
        found = (await session.execute(select(table).where(table.c.key_hash == hash_api_key(key)))).one_or_none()
        if found is None:
            raise Unauthenticated(INVALID_CREDENTIALS, reason="INVALID_CREDENTIALS")
        if found.revoked_at is not None:
            raise Unauthenticated(
                f"API key {found.prefix}... was revoked: create a new one", reason="API_KEY_REVOKED"
            )
        if times.utc(found.expires_at) <= times.now():
            raise Unauthenticated(
                f"API key {found.prefix}... expired at {times.utc(found.expires_at).isoformat()}: create a new one",
                reason="API_KEY_EXPIRED",
            )
        row = await _user_row(session, found.owner)
        if row is None:
            raise Unauthenticated(INVALID_CREDENTIALS, reason="INVALID_CREDENTIALS")
        return row

    async def GetJwks(self, request, context):
        return identity_pb2.GetJwksResponse(jwks_json=token_issuer(self.runtime).jwks_json())

    async def GetCurrentUser(self, request, context):
        subject = _caller()
        session = db.session()
        row = await _user_row(session, subject.username)
        if row is None:
            raise NotFound(f"user {subject.name!r} no longer exists", reason="USER_NOT_FOUND")
        teams = (await _teams_by_user(session, [row.username]))[row.username]
        return identity_pb2.GetCurrentUserResponse(user=_user_proto(row, teams))

    # -- users -----------------------------------------------------------------

    async def CreateUser(self, request, context):
        user = request.user
        violations: list[FieldViolation] = []
        username = user.username
        if not username and user.name.startswith("users/"):
            username = _strip(user.name, "users")
        elif user.name and user.name != f"users/{username}":
            violations.append(FieldViolation("user.name", "must be empty or users/<username>"))
        if not NAME_PATTERN.match(username):
            violations.append(
                FieldViolation(
                    "user.username",
                    "must be 2-63 characters: a lowercase letter, then lowercase letters, digits or '-'",
                )
            )
        violations.extend(password_violations(user.password, "user.password"))
        if len(user.display_name) > MAX_DISPLAY_NAME_LENGTH:
            violations.append(
                FieldViolation("user.display_name", f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
            )
        roles = _role_names(user.roles, violations)
        teams: list[str] = []
        for index, team in enumerate(user.teams):
            slug = _strip(team, "teams")
            if not NAME_PATTERN.match(slug):
                violations.append(FieldViolation(f"user.teams[{index}]", "must look like teams/<name>"))
            elif slug not in teams:
                teams.append(slug)
        if violations:
            raise _invalid("user", violations)
        roles = roles or ["developer"]

        # Hash before touching the database so the transaction stays short.
        password_hash = await passwords.hash_password(user.password)
        session = db.session()
        if await _user_row(session, username) is not None:
            raise AlreadyExists(f"user 'users/{username}' already exists", reason="USER_ALREADY_EXISTS")
        missing = set(teams) - await _existing(session, models.teams.c.name, teams)
        if missing:
            raise _invalid(
                "user",
                [FieldViolation("user.teams", f"team teams/{t} does not exist: create it first") for t in sorted(missing)],
            )
        now = times.now()
        try:
            await session.execute(
                insert(models.users).values(
                    username=username,
                    display_name=user.display_name,
                    password_hash=password_hash,
                    roles=roles,
                    disabled=user.disabled,
                    created_at=now,
                )
            )
        except IntegrityError:
            raise AlreadyExists(f"user 'users/{username}' already exists", reason="USER_ALREADY_EXISTS") from None
        for team in teams:
            await session.execute(insert(models.team_members).values(team=team, username=username, created_at=now))
        row = await _user_row(session, username)
        return identity_pb2.CreateUserResponse(user=_user_proto(row, teams))

    async def UpdateUser(self, request, context):
        caller = _caller()
        user = request.user
        paths = _update_paths(request.update_mask.paths)
        username = _require_name(user.name, "users", "user.name")
        violations: list[FieldViolation] = []
        roles: list[str] = []
        if "roles" in paths:
            roles = _role_names(user.roles, violations)
            if not user.roles:
                # A user without roles may do nothing at all; say what to do instead.
                violations.append(FieldViolation(
                    "user.roles",
                    "must name at least one role (ROLE_VIEWER for read-only access); to stop someone using "
                    "the platform, disable them instead",
                ))
        if "display_name" in paths and len(user.display_name) > MAX_DISPLAY_NAME_LENGTH:
            violations.append(
                FieldViolation("user.display_name", f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
            )
        if violations:
            raise _invalid("user update", violations)

        session = db.session()
        table = models.users
        # The user and every enabled admin, locked in one deterministic order: two admins demoting
        # or disabling each other at once cannot both see the other as the admin that remains, and
        # concurrent updates cannot deadlock. (The LIKE narrows the lock set; the check below
        # reads the roles exactly.)
        admin_like = cast(table.c.roles, String).like(f'%"{ADMIN_ROLE}"%')
        locked = (await session.execute(
            select(table)
            .where(or_(table.c.username == username, and_(table.c.disabled.is_(False), admin_like)))
            .order_by(table.c.username)
            .with_for_update()
        )).all()
        row = next((r for r in locked if r.username == username), None)
        if row is None:
            raise _user_not_found(username)
        if user.etag and user.etag != user_etag(row):
            current = user_etag(row)
            raise EtagMismatch(
                f"user 'users/{username}' changed: etag {user.etag} is not the current {current} "
                "(get it again, re-apply your change, and send the new etag)",
                metadata={"current_etag": current, "user": f"users/{username}"},
            )
        disabled = user.disabled if "disabled" in paths else bool(row.disabled)
        new_roles = roles if "roles" in paths else list(row.roles or ())
        display_name = user.display_name if "display_name" in paths else (row.display_name or "")
        if "disabled" in paths and user.disabled and username == caller.username:
            raise FailedPrecondition(
                f"you cannot disable your own account 'users/{username}': ask another admin to disable it "
                "(this keeps an admin from locking themselves out by mistake)",
                reason="CANNOT_DISABLE_SELF", metadata={"user": f"users/{username}"},
            )
        stops_being_admin = _is_enabled_admin(row) and (disabled or ADMIN_ROLE not in new_roles)
        if stops_being_admin and not any(_is_enabled_admin(r) for r in locked if r.username != username):
            change = "disabling it" if disabled else "removing its admin role"
            raise FailedPrecondition(
                f"'users/{username}' is the last enabled admin: {change} would leave nobody able to manage "
                "users, teams and API keys. Give another user the admin role first "
                "(innominatus users set-roles USER admin), then retry",
                reason="LAST_ADMIN", metadata={"user": f"users/{username}"},
            )
        await session.execute(
            update(table)
            .where(table.c.username == username)
            .values(display_name=display_name, roles=new_roles, disabled=disabled, updated_at=times.now())
        )
        row = await _user_row(session, username)
        teams = (await _teams_by_user(session, [username]))[username]
        return identity_pb2.UpdateUserResponse(user=_user_proto(row, teams))

    async def ChangePassword(self, request, context):
        # Authorization is the policy's ("users.password.change": every role on its own user,
        # roles granting "users.update" on others). The checks below are what it cannot see or
        # should not be trusted alone with: the current password, the target's state, and
        # (belt and braces, should a policy edit grant too much) that only admins reset
        # another user's password.
        # Neither password may appear in anything raised here: errors are logged and audited.
        caller = _caller()
        violations: list[FieldViolation] = []
        username = _strip(request.name, "users")
        if not request.name.startswith("users/") or not NAME_PATTERN.match(username):
            # The policy compared `name` with the caller's own "users/<username>": a bare name
            # would be decided as someone else's, so only the full form is accepted.
            violations.append(FieldViolation("name", "must be users/<username>"))
        own = username == caller.username
        if own:
            if not request.current_password:
                violations.append(FieldViolation(
                    "current_password", "is required to change your own password"))
            elif request.current_password == request.new_password:
                violations.append(FieldViolation(
                    "new_password", "must differ from the current password: choose a new one"))
        elif request.current_password:
            violations.append(FieldViolation(
                "current_password",
                f"must be empty when resetting another user's password ({request.name}); it is only "
                "for changing your own",
            ))
        violations.extend(password_violations(request.new_password, "new_password"))
        if violations:
            raise _invalid("password change", violations)
        if not own and ADMIN_ROLE not in caller.roles:
            raise PermissionDenied(
                f"only an admin may reset another user's password ({request.name}); you may change your "
                f"own (users/{caller.username}) with your current password",
                reason="NOT_OWN_PASSWORD", metadata={"user": request.name},
            )

        # Hashed before the first statement so the transaction (opened by the audit layer)
        # stays short: argon2 is deliberately slow.
        new_hash = await passwords.hash_password(request.new_password)
        session = db.session()
        table = models.users
        # The caller's and the target's rows, locked in username order: two changes with the same
        # current password cannot both pass the check below, and a concurrent disable is seen.
        rows = {r.username: r for r in (await session.execute(
            select(table)
            .where(table.c.username.in_(sorted({caller.username, username})))
            .order_by(table.c.username)
            .with_for_update()
        )).all()}
        me, row = rows.get(caller.username), rows.get(username)
        if me is None:
            raise FailedPrecondition(f"user {caller.name!r} no longer exists", reason="USER_NOT_FOUND")
        if me.disabled:
            # The token outlived the disable (tokens stay valid until they expire); the account
            # itself may change nothing.
            raise FailedPrecondition(
                f"user {caller.name!r} is disabled: a disabled user cannot change passwords; "
                "ask an administrator to enable the account",
                reason="USER_DISABLED", metadata={"user": caller.name},
            )
        if row is None:
            raise _user_not_found(username)
        if own and not await passwords.verify_password(row.password_hash, request.current_password):
            raise PermissionDenied(
                f"current_password is not the current password of {caller.name}: nothing was changed; "
                "retry with the password you log in with (an admin can reset it if it is lost)",
                reason="INVALID_CURRENT_PASSWORD", metadata={"user": caller.name},
            )
        # update_time / the etag stay as they are: they describe what UpdateUser changes.
        await session.execute(update(table).where(table.c.username == username).values(password_hash=new_hash))
        log.info("password changed", target=f"users/{username}", reset_by_admin=not own)
        teams = (await _teams_by_user(session, [username]))[username]
        return identity_pb2.ChangePasswordResponse(user=_user_proto(row, teams))

    async def GetUser(self, request, context):
        username = _require_name(request.name, "users", "name")
        session = db.session()
        row = await _user_row(session, username)
        if row is None:
            raise NotFound(f"user {request.name!r} not found", reason="USER_NOT_FOUND")
        teams = (await _teams_by_user(session, [username]))[username]
        return identity_pb2.GetUserResponse(user=_user_proto(row, teams))

    async def ListUsers(self, request, context):
        table = models.users
        session = db.session()
        rows, token = await page_of(
            session, select(table), table.c.created_at, table.c.username, request.page_size, request.page_token
        )
        teams = await _teams_by_user(session, [r.username for r in rows])
        return identity_pb2.ListUsersResponse(
            users=[_user_proto(r, teams[r.username]) for r in rows], next_page_token=token
        )

    # -- teams -----------------------------------------------------------------

    async def CreateTeam(self, request, context):
        team = request.team
        violations: list[FieldViolation] = []
        slug = _strip(team.name, "teams")
        if not NAME_PATTERN.match(slug):
            violations.append(
                FieldViolation(
                    "team.name",
                    "must be teams/<name> (or <name>): a lowercase letter, then lowercase letters, digits or '-'",
                )
            )
        if len(team.display_name) > MAX_DISPLAY_NAME_LENGTH:
            violations.append(
                FieldViolation("team.display_name", f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
            )
        members: list[str] = []
        for index, member in enumerate(team.members):
            username = _strip(member, "users")
            if not NAME_PATTERN.match(username):
                violations.append(FieldViolation(f"team.members[{index}]", "must look like users/<username>"))
            elif username not in members:
                members.append(username)
        if violations:
            raise _invalid("team", violations)
        session = db.session()
        if await _team_row(session, slug) is not None:
            raise AlreadyExists(f"team 'teams/{slug}' already exists", reason="TEAM_ALREADY_EXISTS")
        missing = set(members) - await _existing(session, models.users.c.username, members)
        if missing:
            raise _invalid(
                "team", [FieldViolation("team.members", f"user users/{u} does not exist") for u in sorted(missing)]
            )
        now = times.now()
        try:
            await session.execute(
                insert(models.teams).values(name=slug, display_name=team.display_name, created_at=now)
            )
        except IntegrityError:
            raise AlreadyExists(f"team 'teams/{slug}' already exists", reason="TEAM_ALREADY_EXISTS") from None
        for username in members:
            await session.execute(insert(models.team_members).values(team=slug, username=username, created_at=now))
        row = await _team_row(session, slug)
        return identity_pb2.CreateTeamResponse(team=_team_proto(row, members))

    async def GetTeam(self, request, context):
        slug = _require_name(request.name, "teams", "name")
        session = db.session()
        row = await _team_row(session, slug)
        if row is None:
            raise NotFound(
                f"team 'teams/{slug}' not found (innominatus teams list shows the teams)",
                reason="TEAM_NOT_FOUND", metadata={"team": f"teams/{slug}"},
            )
        members = (await _members_by_team(session, [slug]))[slug]
        return identity_pb2.GetTeamResponse(team=_team_proto(row, members))

    async def ListTeams(self, request, context):
        table = models.teams
        session = db.session()
        rows, token = await page_of(
            session, select(table), table.c.created_at, table.c.name, request.page_size, request.page_token
        )
        members = await _members_by_team(session, [r.name for r in rows])
        return identity_pb2.ListTeamsResponse(teams=[_team_proto(r, members[r.name]) for r in rows], next_page_token=token)

    async def AddTeamMember(self, request, context):
        session = db.session()
        team, username = await _membership(session, request)
        slug = team.name
        members = (await _members_by_team(session, [slug]))[slug]
        if username not in members:  # adding an existing member changes nothing
            await session.execute(insert(models.team_members).values(team=slug, username=username, created_at=times.now()))
            members.append(username)
        return identity_pb2.AddTeamMemberResponse(team=_team_proto(team, members))

    async def RemoveTeamMember(self, request, context):
        # Idempotent like AddTeamMember: removing a non-member changes nothing; only names that
        # do not exist are errors (most likely a typo the caller wants to hear about).
        session = db.session()
        team, username = await _membership(session, request)
        slug = team.name
        table = models.team_members
        await session.execute(delete(table).where(table.c.team == slug, table.c.username == username))
        members = (await _members_by_team(session, [slug]))[slug]
        return identity_pb2.RemoveTeamMemberResponse(team=_team_proto(team, members))

    # -- API keys --------------------------------------------------------------

    async def CreateApiKey(self, request, context):
        subject = _caller()
        violations = []
        ttl_days = request.ttl_days or DEFAULT_API_KEY_TTL_DAYS
        if not 0 < ttl_days <= MAX_API_KEY_TTL_DAYS:
            violations.append(
                FieldViolation("ttl_days", f"must be between 1 and {MAX_API_KEY_TTL_DAYS} (0 means {DEFAULT_API_KEY_TTL_DAYS})")
            )
        if len(request.display_name) > MAX_DISPLAY_NAME_LENGTH:
            violations.append(FieldViolation("display_name", f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters"))
        if violations:
            raise _invalid("API key request", violations)
        session = db.session()
        owner = await _user_row(session, subject.username)
        if owner is None:
            raise FailedPrecondition(f"user {subject.name!r} no longer exists", reason="USER_NOT_FOUND")
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        now = times.now()
        key_id = uuid.uuid4().hex
        await session.execute(
            insert(models.api_keys).values(
                id=key_id,
                display_name=request.display_name,
                owner=owner.username,
                prefix=key[:API_KEY_PREFIX_LENGTH],
                key_hash=hash_api_key(key),
                created_at=now,
                expires_at=now + dt.timedelta(days=ttl_days),
                revoked_at=None,
            )
        )
        table = models.api_keys
        row = (await session.execute(select(table).where(table.c.id == key_id))).one()
        return identity_pb2.CreateApiKeyResponse(api_key=_api_key_proto(row), key=key)

    async def ListApiKeys(self, request, context):
        subject = _caller()
        table = models.api_keys
        query = select(table)
        if ADMIN_ROLE not in subject.roles:
            query = query.where(table.c.owner == subject.username)
        rows, token = await page_of(
            db.session(), query, table.c.created_at, table.c.id, request.page_size, request.page_token
        )
        return identity_pb2.ListApiKeysResponse(api_keys=[_api_key_proto(r) for r in rows], next_page_token=token)

    async def RevokeApiKey(self, request, context):
        subject = _caller()
        key_id = _strip(request.name, "apikeys")
        if not key_id:
            raise InvalidArgument("name is required", violations=[FieldViolation("name", "must be apikeys/<id>")])
        table = models.api_keys
        session = db.session()
        row = (await session.execute(select(table).where(table.c.id == key_id))).one_or_none()
        if row is None:
            raise NotFound(f"API key {request.name!r} not found", reason="API_KEY_NOT_FOUND")
        if row.owner != subject.username and ADMIN_ROLE not in subject.roles:
            raise PermissionDenied(
                f"API key {request.name!r} belongs to another user; only its owner or an admin may revoke it",
                reason="NOT_API_KEY_OWNER",
            )
        if row.revoked_at is None:  # revoking twice keeps the first revocation time
            await session.execute(update(table).where(table.c.id == key_id).values(revoked_at=times.now()))
            row = (await session.execute(select(table).where(table.c.id == key_id))).one()
        return identity_pb2.RevokeApiKeyResponse(api_key=_api_key_proto(row))


# -- bootstrap -------------------------------------------------------------------


class _BootstrapAbandoned(Exception):
    pass


def _write_private_new(path, data: bytes) -> None:
    """Create ``path`` with mode 0600; FileExistsError if it is already there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _bootstrap_event() -> audit_event_pb2.AuditEvent:
    event = audit_event_pb2.AuditEvent(
        id=str(uuid.uuid4()),
        service="identity",
        method="bootstrap",
        permission="users.create",
        actor="service:identity",
        outcome=audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED,
        reasons=["first start with no users: created the bootstrap admin"],
        resource_type="user",
        resource_name=f"users/{BOOTSTRAP_USERNAME}",
        occur_time=timestamp_pb2.Timestamp(),
    )
    event.occur_time.GetCurrentTime()
    event.details.update({"username": BOOTSTRAP_USERNAME, "roles": [ADMIN_ROLE]})
    return event


async def _user_count(database) -> int:
    async with database.transaction() as session:
        return (await session.execute(select(func.count()).select_from(models.users))).scalar_one()


async def bootstrap(runtime: Runtime) -> None:
    """Create the first admin when there are no users at all (see the module docstring)."""
    token_issuer(runtime)  # the signing key exists from the first start on
    database = runtime.db
    if await _user_count(database):
        return
    path = runtime.settings.data_dir / BOOTSTRAP_FILE
    if path.exists():
        log.warning(
            "no users exist but the bootstrap credentials file is already there; not creating an admin. "
            "Move the file away and restart identity to bootstrap again",
            file=str(path),
        )
        return
    password = secrets.token_urlsafe(18)
    password_hash = await passwords.hash_password(password)
    written = False
    try:
        async with database.transaction() as session:
            if (await session.execute(select(func.count()).select_from(models.users))).scalar_one():
                raise _BootstrapAbandoned()  # another replica got there first
            try:
                await session.execute(
                    insert(models.users).values(
                        username=BOOTSTRAP_USERNAME,
                        display_name="Administrator",
                        password_hash=password_hash,
                        roles=[ADMIN_ROLE],
                        disabled=False,
                        created_at=times.now(),
                    )
                )
            except IntegrityError:
                raise _BootstrapAbandoned() from None
            if runtime.outbox is not None:
                await runtime.outbox.add(session, _bootstrap_event())
            document = json.dumps({"username": BOOTSTRAP_USERNAME, "password": password}, indent=2) + "\n"
            try:
                _write_private_new(path, document.encode())
            except FileExistsError:
                raise _BootstrapAbandoned() from None
            written = True
    except _BootstrapAbandoned:
        return
    except BaseException:
        if written:  # the commit failed: the credentials in the file do not exist
            path.unlink(missing_ok=True)
        raise
    if runtime.outbox is not None:
        runtime.outbox.wakeup.set()
    log.info("bootstrap admin created; its credentials were written to the bootstrap file", file=str(path))


def _enabled_caller_required(handler):
    """Refuse a mutation whose calling user is disabled. Tokens outlive a disable (they are
    verified without asking identity, until they expire), so without this a disabled admin could
    re-enable themselves, create another admin or mint API keys with a token issued before."""

    @functools.wraps(handler)
    async def checked(self, request, context):
        ctx = reqctx.current()
        subject = ctx.subject if ctx is not None else None
        if subject is not None and subject.type == "user":
            row = await _user_row(db.session(), subject.username)
            if row is None or row.disabled:
                raise FailedPrecondition(
                    f"user {subject.name!r} is {'disabled' if row is not None else 'gone'}: its access token "
                    "still verifies until it expires, but the account may change nothing; ask an "
                    "administrator to enable it",
                    reason="USER_DISABLED", metadata={"user": subject.name},
                )
        return await handler(self, request, context)

    return checked


# Every mutation of the service, at one seam (the policy cannot know the account's state now).
for _method in describe_service(identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]).values():
    if _method.mutation and not _method.anonymous:
        setattr(IdentityServicer, _method.name, _enabled_caller_required(getattr(IdentityServicer, _method.name)))


def definition() -> ServiceDefinition:
    def register(server, runtime: Runtime) -> None:
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(runtime), server)

    def local_jwks(runtime: Runtime):
        issuer = token_issuer(runtime)  # load or create the key now: fail at start, not on a call

        async def jwks() -> str:
            return issuer.jwks_json()

        return jwks

    return ServiceDefinition(
        name="identity",
        descriptors=[identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]],
        register=register,
        outbox_table=models.outbox,
        local_jwks=local_jwks,
        on_start=bootstrap,
    )
