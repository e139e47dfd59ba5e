"""The server interceptors every service runs, outermost first:

1. OpenTelemetry tracing (the stock instrumentation; added by :mod:`innominatus.kit.server`)
2. :class:`RequestContextInterceptor` - request id, trace id, logs; turns errors into statuses
3. :class:`MetricsInterceptor` - Prometheus requests, errors and latency per method
4. :class:`PeerInterceptor` - the mTLS peer's SPIFFE ID must be allowed to call the method
5. :class:`AuthenticationInterceptor` - verifies the end-user token (every service does)
6. :class:`AuditInterceptor` - opens the RPC's transaction; writes the audit event of every
   mutation (allowed, denied or failed) into the outbox, in that same transaction
7. :class:`PolicyInterceptor` - asks OPA about every mutation; deny or no answer stops it. A
   service may register per RPC a *policy facts* provider (``Runtime.register_policy_facts``)
   for what the request does not carry (e.g. how many applications a team owns); it runs in
   the transaction layer 6 opened and its answer goes to the policy as ``input.facts``

Methods are described by their proto options (:mod:`innominatus.kit.methods`), so handlers
contain no authorization code. Calls to methods outside the table (health, reflection) pass
through untouched.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from typing import Awaitable, Callable

import grpc
from cryptography import x509
from google.protobuf import json_format, timestamp_pb2

from innominatus.common.v1 import audit_event_pb2
from innominatus.kit import context as reqctx
from innominatus.kit.auth import TokenVerifier, bearer_token
from innominatus.kit.context import Peer, RequestContext, Subject
from innominatus.kit.db import Database
from innominatus.kit.errors import (
    FieldViolation,
    InnominatusError,
    Internal,
    InvalidArgument,
    PermissionDenied,
    PolicyDenied,
    PolicyUnavailable,
    Unauthenticated,
)
from innominatus.kit.logs import get_logger, redact
from innominatus.kit.methods import MethodInfo
from innominatus.kit.outbox import Outbox
from innominatus.kit.pki import identity_from_spiffe
from innominatus.kit.telemetry import POLICY_DECISIONS, RPC_ERRORS, RPC_LATENCY, RPC_REQUESTS, current_trace_id

log = get_logger(__name__)

Proceed = Callable[[], Awaitable]


class _MethodInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handlers of known methods with :meth:`around`."""

    def __init__(self, methods: dict[str, MethodInfo]) -> None:
        self.methods = methods

    async def around(self, info: MethodInfo, request, context: grpc.aio.ServicerContext, proceed: Proceed):
        return await proceed()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        info = self.methods.get(handler_call_details.method)
        if handler is None or info is None:
            return handler
        around = self.around
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request, context):
                return await around(info, request, context, lambda: inner(request, context))

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request, context):
                # Run the inner layers (and the handler up to its first response) inside
                # this layer's ``around``, so the layers nest as they do for unary calls:
                # merely creating the inner generator would run the inner checks after
                # the outer ``around`` (and the request context) had already ended.
                responses = inner_stream(request, context)
                first: list = []

                async def start():
                    try:
                        first.append(await responses.__anext__())
                    except StopAsyncIteration:
                        pass

                try:
                    await around(info, request, context, start)
                    if first:
                        yield first[0]
                        async for item in responses:
                            yield item
                except InnominatusError as exc:
                    await context.abort_with_status(exc.to_status())

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
            )
        return handler


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v
    return None


class RequestContextInterceptor(_MethodInterceptor):
    async def around(self, info, request, context, proceed):
        request_id = _metadata_value(context, "x-request-id") or uuid.uuid4().hex
        ctx = RequestContext(request_id=request_id[:128], method=info.full_name, trace_id=current_trace_id())
        token = reqctx.set_current(ctx)
        try:
            return await proceed()
        except InnominatusError as exc:
            if exc.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
                log.warning("rpc failed", reason=exc.reason, error=exc.message)
            else:
                log.info("rpc refused", reason=exc.reason, error=exc.message)
            await context.abort_with_status(exc.to_status())
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error while handling rpc")
            err = Internal(f"internal error; quote request id {ctx.request_id} when reporting it")
            await context.abort_with_status(err.to_status())
        finally:
            reqctx.reset(token)


class MetricsInterceptor(_MethodInterceptor):
    def __init__(self, methods, service: str) -> None:
        super().__init__(methods)
        self.service = service

    async def around(self, info, request, context, proceed):
        started = time.perf_counter()
        code = "OK"
        try:
            return await proceed()
        except InnominatusError as exc:
            code = exc.code.name
            RPC_ERRORS.labels(self.service, info.name, exc.reason).inc()
            raise
        except Exception:
            code = "INTERNAL"
            RPC_ERRORS.labels(self.service, info.name, "INTERNAL").inc()
            raise
        finally:
            RPC_REQUESTS.labels(self.service, info.name, code).inc()
            RPC_LATENCY.labels(self.service, info.name).observe(time.perf_counter() - started)


_peer_cache: dict[bytes, Peer | None] = {}


def peer_from_context(context: grpc.aio.ServicerContext) -> Peer | None:
    """The SPIFFE identity in the verified client certificate of this call."""
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        return None
    pem = pems[0]
    if pem in _peer_cache:
        return _peer_cache[pem]
    peer = None
    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            name = identity_from_spiffe(uri)
            if name:
                peer = Peer(service=name, spiffe_id=uri)
                break
    except (ValueError, x509.ExtensionNotFound):
        peer = None
    if len(_peer_cache) > 1024:
        _peer_cache.clear()
    _peer_cache[pem] = peer
    return peer


class PeerInterceptor(_MethodInterceptor):
    async def around(self, info, request, context, proceed):
        peer = peer_from_context(context)
        if peer is None:
            raise PermissionDenied(
                "the client certificate carries no innominatus SPIFFE ID (spiffe://innominatus.local/...)",
                reason="PEER_UNKNOWN",
            )
        ctx = reqctx.current()
        if ctx is not None:
            ctx.peer = peer
        if peer.service not in info.callers:
            raise PermissionDenied(
                f"peer {peer.spiffe_id} may not call {info.full_name}; allowed callers: {', '.join(sorted(info.callers))}",
                reason="PEER_NOT_ALLOWED",
                metadata={"peer": peer.spiffe_id, "method": info.full_name},
            )
        return await proceed()


class AuthenticationInterceptor(_MethodInterceptor):
    def __init__(self, methods, verifier: TokenVerifier) -> None:
        super().__init__(methods)
        self.verifier = verifier

    async def around(self, info, request, context, proceed):
        ctx = reqctx.current()
        token = bearer_token(context.invocation_metadata())
        if token:
            ctx.subject = await self.verifier.verify(token)
            ctx.token = token
        elif info.service_subject and ctx.peer is not None:
            name = ctx.peer.service
            ctx.subject = Subject(type="service", name=f"services/{name}", username=name)
        elif not info.anonymous:
            raise Unauthenticated(
                "missing access token: log in with `innominatus login` and send it as 'authorization: Bearer <token>'",
                reason="TOKEN_MISSING",
            )
        if info.read_roles and not (ctx.subject and set(ctx.subject.roles) & info.read_roles):
            raise PermissionDenied(
                f"{info.name} needs one of the roles {', '.join(sorted(info.read_roles))}",
                reason="ROLE_REQUIRED",
                metadata={"roles": ",".join(sorted(info.read_roles))},
            )
        return await proceed()


def _camel_case_mask_paths(request) -> list[FieldViolation]:
    """A violation per update-mask path written in lowerCamelCase (``requiresApproval``): the
    JSON spelling, which a gRPC FieldMask does not take (AIP-161: paths are field names)."""
    violations = []
    for field, value in request.ListFields():
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.FieldMask":
            for index, path in enumerate(value.paths):
                if path != path.lower():
                    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", path).lower()
                    violations.append(FieldViolation(
                        f"{field.name}.paths[{index}]",
                        f"{path!r} is the JSON spelling; a FieldMask names fields as in the proto: {snake!r}",
                    ))
    return violations


def request_as_dict(request) -> dict:
    try:
        return redact(json_format.MessageToDict(request, preserving_proto_field_name=True))
    except json_format.SerializeToJsonError as exc:
        if violations := _camel_case_mask_paths(request):
            raise InvalidArgument(
                f"{violations[0].field}: {violations[0].description}", reason="INVALID_FIELD_MASK",
                violations=violations,
            ) from None
        # e.g. an infinite or NaN number in a Struct: nothing downstream could record it.
        raise InvalidArgument(f"the request cannot be represented as JSON: {exc}", reason="INVALID_NUMBER") from None


# Request text kept verbatim in an audit record at most; longer values (a whole Score file, a
# script) are recorded by digest, since the chain is immutable and may not hold what they
# embed.
AUDIT_TEXT_LIMIT = 256
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")


def audit_details(value):
    """The request as an audit record keeps it: secret-looking keys already redacted, long
    texts replaced by their SHA-256, credentials in URLs masked."""
    if isinstance(value, dict):
        return {k: audit_details(v) for k, v in value.items()}
    if isinstance(value, list):
        return [audit_details(v) for v in value]
    if isinstance(value, str):
        if len(value) > AUDIT_TEXT_LIMIT:
            digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
            return f"sha256:{digest} ({len(value.encode('utf-8', 'surrogatepass'))} bytes)"
        return _URL_CREDENTIALS.sub(r"\1***@", value)
    return value


def describe_resource(info: MethodInfo, request_fields: dict) -> dict:
    """What a mutation acts on, for the policy input and the audit record."""
    name = ""
    for key in ("name", "application", "team", "workflow"):
        if isinstance(request_fields.get(key), str) and request_fields[key]:
            name = request_fields[key]
            break
    if not name:
        for value in request_fields.values():
            if isinstance(value, dict):
                name = value.get("name") or value.get("username") or ""
                if name:
                    break
    return {
        "type": info.resource_type,
        "name": name,
        # Only names: a request whose `environment` is a message (CreateEnvironment) names it above.
        "environment": request_fields["environment"] if isinstance(request_fields.get("environment"), str) else "",
        "application": request_fields["application"] if isinstance(request_fields.get("application"), str) else "",
    }


# A policy facts provider: request -> facts (a JSON object) for ``input.facts``.
PolicyFactsProvider = Callable[[object], Awaitable[dict]]


class PolicyInterceptor(_MethodInterceptor):
    """Every mutation is decided by the policy engine before the handler runs.

    ``facts`` maps a method's full name to its :data:`PolicyFactsProvider`. The map is the
    service's ``Runtime.policy_facts``, filled when the service registers its servicer (after
    this interceptor was built), so it is read at call time.
    """

    def __init__(self, methods, engine, facts: dict[str, PolicyFactsProvider] | None = None) -> None:
        super().__init__(methods)
        self.engine = engine
        self.facts = facts if facts is not None else {}

    async def _gather_facts(self, info: MethodInfo, provider: PolicyFactsProvider, request) -> dict:
        """Ask the provider; anything but a JSON object from it refuses the request (fail closed)."""
        ctx = reqctx.current()
        # A refusal here is recorded by the audit layer like any other (it keys on decision_id).
        ctx.extra.setdefault("decision_id", "")
        try:
            facts = await provider(request)
        except InnominatusError:
            raise  # a deliberate, typed refusal (e.g. INVALID_ARGUMENT): the caller can act on it
        except Exception as exc:
            # The cause (e.g. a database error) goes to the log only: it may name internals.
            log.exception("policy facts provider failed", method=info.full_name)
            raise PolicyUnavailable(
                f"the facts the policy needs to decide {info.name} could not be gathered ({type(exc).__name__}), "
                f"so the request is refused; retry, and quote request id {ctx.request_id} if it keeps failing",
                reason="POLICY_FACTS_UNAVAILABLE",
                metadata={"permission": info.permission},
            ) from None
        try:
            if not isinstance(facts, dict):
                raise TypeError(f"expected an object, got {type(facts).__name__}")
            json.dumps(facts, allow_nan=False)  # what the engines receive must be plain JSON
        except (TypeError, ValueError) as exc:
            log.error("policy facts provider returned unusable facts", method=info.full_name, error=str(exc))
            raise PolicyUnavailable(
                f"the facts the policy needs to decide {info.name} are malformed ({exc}), so the request is "
                f"refused; this is a bug in the service: quote request id {ctx.request_id} when reporting it",
                reason="POLICY_FACTS_UNAVAILABLE",
                metadata={"permission": info.permission},
            ) from None
        return facts

    async def around(self, info, request, context, proceed):
        if not info.mutation:
            return await proceed()
        from innominatus.kit.policy import PolicyEngineUnavailable

        ctx = reqctx.current()
        if info.omit_request_from_policy:
            fields = {"size_bytes": request.ByteSize()}
        else:
            fields = request_as_dict(request)
        policy_input = {
            "subject": ctx.subject.as_policy_input() if ctx.subject else None,
            "peer": {"service": ctx.peer.service, "spiffe_id": ctx.peer.spiffe_id} if ctx.peer else None,
            "method": info.full_name,
            "permission": info.permission,
            "request": fields,
            "resource": describe_resource(info, fields),
        }
        provider = self.facts.get(info.full_name)
        if provider is not None:
            policy_input["facts"] = await self._gather_facts(info, provider, request)
        try:
            decision = await self.engine.decide(policy_input)
        except PolicyEngineUnavailable as exc:
            POLICY_DECISIONS.labels(info.permission, "unavailable").inc()
            ctx.extra["decision_id"] = ""
            raise PolicyUnavailable(
                f"{exc}; mutations are refused until the policy engine answers (reads still work)",
                metadata={"permission": info.permission},
            ) from None
        ctx.extra["decision_id"] = decision.decision_id
        if not decision.allow:
            POLICY_DECISIONS.labels(info.permission, "deny").inc()
            raise PolicyDenied(list(decision.reasons), decision.decision_id, info.permission)
        POLICY_DECISIONS.labels(info.permission, "allow").inc()
        return await proceed()


class AuditInterceptor(_MethodInterceptor):
    """Runs each call in one transaction and records every mutation's outcome in it."""

    def __init__(self, methods, service: str, db: Database | None, outbox: Outbox | None) -> None:
        super().__init__(methods)
        self.service = service
        self.db = db
        self.outbox = outbox

    def _event(self, info: MethodInfo, request, outcome: int, reasons: list[str]) -> audit_event_pb2.AuditEvent:
        ctx = reqctx.current()
        fields = request_as_dict(request)
        resource = describe_resource(info, fields)
        event = audit_event_pb2.AuditEvent(
            id=str(uuid.uuid4()),
            service=self.service,
            method=info.full_name,
            permission=info.permission,
            actor=ctx.subject.actor if ctx.subject else "anonymous",
            peer=ctx.peer.service if ctx.peer else "",
            outcome=outcome,
            decision_id=ctx.extra.get("decision_id", ""),
            reasons=reasons,
            resource_type=resource["type"],
            resource_name=resource["name"],
            request_id=ctx.request_id,
            trace_id=ctx.trace_id,
            occur_time=timestamp_pb2.Timestamp(),
        )
        event.occur_time.GetCurrentTime()
        event.details.update(audit_details(fields))
        return event

    async def around(self, info, request, context, proceed):
        if self.db is None:
            return await proceed()
        audited = info.mutation and self.outbox is not None and info.permission != "audit.append"
        if info.server_streaming:
            # Streams are reads that outlive this frame; their handlers open their own
            # transaction.
            return await proceed()
        try:
            async with self.db.transaction() as session:
                response = await proceed()
                if audited:
                    await self.outbox.add(session, self._event(info, request, audit_event_pb2.AUDIT_OUTCOME_SUCCEEDED, []))
        except (PolicyDenied, PolicyUnavailable) as exc:
            if audited:
                reasons = exc.reasons if isinstance(exc, PolicyDenied) else [exc.message]
                await self.outbox.record_alone(self._event(info, request, audit_event_pb2.AUDIT_OUTCOME_DENIED, reasons))
            raise
        except InnominatusError as exc:
            if audited and reqctx.current().extra.get("decision_id") is not None:
                await self.outbox.record_alone(
                    self._event(info, request, audit_event_pb2.AUDIT_OUTCOME_FAILED, [f"{exc.reason}: {exc.message}"])
                )
            raise
        except Exception:
            if audited and reqctx.current().extra.get("decision_id") is not None:
                await self.outbox.record_alone(
                    self._event(info, request, audit_event_pb2.AUDIT_OUTCOME_FAILED, ["INTERNAL: unexpected error"])
                )
            raise
        if audited:
            self.outbox.wakeup.set()
        return response
