"""The REST gateway: HTTP/JSON in front of the platform's gRPC services.

Every REST route comes from a ``google.api.http`` annotation in the protos (see
:mod:`innominatus.gateway.transcoding`); nothing here names an RPC except the identity
``Login`` used to exchange API keys. The gateway calls the services over mTLS with its own
``gateway`` certificate and forwards the caller's bearer token and request id, so each
service authenticates and authorizes the user itself; the gateway only translates, limits
and reports.

Endpoints besides the generated ones: ``/healthz`` (alive), ``/readyz`` (every backend's
``grpc.health.v1`` status), ``/metrics`` (Prometheus) and ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

import grpc
import uvicorn
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message as AsgiMessage, Receive, Scope, Send

from innominatus.gateway import problems
from innominatus.gateway.openapi import build_openapi
from innominatus.gateway.ratelimit import TokenBucketLimiter, client_key, retry_after_seconds
from innominatus.gateway.transcoding import (
    BACKENDS,
    HttpRoute,
    RequestError,
    Router,
    build_request,
    build_routes,
    response_payload,
)
from innominatus.identity.v1 import identity_pb2
from innominatus.kit import context as reqctx
from innominatus.kit.clients import PeerChannels
from innominatus.kit.config import Settings
from innominatus.kit.errors import Unavailable
from innominatus.kit.logs import get_logger
from innominatus.kit.telemetry import current_trace_id, tracer_provider

log = get_logger("innominatus.gateway")

UNARY_TIMEOUT_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 2.0
API_KEY_PREFIX = "inn_"
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
FIXED_PATHS = EXEMPT_PATHS | {"/api/v1/openapi.json"}
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_SCOPE_KEY = "innominatus.gateway"
_LOGIN = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].methods_by_name["Login"]
_LOGIN_PATH = f"/{_LOGIN.containing_service.full_name}/{_LOGIN.name}"

HTTP_REQUESTS = Counter(
    "innominatus_gateway_http_requests_total",
    "HTTP requests answered by the gateway, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "innominatus_gateway_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts), by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass
class _RequestState:
    request_id: str
    route: str = "unmatched"


class BodyTooLarge(Exception):
    pass


def _state(request: Request) -> _RequestState:
    state = request.scope.get(_SCOPE_KEY)
    if state is None:  # only when the app is mounted without its middleware
        state = request.scope[_SCOPE_KEY] = _RequestState(uuid.uuid4().hex)
    return state


# --------------------------------------------------------------------------- middleware


class GatewayMiddleware:
    """Request id, tracing span, rate limit, metrics, access log and the last-resort 500.

    A pure ASGI middleware (not BaseHTTPMiddleware), so streamed responses stay streamed
    and the context variables it sets are seen by the endpoint.
    """

    def __init__(self, app: ASGIApp, limiter: TokenBucketLimiter) -> None:
        self.app = app
        self.limiter = limiter
        self.tracer = trace.get_tracer("innominatus.gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        state = _RequestState(request_id)
        scope[_SCOPE_KEY] = state
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        if path in FIXED_PATHS:
            state.route = path
        started = time.perf_counter()
        response = {"status": 500, "started": False}

        async def send_with_id(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["started"] = True
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
                HTTP_LATENCY.labels(state.route, method).observe(time.perf_counter() - started)
            await send(message)

        ctx = reqctx.RequestContext(request_id=request_id)
        token = reqctx.set_current(ctx)
        try:
            with self.tracer.start_as_current_span(
                f"HTTP {method}",
                kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": path, "innominatus.request_id": request_id},
            ) as span:
                ctx.trace_id = current_trace_id()
                try:
                    if path not in EXEMPT_PATHS and (wait := self.limiter.acquire(self._client(scope, headers))):
                        retry = retry_after_seconds(wait)
                        doc = problems.problem(
                            429,
                            "RATE_LIMITED",
                            f"too many requests from this client; retry in {retry} s",
                            request_id,
                            metadata={"retry_after_seconds": str(retry)},
                        )
                        await problems.problem_response(doc, headers={"Retry-After": str(retry)})(
                            scope, receive, send_with_id
                        )
                    else:
                        await self.app(scope, receive, send_with_id)
                except Exception as exc:  # the last resort: never a traceback to the client
                    log.error("unhandled error", http_method=method, route=state.route, error=type(exc).__name__, exc_info=True)
                    span.record_exception(exc)
                    if not response["started"]:
                        doc = problems.problem(500, "INTERNAL", "internal error in the gateway", request_id)
                        await problems.problem_response(doc)(scope, receive, send_with_id)
                finally:
                    span.update_name(f"{method} {state.route}")
                    span.set_attribute("http.route", state.route)
                    span.set_attribute("http.response.status_code", response["status"])
                    if response["status"] >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
        finally:
            status = response["status"]
            HTTP_REQUESTS.labels(state.route, method, str(status)).inc()
            if path not in EXEMPT_PATHS:
                log.info(
                    "http request",
                    http_method=method,
                    route=state.route,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            reqctx.reset(token)

    @staticmethod
    def _client(scope: Scope, headers: Headers) -> str:
        client = scope.get("client")
        return client_key(headers.get("authorization"), client[0] if client else None, scope.get("path", ""))


# --------------------------------------------------------------------------- the gateway


class Gateway:
    def __init__(self, settings: Settings, channels: PeerChannels, routes: list[HttpRoute]) -> None:
        self.settings = settings
        self.channels = channels
        self.routes = routes
        self.router = Router(routes)
        self._openapi_json: bytes | None = None

    # -- fixed endpoints

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        request_id = _state(request).request_id

        async def check(backend: str) -> str:
            if not self.channels.addresses.get(backend):
                return "UNCONFIGURED"
            try:
                call = self.channels.channel(backend).unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )
                reply = await call(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=READY_TIMEOUT_SECONDS,
                    metadata=(("x-request-id", request_id),),
                )
                return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                return "UNREACHABLE" if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) else code.name
            except Exception:  # noqa: BLE001 - a probe reports, it does not fail
                return "UNREACHABLE"

        results = await asyncio.gather(*(check(b) for b in BACKENDS))
        services = dict(zip(BACKENDS, results))
        ready = all(s == "SERVING" for s in results)
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "services": services}, status_code=200 if ready else 503
        )

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        if self._openapi_json is None:
            self._openapi_json = json.dumps(build_openapi(self.routes), separators=(",", ":")).encode()
        return Response(self._openapi_json, media_type="application/json")

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        request_id = _state(request).request_id
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            doc = problems.problem(
                405,
                "METHOD_NOT_ALLOWED",
                f"{request.method} is not allowed on {request.url.path}; allowed: {headers.get('Allow', '')}",
                request_id,
            )
        elif exc.status_code == 404:
            doc = problems.problem(404, "NOT_FOUND", f"no route for {request.method} {request.url.path}", request_id)
        else:
            reason = "INVALID_ARGUMENT" if 400 <= exc.status_code < 500 else "INTERNAL"
            doc = problems.problem(exc.status_code, reason, str(exc.detail), request_id)
        return problems.problem_response(doc, headers=headers)

    # -- transcoding

    async def transcode(self, request: Request) -> Response:
        state = _state(request)
        rid = state.request_id
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        raw_path = raw_path.split(b"?", 1)[0].decode("latin-1")
        found, allowed = self.router.match(request.method, raw_path)
        if request.url.path in FIXED_PATHS:  # e.g. POST /healthz
            found, allowed = None, ["GET"]
        if found is None:
            if allowed:
                doc = problems.problem(
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}",
                    rid,
                )
                return problems.problem_response(doc, headers={"Allow": ", ".join(allowed)})
            doc = problems.problem(404, "NOT_FOUND", f"no route for {request.method} {request.url.path}", rid)
            return problems.problem_response(doc)
        route = found.route
        state.route = route.template.template
        ctx = reqctx.current()
        if ctx is not None:
            ctx.method = route.full_method

        try:
            body = await self._read_body(request) if route.body else None
        except BodyTooLarge:
            limit = self.settings.gateway_max_body_bytes
            doc = problems.problem(
                413,
                "REQUEST_TOO_LARGE",
                f"request body exceeds the limit of {limit} bytes",
                rid,
                metadata={"limit_bytes": str(limit)},
            )
            return problems.problem_response(doc, headers={"Connection": "close"})
        except RequestError as exc:
            return self._bad_request(exc, rid)
        try:
            message = build_request(route, found.path_params, request.query_params.multi_items(), body)
        except RequestError as exc:
            return self._bad_request(exc, rid)

        metadata: list[tuple[str, str]] = [("x-request-id", rid)]
        authorization = request.headers.get("authorization")
        if authorization:
            if not authorization.isascii() or not authorization.isprintable():
                return problems.problem_response(
                    problems.problem(401, "TOKEN_INVALID", "the Authorization header is not printable ASCII", rid)
                )
            scheme, _, credential = authorization.partition(" ")
            credential = credential.strip()
            if scheme.lower() == "bearer" and credential.startswith(API_KEY_PREFIX):
                try:
                    access_token = await self._exchange_api_key(credential, rid)
                except grpc.RpcError as exc:
                    return problems.problem_response(problems.problem_from_rpc_error(exc, "identity", rid))
                except Unavailable as exc:  # no address configured
                    return problems.problem_response(problems.service_unavailable("identity", rid, str(exc)))
                authorization = f"Bearer {access_token}"
            metadata.append(("authorization", authorization))

        try:
            channel = self.channels.channel(route.backend)
        except Unavailable as exc:
            return problems.problem_response(problems.service_unavailable(route.backend, rid, str(exc)))

        if route.server_streaming:
            sse = _wants_sse(request.headers.get("accept", ""))
            if sse:
                try:
                    _resume_after(message, request.headers.get("last-event-id"))
                except RequestError as exc:
                    return self._bad_request(exc, rid)
            return await self._stream(route, channel, message, metadata, rid, sse=sse)
        call = channel.unary_unary(
            route.full_method,
            request_serializer=route.request_type.SerializeToString,
            response_deserializer=route.response_type.FromString,
        )
        try:
            reply = await call(message, metadata=tuple(metadata), timeout=UNARY_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            return problems.problem_response(problems.problem_from_rpc_error(exc, route.backend, rid))
        return JSONResponse(response_payload(route, reply))

    async def _stream(
        self,
        route: HttpRoute,
        channel: grpc.aio.Channel,
        message: Message,
        metadata: list[tuple[str, str]],
        rid: str,
        *,
        sse: bool = False,
    ) -> Response:
        call = channel.unary_stream(
            route.full_method,
            request_serializer=route.request_type.SerializeToString,
            response_deserializer=route.response_type.FromString,
        )(message, metadata=tuple(metadata))
        # Read the first message before answering, so an immediate failure (unauthenticated,
        # denied, backend down) is still a proper problem response with its status.
        try:
            first = await call.read()
        except grpc.RpcError as exc:
            return problems.problem_response(problems.problem_from_rpc_error(exc, route.backend, rid))

        if sse:
            return StreamingResponse(
                _sse_events(route, call, first, rid),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        async def lines() -> AsyncIterator[bytes]:
            item = first
            try:
                while item is not grpc.aio.EOF:
                    yield _ndjson(response_payload(route, item))
                    item = await call.read()
            except grpc.RpcError as exc:
                log.warning("stream failed", route=route.template.template, code=exc.code().name)
                yield _ndjson({"error": problems.problem_from_rpc_error(exc, route.backend, rid)})
            finally:
                call.cancel()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def _exchange_api_key(self, api_key: str, rid: str) -> str:
        """Trade an API key for an access token, on every request (revocation is immediate)."""
        login = self.channels.channel("identity").unary_unary(
            _LOGIN_PATH,
            request_serializer=identity_pb2.LoginRequest.SerializeToString,
            response_deserializer=identity_pb2.LoginResponse.FromString,
        )
        reply = await login(
            identity_pb2.LoginRequest(api_key=api_key), metadata=(("x-request-id", rid),), timeout=UNARY_TIMEOUT_SECONDS
        )
        return reply.access_token

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.gateway_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise RequestError("the Content-Length header is not a number") from None
            if length > limit:
                raise BodyTooLarge()
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge()
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _bad_request(exc: RequestError, rid: str) -> Response:
        doc = problems.problem(400, exc.reason, exc.message, rid, metadata=exc.metadata, violations=exc.violations)
        return problems.problem_response(doc)


def _ndjson(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


# --------------------------------------------------------------------------- Server-Sent Events

# A comment line is sent when nothing else was for this long, so proxies keep the stream open.
SSE_KEEPALIVE_SECONDS = 15.0
# The request field a reconnecting client's Last-Event-ID resumes after, when the RPC has it.
SSE_RESUME_FIELD = "after_seq"


def _wants_sse(accept: str) -> bool:
    return any(part.split(";", 1)[0].strip().lower() == "text/event-stream" for part in accept.split(","))


def _resume_after(message: Message, last_event_id: str | None) -> None:
    """Map ``Last-Event-ID`` onto the request's ``after_seq`` (when the RPC has one)."""
    if last_event_id is None or not last_event_id.strip():
        return
    if SSE_RESUME_FIELD not in message.DESCRIPTOR.fields_by_name:
        return
    value = last_event_id.strip()
    if not value.isdigit() or len(value) > 18:
        raise RequestError(
            f"the Last-Event-ID header must be the sequence number of an event, not {value[:40]!r}",
            violations=[("Last-Event-ID", "not a sequence number")],
        )
    setattr(message, SSE_RESUME_FIELD, max(int(value), getattr(message, SSE_RESUME_FIELD)))


def _sse_field(value: Any) -> str:
    return " ".join(str(value).splitlines())


def sse_frame(payload: Any, event: str | None = None) -> bytes:
    """One SSE message: ``id`` from the payload's ``seq``, ``event`` from its ``kind``, ``data`` its JSON."""
    lines = []
    if isinstance(payload, dict):
        if payload.get("seq") not in (None, ""):
            lines.append(f"id: {_sse_field(payload['seq'])}")
        event = event or payload.get("kind")
    if event:
        lines.append(f"event: {_sse_field(event)}")
    lines.append("data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


async def _sse_events(route: HttpRoute, call, first, rid: str) -> AsyncIterator[bytes]:
    """The stream as SSE, with a keep-alive comment whenever it is quiet for a while.

    A reader task fills a queue, so waiting for the next message can time out without
    cancelling the gRPC read."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)

    async def reader() -> None:
        try:
            while True:
                item = await call.read()
                if item is grpc.aio.EOF:
                    break
                await queue.put(("item", item))
        except grpc.RpcError as exc:
            await queue.put(("error", exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
            await queue.put(("error", exc))
        await queue.put(("end", None))

    task = None
    try:
        yield b": stream open\n\n"
        if first is grpc.aio.EOF:
            return
        yield sse_frame(response_payload(route, first))
        task = asyncio.create_task(reader(), name=f"sse-{rid}")
        while True:
            try:
                kind, value = await asyncio.wait_for(queue.get(), timeout=SSE_KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if kind == "end":
                return
            if kind == "error":
                if isinstance(value, grpc.RpcError):
                    log.warning("stream failed", route=route.template.template, code=value.code().name)
                    problem = problems.problem_from_rpc_error(value, route.backend, rid)
                else:
                    problem = problems.problem(500, "INTERNAL", "internal error in the gateway", rid)
                yield sse_frame(problem, event="error")
                return
            yield sse_frame(response_payload(route, value))
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        call.cancel()


def create_app(settings: Settings, channels: PeerChannels | None = None) -> Starlette:
    """The gateway as an ASGI app. Without ``channels`` it opens its own mTLS channels with
    the ``gateway`` certificate in ``settings.tls`` and closes them on shutdown."""
    owned = channels is None
    if channels is None:
        if settings.tls is None:
            raise SystemExit("configuration error: the gateway needs INNOMINATUS_TLS_CA/CERT/KEY (its gateway certificate)")
        channels = PeerChannels({k: v for k, v in settings.addresses.items() if k in BACKENDS}, settings.tls)
    tracer_provider("innominatus-gateway")
    gateway = Gateway(settings, channels, build_routes())
    limiter = TokenBucketLimiter(settings.gateway_rate_limit_per_second, settings.gateway_rate_limit_burst)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        if owned:
            await channels.close()

    app = Starlette(
        routes=[
            Route("/healthz", gateway.healthz, methods=["GET"]),
            Route("/readyz", gateway.readyz, methods=["GET"]),
            Route("/metrics", gateway.metrics, methods=["GET"]),
            Route("/api/v1/openapi.json", gateway.openapi, methods=["GET"]),
            Route("/{rest:path}", gateway.transcode, methods=ALL_METHODS),
        ],
        middleware=[Middleware(GatewayMiddleware, limiter=limiter)],
        exception_handlers={StarletteHTTPException: gateway.http_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.limiter = limiter
    return app


# --------------------------------------------------------------------------- serving


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"configuration error: INNOMINATUS_GATEWAY_LISTEN={listen!r} is not host:port")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _uvicorn_config(app: Starlette, settings: Settings, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
        ssl_certfile=str(settings.gateway_tls_cert) if settings.gateway_tls_cert else None,
        ssl_keyfile=str(settings.gateway_tls_key) if settings.gateway_tls_key else None,
    )


async def serve(settings: Settings, channels: PeerChannels | None = None) -> None:
    """Run the gateway until SIGINT/SIGTERM (``innominatus serve gateway``), then drain and
    return, so the process exits 0 like the gRPC services do."""
    from innominatus.kit.server import run_until_signalled

    server, _port = await start_in_loop(settings, channels)
    await run_until_signalled(lambda: stop_in_loop(server))


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server sharing the caller's event loop: it leaves signal handling to the
    caller (``innominatus up``), which stops it with :func:`stop_in_loop`."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_in_loop(settings: Settings, channels: PeerChannels | None = None) -> tuple[uvicorn.Server, int]:
    """Start the gateway in the running event loop; returns the server and its bound port.

    The socket is bound here, before uvicorn starts, so ``host:0`` yields the real port and
    a port in use fails with ``OSError`` right away instead of a ``SystemExit`` from inside
    uvicorn. Stop it with ``await stop_in_loop(server)``.
    """
    host, port = split_listen(settings.gateway_listen)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    app = create_app(settings, channels)
    server = _EmbeddedServer(_uvicorn_config(app, settings, host, bound_port))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="innominatus-gateway")
    server.innominatus_task = task  # type: ignore[attr-defined]
    while not server.started:
        if task.done():
            sock.close()
            exc = task.exception()
            raise RuntimeError(f"the gateway failed to start: {exc!r}") from exc
        await asyncio.sleep(0.01)
    log.info("gateway listening", address=f"{host}:{bound_port}")
    return server, bound_port


async def stop_in_loop(server: uvicorn.Server) -> None:
    """Stop a server from :func:`start_in_loop` and wait until it has drained."""
    server.should_exit = True
    task = getattr(server, "innominatus_task", None)
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["GatewayMiddleware", "create_app", "serve", "split_listen", "start_in_loop", "stop_in_loop"]
