"""Bootstrap shared by every service: one ``ServiceHost`` runs one service.

It applies the service's migrations, builds the interceptor chain, serves over mTLS
(client certificates required), registers the stock ``grpc.health.v1`` servicer under the
service's full names and server reflection, starts the audit outbox relay, and shuts down
gracefully: NOT_SERVING first, then drain in-flight calls, then stop.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from dataclasses import dataclass, field
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from sqlalchemy import Table

from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit import interceptors as icp
from innominatus.kit.auth import JwksSource, TokenVerifier
from innominatus.kit.clients import CHANNEL_OPTIONS, PeerChannels
from innominatus.kit.config import Settings
from innominatus.kit.db import Database
from innominatus.kit.logs import get_logger
from innominatus.kit.methods import MethodInfo, describe_service
from innominatus.kit.outbox import Outbox, OutboxRelay
from innominatus.kit.pki import TlsFiles
from innominatus.kit.telemetry import tracer_provider

log = get_logger(__name__)


@dataclass
class Runtime:
    """What a service's handlers may use: their own database and the other services' APIs."""

    name: str
    settings: Settings
    db: Database | None
    outbox: Outbox | None
    peers: PeerChannels
    verifier: TokenVerifier | None = None
    policy_engine: object | None = None  # the engine that gates this service's mutations
    state: dict = field(default_factory=dict)
    # Method full name -> async provider of the facts its policy decision needs that the
    # request does not carry (see register_policy_facts).
    policy_facts: dict[str, icp.PolicyFactsProvider] = field(default_factory=dict)

    def register_policy_facts(self, method: str, provider: icp.PolicyFactsProvider) -> None:
        """Give the policy of mutation ``method`` ("/pkg.Service/Method") ``input.facts``.

        ``provider(request)`` is awaited by the policy interceptor before the decision, inside
        the request's transaction (``db.session()`` works), and returns a JSON object. If it
        raises, the request is refused: a typed error as it is, anything else as
        POLICY_FACTS_UNAVAILABLE. Call it from ``ServiceDefinition.register``; the host checks
        at start-up that ``method`` is one of the service's mutations.
        """
        if method in self.policy_facts:
            raise ValueError(f"policy facts for {method} are already registered")
        self.policy_facts[method] = provider


@dataclass
class ServiceDefinition:
    name: str
    descriptors: list  # google.protobuf ServiceDescriptors served
    register: Callable[[grpc.aio.Server, Runtime], None]
    outbox_table: Table | None = None
    # Identity verifies tokens with its own keys instead of fetching them from itself.
    local_jwks: Callable[[Runtime], JwksSource] | None = None
    # Work to run once the server is up (e.g. the engine's worker loop).
    on_start: Callable[[Runtime], "asyncio.Future | None"] | None = None
    on_stop: Callable[[Runtime], "asyncio.Future | None"] | None = None


def load_definition(service: str) -> ServiceDefinition:
    module = importlib.import_module(f"innominatus.{service}.service")
    return module.definition()


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    ca, cert, key = tls.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


class ServiceHost:
    def __init__(self, definition: ServiceDefinition, settings: Settings, policy_engine=None) -> None:
        if settings.tls is None:
            raise SystemExit(f"configuration error: the {definition.name} service needs INNOMINATUS_TLS_CA/CERT/KEY")
        self.definition = definition
        self.name = definition.name
        self.settings = settings
        self._policy_engine = policy_engine
        self._owns_policy_engine = policy_engine is None
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else None
        self.port: int | None = None
        self.relay: OutboxRelay | None = None
        self.runtime: Runtime | None = None

    @property
    def methods(self) -> dict[str, MethodInfo]:
        table: dict[str, MethodInfo] = {}
        for service in self.definition.descriptors:
            table.update(describe_service(service))
        return table

    async def start(self, address: str = "127.0.0.1:0") -> int:
        from innominatus.kit.policy import make_policy_engine

        settings = self.settings
        definition = self.definition
        db = Database(self.name, settings.database_url_for(self.name))
        await asyncio.to_thread(db.migrate)
        outbox = Outbox(db, definition.outbox_table) if definition.outbox_table is not None else None
        peers = PeerChannels(settings.addresses, settings.tls)
        runtime = Runtime(name=self.name, settings=settings, db=db, outbox=outbox, peers=peers)
        self.runtime = runtime
        if definition.local_jwks is not None:
            jwks_source = definition.local_jwks(runtime)
        else:
            async def jwks_source() -> str:
                identity = peers.stub("identity", identity_pb2_grpc.IdentityServiceStub)
                response = await identity.GetJwks(identity_pb2.GetJwksRequest(), timeout=5)
                return response.jwks_json

        runtime.verifier = TokenVerifier(jwks_source)
        if self._policy_engine is None:
            self._policy_engine = make_policy_engine(settings.opa_url, settings.policy_dir)
        runtime.policy_engine = self._policy_engine
        methods = self.methods
        tracer_provider()
        interceptors = [
            # Health is left out of tracing: the instrumentation cannot wrap its streaming
            # Watch handler, and probes every few seconds would only add noise.
            aio_server_interceptor(filter_=filters.negate(filters.health_check())),
            icp.RequestContextInterceptor(methods),
            icp.MetricsInterceptor(methods, self.name),
            icp.PeerInterceptor(methods),
            icp.AuthenticationInterceptor(methods, runtime.verifier),
            icp.AuditInterceptor(methods, self.name, db, outbox),
            icp.PolicyInterceptor(methods, self._policy_engine, runtime.policy_facts),
        ]
        server = grpc.aio.server(interceptors=interceptors, options=CHANNEL_OPTIONS)
        definition.register(server, runtime)
        for method in runtime.policy_facts:
            # A typo would silently leave a policy without its facts.
            if method not in methods or not methods[method].mutation:
                raise SystemExit(f"configuration error: the {self.name} service registers policy facts for "
                                 f"{method}, which is not one of its mutations")
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [d.full_name for d in definition.descriptors]
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
        )
        self.port = server.add_secure_port(address, server_credentials(settings.tls))
        # The stock servicer starts with the overall status SERVING; start-up work is not
        # done yet, so say so until _after_listen has finished.
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self.server = server
        try:
            await self._after_listen(runtime, names)
        except BaseException:
            await self.stop(grace=0)
            raise
        log.info("service started", service=self.name, port=self.port)
        return self.port

    async def _after_listen(self, runtime: Runtime, names: list[str]) -> None:
        settings, definition, outbox, peers = self.settings, self.definition, runtime.outbox, runtime.peers
        if outbox is not None:
            async def ship(events) -> None:
                audit = peers.stub("audit", audit_pb2_grpc.AuditServiceStub)
                await audit.AppendEvents(audit_pb2.AppendEventsRequest(events=events), timeout=10)

            self.relay = OutboxRelay(outbox, ship, interval=settings.relay_interval_seconds)
            self.relay.start()
        if definition.on_start is not None:
            result = definition.on_start(runtime)
            if asyncio.iscoroutine(result):
                await result
        # Ready only once start-up work (bootstrap, workers) is done.
        for name in ["", *names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        if self.server is None:
            return
        # Tell load balancers and health probes first, then let in-flight calls finish.
        await self.health.enter_graceful_shutdown()
        if self.settings.shutdown_delay_seconds > 0:
            await asyncio.sleep(self.settings.shutdown_delay_seconds)
        if self.definition.on_stop is not None and self.runtime is not None:
            result = self.definition.on_stop(self.runtime)
            if asyncio.iscoroutine(result):
                await result
        await self.server.stop(grace)
        self.server = None
        if self.relay is not None:
            await self.relay.stop()
        if self.runtime is not None:
            await self.runtime.peers.close()
            if self.runtime.db is not None:
                await self.runtime.db.close()
        if self._owns_policy_engine and self._policy_engine is not None:
            await self._policy_engine.close()
        log.info("service stopped", service=self.name)


async def run_until_signalled(stop: Callable[[], "asyncio.Future"]) -> None:
    """Wait for SIGTERM or SIGINT, then run ``stop`` once."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down")
    await stop()
