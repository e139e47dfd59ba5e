"""Names of users and teams that specs accepts from a request, checked against identity.

Which team a new application belongs to, and who may decide an environment's approval gate,
are stored by name. A name that exists nowhere makes something nobody can use: an application
owned by a team without members (only admins could deploy or delete it), a gate nobody can
approve. So specs asks identity whether each such name exists before storing it:

- the team a deployment names for a new application (or to claim an unowned one), from the
  policy facts provider and the handler of CreateDeployment (specs/teams.py ``resolve_team``);
- the ``user:<name>`` and ``team:<name>`` approvers of CreateEnvironment / UpdateEnvironment;
  a ``user:`` approver must also not be disabled (GetUser says so): a disabled user cannot log
  in to decide the gate.

Identity is asked with the end user's token, forwarded on the mTLS call like every other
downstream call of specs (kit/clients.py): GetUser, GetTeam, ListUsers and ListTeams let any
authenticated user read, so specs learns nothing the caller could not read through the
gateway, and needs no service identity of its own at identity (which would let it read on
behalf of nobody). Identity not answering refuses the request (fail closed): a name that
cannot be checked is not stored.
"""

from __future__ import annotations

import asyncio
import difflib

import grpc

from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit import context as reqctx
from innominatus.kit.errors import FieldViolation, InnominatusError, InvalidArgument, Unavailable, decode_rpc_error

IDENTITY_TIMEOUT = 5.0
# "Did you mean" reads at most this many pages of ListUsers / ListTeams (1000 names each): a
# suggestion is a courtesy, never worth a slow refusal.
SUGGESTION_PAGES = 3
SUGGESTION_PAGE_SIZE = 1000
# Teams this request already found at identity: the policy facts provider and the handler of
# CreateDeployment both resolve the team, identity is asked once.
_VERIFIED_TEAMS = "specs.identity_names.verified_teams"

_KINDS = {
    # kind: (collection, Get method, its request, List method, its request, the list's field)
    "user": ("users", "GetUser", identity_pb2.GetUserRequest, "ListUsers", identity_pb2.ListUsersRequest, "users"),
    "team": ("teams", "GetTeam", identity_pb2.GetTeamRequest, "ListTeams", identity_pb2.ListTeamsRequest, "teams"),
}


def _unavailable(what: str, cause: str) -> Unavailable:
    return Unavailable(
        f"identity could not be asked whether {what} exists ({cause}); nothing was changed: retry when the "
        "identity service answers",
        reason="IDENTITY_UNAVAILABLE",
    )


def suggestion(name: str, candidates: list[str]) -> str | None:
    """The existing name closest to ``name``, if one is close enough to be a typo of it."""
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return found[0] if found else None


class IdentityNames:
    """Asks identity whether users and teams exist (see the module docstring)."""

    def __init__(self, peers) -> None:
        self.peers = peers

    def _stub(self, what: str) -> identity_pb2_grpc.IdentityServiceStub:
        try:
            return self.peers.stub("identity", identity_pb2_grpc.IdentityServiceStub)
        except InnominatusError as exc:  # no address configured for identity
            raise _unavailable(what, exc.message) from None

    async def lookup(self, kind: str, name: str):
        """User or team ``name`` (bare) as identity returns it (a User or a Team message), None
        when there is none; UNAVAILABLE when identity cannot say."""
        collection, get, request_type, *_ = _KINDS[kind]
        what = f"{kind} {name!r}"
        stub = self._stub(what)
        try:
            response = await getattr(stub, get)(request_type(name=f"{collection}/{name}"), timeout=IDENTITY_TIMEOUT)
        except grpc.RpcError as exc:
            remote = decode_rpc_error(exc)
            # INVALID_ARGUMENT: identity's names are stricter than specs' (a team "9" is a
            # valid label here): a name identity refuses to look up is no name it holds.
            if remote.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            # Anything else (down, too slow, refusing us) leaves the question open: fail closed.
            raise _unavailable(what, f"{remote.code.name}: {remote.message}") from None
        return getattr(response, kind)

    async def exists(self, kind: str, name: str) -> bool:
        """Whether user or team ``name`` (bare) exists; UNAVAILABLE when identity cannot say."""
        return await self.lookup(kind, name) is not None

    async def names(self, kind: str) -> list[str]:
        """Existing names of ``kind`` (bare), for suggestions only: best effort, so a failure ends
        the listing with what was read so far instead of refusing the request."""
        collection, _, _, list_method, request_type, field = _KINDS[kind]
        found: list[str] = []
        token = ""
        try:
            stub = self._stub(kind)
            for _ in range(SUGGESTION_PAGES):
                page = await getattr(stub, list_method)(
                    request_type(page_size=SUGGESTION_PAGE_SIZE, page_token=token), timeout=IDENTITY_TIMEOUT)
                found += [item.name.removeprefix(f"{collection}/") for item in getattr(page, field)]
                token = page.next_page_token
                if not token:
                    break
        except (grpc.RpcError, InnominatusError):
            return found
        return found

    async def _missing(self, kind: str, names: list[str], disabled: set[str] | None = None) -> dict[str, str | None]:
        """The names of ``names`` that do not exist, each with the existing name it may be a typo of.
        ``disabled``, if given, receives the names that exist but are disabled users."""
        unique = list(dict.fromkeys(names))
        answers = await asyncio.gather(*(self.lookup(kind, n) for n in unique))
        if disabled is not None:
            disabled.update(n for n, found in zip(unique, answers) if getattr(found, "disabled", False))
        missing = [n for n, found in zip(unique, answers) if found is None]
        if not missing:
            return {}
        candidates = await self.names(kind)
        return {name: suggestion(name, candidates) for name in missing}

    @staticmethod
    def _no_such(kind: str, name: str, near: str | None) -> str:
        if near:
            return f"no {kind} {name!r}; did you mean {near!r}?"
        collection = _KINDS[kind][0]
        return f"no {kind} {name!r} (innominatus {collection} list shows the {collection})"

    async def require_team(self, team: str, field: str = "team") -> None:
        """INVALID_ARGUMENT / TEAM_NOT_FOUND unless team ``team`` (bare) exists."""
        ctx = reqctx.current()
        verified = ctx.extra.setdefault(_VERIFIED_TEAMS, set()) if ctx is not None else set()
        if team in verified:
            return
        missing = await self._missing("team", [team])
        if team in missing:
            near = missing[team]
            metadata = {"team": f"teams/{team}"}
            if near:
                metadata["suggestion"] = f"teams/{near}"
            raise InvalidArgument(
                f"team {team!r} does not exist" + (f"; did you mean {near!r}?" if near else ".")
                + " `innominatus teams list` shows the teams; an admin creates one with `innominatus teams create`",
                reason="TEAM_NOT_FOUND", metadata=metadata,
                violations=[FieldViolation(field, self._no_such("team", team, near))])
        verified.add(team)

    async def check_approvers(self, approvers, field: str = "environment.approvers") -> None:
        """INVALID_ARGUMENT / INVALID_APPROVERS with a violation per ``user:`` or ``team:`` entry
        naming no existing user or team, or a disabled user (who cannot log in to decide the
        gate). ``approvers``: entries check_approval accepted (so well-formed); ``role:`` entries
        are checked there against the known roles."""
        entries = [str(a).strip() for a in approvers]
        by_kind: dict[str, list[str]] = {"user": [], "team": []}
        for entry in entries:
            kind, _, value = entry.partition(":")
            if kind in by_kind:
                by_kind[kind].append(value)
        disabled: set[str] = set()
        missing = {kind: await self._missing(kind, names, disabled if kind == "user" else None) if names else {}
                   for kind, names in by_kind.items()}
        violations = []
        for index, entry in enumerate(entries):
            kind, _, value = entry.partition(":")
            if value in missing.get(kind, {}):
                near = missing[kind][value]
                violations.append(FieldViolation(f"{field}[{index}]", self._no_such(kind, value, near)))
            elif kind == "user" and value in disabled:
                violations.append(FieldViolation(
                    f"{field}[{index}]",
                    f"user {value!r} is disabled and cannot log in to approve: name another approver, or ask "
                    f"an admin to enable them (innominatus users enable {value})"))
        if violations:
            raise InvalidArgument(
                f"{violations[0].field}: {violations[0].description}"
                + (f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""),
                reason="INVALID_APPROVERS", violations=violations)


__all__ = ["IdentityNames", "suggestion"]
