"""Which team owns an application, and the facts team quotas are decided on.

An application is owned by one team, for good: the team named by (or defaulted for) its first
deployment; only its members (and admins) may deploy it, roll it back or remove it (the policy
decides that on ``input.facts.team``, given by the providers at the end of this module). Quotas
themselves are policy (``team_quotas`` in policies/innominatus/authz.rego); this module only
counts, from specs' own tables, what a team holds now and would hold after a deployment, and
hands that to the policy as ``input.facts`` (see docs/policy-authoring.md).

What a team holds: the applications it owns that still run somewhere (not removed from every
environment), and the resources of their latest deployment per environment and workload (a
resource several of them share counted once).
"""

from __future__ import annotations

from typing import Awaitable, Callable

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from innominatus.kit import context as reqctx
from innominatus.kit import db, times
from innominatus.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument
from innominatus.kit.names import check_name
from innominatus.specs import models
from innominatus.specs.validation import validate_score


def validated_in_request(score_yaml: str):
    """``validate_score(score_yaml)``, once per request: the CreateDeployment facts provider runs
    before the handler, and both need the result (a large Score file is not parsed twice)."""
    ctx = reqctx.current()
    if ctx is None:
        return validate_score(score_yaml)
    cached = ctx.extra.get("score_validation")
    if cached is None or cached[0] != score_yaml:
        cached = (score_yaml, validate_score(score_yaml))
        ctx.extra["score_validation"] = cached
    return cached[1]


def team_slug(value: str) -> str:
    """ "teams/payments" or "payments" -> "payments" (INVALID_ARGUMENT for anything else)."""
    slug = value.strip().removeprefix("teams/")
    check_name(slug, "team")
    return slug


def _subject_teams() -> list[str]:
    ctx = reqctx.current()
    subject = ctx.subject if ctx is not None else None
    return sorted(t.removeprefix("teams/") for t in (subject.teams if subject else ()))


async def owner(session, application: str):
    table = models.applications
    return (await session.execute(select(table).where(table.c.name == application))).one_or_none()


async def resolve_team(session, application: str, requested: str,
                       verify: Callable[[str], Awaitable[None]] | None = None):
    """The team that owns (or will own) ``application`` and its ownership row (None if new).

    An owned application keeps its team; a new one takes the named team, else the deploying
    user's only team, else none (a user in no team). A user in several teams must name one.
    An existing application no team owns stays so unless a team is named (which claims it).

    ``verify(team)`` raises unless a team the request names exists (specs/identity_names.py):
    called only when that name is about to become an owner. Redeploying an owned application
    asks nothing, and a defaulted team comes from the user's token, which identity issued.
    """
    wanted = team_slug(requested) if requested.strip() else ""
    row = await owner(session, application)
    if row is not None and row.team:
        if wanted and wanted != row.team:
            raise FailedPrecondition(
                f"application {application!r} is owned by team {row.team!r}, not {wanted!r}: an application keeps "
                f"the team of its first deployment. Deploy it without --team (or with --team {row.team}), or "
                f"deploy under another application name (--app) to have team {wanted!r} own it",
                reason="APPLICATION_OWNED_BY_OTHER_TEAM",
                metadata={"application": f"applications/{application}", "team": f"teams/{row.team}",
                          "requested_team": f"teams/{wanted}"},
            )
        return row.team, row
    if wanted and verify is not None:
        await verify(wanted)
    if wanted or row is not None:
        return wanted, row
    mine = _subject_teams()
    if len(mine) > 1:
        listed = ", ".join(mine)
        raise InvalidArgument(
            f"you are a member of several teams ({listed}): name the team that will own the new application "
            f"{application!r} with --team (the request's `team` field), e.g. --team {mine[0]}",
            reason="TEAM_REQUIRED",
            metadata={"teams": ",".join(f"teams/{t}" for t in mine)},
            violations=[FieldViolation("team", f"one of your teams: {listed}")],
        )
    return (mine[0] if mine else ""), None


async def record_owner(session, application: str, team: str, row, creator: str) -> None:
    """Write the ownership of a new application (or a team claiming an unowned one)."""
    table = models.applications
    if row is not None:
        if team and not row.team:
            await session.execute(table.update().where((table.c.name == application) & (table.c.team == ""))
                                  .values(team=team))
        return
    try:
        async with session.begin_nested():
            await session.execute(table.insert().values(name=application, team=team, created_by=creator,
                                                        created_at=times.now()))
    except IntegrityError:  # a first deployment of the same application at the same moment
        current = await owner(session, application)
        if current is not None and current.team != team:
            raise FailedPrecondition(
                f"application {application!r} was just deployed for the first time by {current.created_by} "
                f"for {'team ' + repr(current.team) if current.team else 'no team'}; it keeps that owner. Deploy "
                f"it again without --team, or under another application name (--app)",
                reason="APPLICATION_OWNED_BY_OTHER_TEAM",
                metadata={"application": f"applications/{application}", "team": f"teams/{current.team}"},
            ) from None


async def _lock_team(session, team: str) -> None:
    """Serialise quota decisions of one team until this transaction ends, so two deployments
    at the same moment cannot both take the last place (PostgreSQL; SQLite has one writer)."""
    if team and session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                              {"key": f"innominatus.specs.team-quota:{team}"})


async def quota_facts(session, *, team: str, application: str, application_new: bool, environment: str,
                      workload: str, claims: int) -> dict:
    """``input.facts`` of a deployment of ``workload`` (``claims`` resources) of ``application``
    to ``environment``, owned by ``team``: what the team holds now and after it."""
    await _lock_team(session, team)
    deployments, applications = models.deployments, models.applications
    rows = (
        await session.execute(
            select(deployments.c.application, deployments.c.environment, deployments.c.workload,
                   deployments.c.resources)
            .join(applications, applications.c.name == deployments.c.application)
            .where((applications.c.team == team) & deployments.c.removed_at.is_(None))
            .order_by(deployments.c.created_at, deployments.c.id)
        )
    ).all()
    latest: dict[tuple[str, str, str], list] = {}
    for r in rows:  # oldest first: the last one per environment and workload is what runs there
        latest[(r.application, r.environment, r.workload)] = list(r.resources or [])
    held: set[str] = set()
    kept: set[str] = set()  # what stays when this deployment replaces its predecessor
    for key, names in latest.items():
        held.update(names)
        if key != (application, environment, workload):
            kept.update(names)
    running = {key[0] for key in latest}
    return {
        "team": team,
        "application": application,
        "application_new": application_new,
        "usage": {"applications": len(running), "resources": len(held)},
        # The workload's claims are counted as new resources (a shared one held already is
        # counted again: the projection errs towards the quota, never past it).
        "projected": {"applications": len(running | {application}), "resources": len(kept) + claims},
    }


# -- the providers the specs service registers (request -> input.facts) --------------------------


async def create_deployment_facts(request, verify: Callable[[str], Awaitable[None]] | None = None) -> dict:
    """Facts of CreateDeployment. Empty when the request is invalid: the handler refuses it
    with the findings, which say more than a quota would. ``verify``: as for resolve_team; a
    team that does not exist is refused here, before the policy would only say its name is
    not one of the user's teams."""
    result = validated_in_request(request.score_yaml)
    if not result.valid or not request.environment:
        return {}
    application = request.application.removeprefix("applications/") or result.workload
    check_name(application, "application")
    check_name(request.environment, "environment")
    session = db.session()
    team, row = await resolve_team(session, application, request.team, verify)
    return await quota_facts(session, team=team, application=application, application_new=row is None,
                             environment=request.environment, workload=result.workload,
                             claims=len((result.document or {}).get("resources") or {}))


async def rollback_deployment_facts(request) -> dict:
    """Facts of RollbackDeployment: the earlier set's resources come back. Empty when the
    deployment does not exist (the handler says NOT_FOUND)."""
    deployment_id = request.name.removeprefix("deployments/")
    if not deployment_id or "/" in deployment_id:
        return {}
    session = db.session()
    deployments, versions = models.deployments, models.workload_versions
    target = (await session.execute(select(deployments).where(deployments.c.id == deployment_id))).one_or_none()
    if target is None:
        return {}
    source = (
        await session.execute(select(versions.c.source).where(
            (versions.c.workload == target.workload) & (versions.c.version == target.workload_version)))
    ).scalar_one_or_none()
    document = validate_score(source).document if source is not None else None
    row = await owner(session, target.application)
    return await quota_facts(session, team=row.team if row is not None else "", application=target.application,
                             application_new=False, environment=target.environment, workload=target.workload,
                             claims=len((document or {}).get("resources") or {}))


async def delete_application_facts(request) -> dict:
    """Facts of DeleteApplication: the team owning the application, whose members (and admins)
    alone may remove it. Empty when the name is no application name (the handler says so)."""
    application = request.name.removeprefix("applications/")
    if not application or "/" in application or len(application) > 128:
        return {}
    row = await owner(db.session(), application)
    return {"team": row.team if row is not None else "", "application": application}
