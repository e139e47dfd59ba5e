"""Request context carried through an RPC in contextvars.

The server interceptors fill it in; handlers, logs, the policy gate, the audit outbox and
outgoing client calls read it, so nothing has to be passed down by hand.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Subject:
    """Who a request acts for: an end user (from a verified token) or a platform service."""

    type: str  # "user" or "service"
    name: str  # "users/alice" or "services/specs"
    username: str
    roles: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()

    @property
    def actor(self) -> str:
        return self.username if self.type == "user" else f"service:{self.username}"

    def as_policy_input(self) -> dict:
        return {
            "type": self.type,
            "name": self.name,
            "username": self.username,
            "roles": list(self.roles),
            "teams": list(self.teams),
        }


@dataclass(frozen=True)
class Peer:
    """The mTLS peer of the current call, from its certificate's SPIFFE ID."""

    service: str
    spiffe_id: str


@dataclass
class RequestContext:
    request_id: str
    method: str = ""
    trace_id: str = ""
    peer: Peer | None = None
    subject: Subject | None = None
    # The caller's bearer token, forwarded on calls this request makes to other services
    # so each of them verifies the user itself.
    token: str = ""
    extra: dict = field(default_factory=dict)


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("innominatus_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def set_current(ctx: RequestContext | None) -> contextvars.Token:
    return _current.set(ctx)


def reset(token: contextvars.Token) -> None:
    _current.reset(token)
