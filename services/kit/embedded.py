"""The whole platform in one process: the five services and the gateway, each on its own
port over real mTLS, with embedded defaults (SQLite files, in-process Rego or the OPA named
by the settings, a development CA created on first start).

``innominatus up`` runs this; so do the end-to-end test harnesses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from innominatus.kit.clients import PeerChannels
from innominatus.kit.config import SERVICES, Settings
from innominatus.kit.logs import get_logger
from innominatus.kit.pki import TlsFiles, ensure_dev_pki
from innominatus.kit.policy import make_policy_engine
from innominatus.kit.server import ServiceHost, load_definition

log = get_logger(__name__)


@dataclass
class EmbeddedPlatform:
    settings: Settings
    host: str = "127.0.0.1"
    hosts: dict[str, ServiceHost] = field(default_factory=dict)
    gateway_port: int | None = None
    tls: dict[str, TlsFiles] = field(default_factory=dict)
    _gateway = None
    policy_engine = None
    _gateway_channels: PeerChannels | None = None

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def gateway_url(self) -> str:
        scheme = "https" if self.settings.gateway_tls_cert else "http"
        return f"{scheme}://{self.host}:{self.gateway_port}"

    async def start(self, gateway_port: int = 0) -> None:
        from innominatus.gateway.app import start_in_loop

        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self.tls = ensure_dev_pki(self.data_dir / "tls", [*SERVICES, "gateway"])
        addresses: dict[str, str] = dict(self.settings.addresses)
        self.policy_engine = make_policy_engine(self.settings.opa_url, self.settings.policy_dir)
        for name in SERVICES:
            settings = self.settings.with_changes(tls=self.tls[name], addresses=addresses)
            host = ServiceHost(load_definition(name), settings, policy_engine=self.policy_engine)
            port = await host.start(f"{self.host}:0")
            # Peers open their channels lazily, so filling in the address after each start
            # is enough for every service to find every other.
            addresses[name] = f"{self.host}:{port}"
            self.hosts[name] = host
        gateway_settings = self.settings.with_changes(
            tls=self.tls["gateway"], addresses=addresses, gateway_listen=f"{self.host}:{gateway_port}"
        )
        self._gateway_channels = PeerChannels(addresses, self.tls["gateway"])
        self._gateway, self.gateway_port = await start_in_loop(gateway_settings, self._gateway_channels)
        addresses["gateway"] = f"{self.host}:{self.gateway_port}"
        self.write_endpoints()

    def write_endpoints(self) -> Path:
        cli = self.tls["cli"]
        document = {
            "gateway": self.gateway_url,
            "services": {name: f"{self.host}:{self.hosts[name].port}" for name in SERVICES},
            "tls": {"ca": str(cli.ca.resolve()), "cert": str(cli.cert.resolve()), "key": str(cli.key.resolve())},
        }
        path = self.data_dir / "endpoints.json"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return path

    async def stop(self) -> None:
        if self._gateway is not None:
            from innominatus.gateway.app import stop_in_loop

            await stop_in_loop(self._gateway)
            self._gateway = None
        if self._gateway_channels is not None:
            await self._gateway_channels.close()
        # Reverse start order: specs first, identity last, so in-flight calls find peers.
        for name in reversed(list(self.hosts)):
            await self.hosts[name].stop()
        self.hosts.clear()
        if self.policy_engine is not None:
            await self.policy_engine.close()
