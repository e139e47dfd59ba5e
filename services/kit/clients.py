"""mTLS channels from one service (or tool) to the others.

Every outgoing call carries the current request's id and, when there is one, the end
user's token, so the callee verifies the user itself and the request can be followed
across services; the OpenTelemetry client interceptor propagates the trace.
"""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from innominatus.kit import context as reqctx
from innominatus.kit.errors import Unavailable
from innominatus.kit.pki import TlsFiles

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
]


def client_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    ca, cert, key = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def _with_context(details):
    ctx = reqctx.current()
    if ctx is None:
        return details
    metadata = list(details.metadata or ())
    keys = {k for k, _ in metadata}
    if ctx.token and "authorization" not in keys:
        metadata.append(("authorization", f"Bearer {ctx.token}"))
    if "x-request-id" not in keys:
        metadata.append(("x-request-id", ctx.request_id))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
    )


class ForwardContextUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_with_context(client_call_details), request)


class ForwardContextStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_with_context(client_call_details), request)


def secure_channel(address: str, tls: TlsFiles, server_name: str | None = None) -> grpc.aio.Channel:
    options = list(CHANNEL_OPTIONS)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    interceptors = [ForwardContextUnary(), ForwardContextStream(), *aio_client_interceptors()]
    return grpc.aio.secure_channel(address, client_credentials(tls), options=options, interceptors=interceptors)


class PeerChannels:
    """Lazily opened channels to the other services, authenticated with our certificate."""

    def __init__(self, addresses: dict[str, str], tls: TlsFiles) -> None:
        self.addresses = addresses
        self.tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            address = self.addresses.get(service)
            if not address:
                raise Unavailable(
                    f"no address configured for the {service} service (set INNOMINATUS_{service.upper()}_ADDR)",
                    reason="SERVICE_NOT_CONFIGURED",
                )
            self._channels[service] = secure_channel(address, self.tls)
        return self._channels[service]

    def stub(self, service: str, stub_class):
        return stub_class(self.channel(service))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
