"""A running platform for tests: the five services and the gateway on port 0 over real
mTLS, backed by a fresh PostgreSQL database (schemas per service) and a policy engine.

    async with running_platform(tmp_path) as platform:
        token = await platform.login_admin()
        ...
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx

from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit.clients import secure_channel
from innominatus.kit.config import Settings
from innominatus.kit.embedded import EmbeddedPlatform
from innominatus.kit.pki import TlsFiles
from innominatus.kit.server import ServiceHost
from tests.helpers.database import drop_database, fresh_database


@dataclass
class TestPlatform:
    __test__ = False

    platform: EmbeddedPlatform

    @property
    def gateway(self) -> str:
        return self.platform.gateway_url

    @property
    def data_dir(self) -> Path:
        return self.platform.data_dir

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.platform.hosts[service].port}"

    def tls(self, identity: str) -> TlsFiles:
        return self.platform.tls[identity]

    def channel(self, service: str, identity: str = "cli") -> grpc.aio.Channel:
        """An mTLS channel to ``service`` presenting the certificate of ``identity``."""
        return secure_channel(self.address(service), self.tls(identity))

    def admin_credentials(self) -> dict:
        return json.loads((self.data_dir / "bootstrap-admin.json").read_text())

    async def login(self, username: str, password: str) -> str:
        channel = self.channel("identity")
        try:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            response = await stub.Login(identity_pb2.LoginRequest(username=username, password=password))
            return response.access_token
        finally:
            await channel.close()

    async def login_admin(self) -> str:
        creds = self.admin_credentials()
        return await self.login(creds["username"], creds["password"])

    async def create_user(self, admin_token: str, username: str, role: int, password: str = "correct-horse-battery") -> str:
        """Create a user with one role and return their access token."""
        channel = self.channel("identity")
        try:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            await stub.CreateUser(
                identity_pb2.CreateUserRequest(user=identity_pb2.User(username=username, roles=[role], password=password)),
                metadata=[("authorization", f"Bearer {admin_token}")],
            )
        finally:
            await channel.close()
        return await self.login(username, password)

    async def stop_service(self, service: str) -> None:
        await self.platform.hosts[service].stop(grace=0)

    async def start_service(self, service: str) -> None:
        """Start ``service`` again on the port it had, as a fresh process would."""
        old = self.platform.hosts[service]
        host = ServiceHost(old.definition, old.settings, policy_engine=self.platform.policy_engine)
        await host.start(f"127.0.0.1:{old.port}")
        self.platform.hosts[service] = host

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.gateway, headers=headers, timeout=30)


@asynccontextmanager
async def running_platform(data_dir: Path, opa_url: str | None = None, database_url: str | None = "fresh", **settings):
    """Start the platform; ``database_url="fresh"`` takes a new PostgreSQL database."""
    owned = None
    if database_url == "fresh":
        owned = database_url = fresh_database("platform")
    platform = EmbeddedPlatform(
        Settings(data_dir=data_dir, database_url=database_url, opa_url=opa_url, relay_interval_seconds=0.2, **settings)
    )
    try:
        await platform.start()
        yield TestPlatform(platform)
    finally:
        await platform.stop()
        if owned:
            drop_database(owned)
