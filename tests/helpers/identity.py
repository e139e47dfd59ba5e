"""Calling the identity service directly from tests: over mTLS as the gateway peer (the peer
identity forwards end users' calls), with the end user's token on each call."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
from innominatus.kit.errors import decode_rpc_error

PASSWORD = "correct-horse-battery"  # the password users made by IdentityClient.create have
Role = identity_pb2.Role


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def refused(call):
    """Await ``call``, which must fail: its status code and decoded error (reason, metadata...)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), decode_rpc_error(caught.value)


class IdentityClient:
    """IdentityService over mTLS as the gateway peer, with a token per call."""

    def __init__(self, platform) -> None:
        self.channel = platform.channel("identity", identity="gateway")
        self.stub = identity_pb2_grpc.IdentityServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def login(self, username: str = "", password: str = "", **credentials) -> identity_pb2.LoginResponse:
        return await self.stub.Login(identity_pb2.LoginRequest(username=username, password=password, **credentials))

    async def create(self, admin: str, username: str, *roles: int, teams=()) -> None:
        """Create ``username`` (developer unless ``roles``) with :data:`PASSWORD`."""
        user = identity_pb2.User(username=username, roles=list(roles or [Role.ROLE_DEVELOPER]), password=PASSWORD,
                                 teams=list(teams))
        await self.stub.CreateUser(identity_pb2.CreateUserRequest(user=user), metadata=auth(admin))

    async def create_and_login(self, admin: str, username: str, *roles: int, teams=()) -> str:
        """:meth:`create`, then the new user's access token."""
        await self.create(admin, username, *roles, teams=teams)
        return (await self.login(username, PASSWORD)).access_token

    async def get(self, token: str, username: str) -> identity_pb2.User:
        request = identity_pb2.GetUserRequest(name=f"users/{username}")
        return (await self.stub.GetUser(request, metadata=auth(token))).user

    async def update(self, token: str, username: str, mask: list[str], **fields) -> identity_pb2.User:
        user = identity_pb2.User(name=f"users/{username}", **fields)
        request = identity_pb2.UpdateUserRequest(user=user, update_mask=field_mask_pb2.FieldMask(paths=mask))
        return (await self.stub.UpdateUser(request, metadata=auth(token))).user

    async def set_disabled(self, admin: str, username: str, disabled: bool) -> identity_pb2.User:
        return await self.update(admin, username, ["disabled"], disabled=disabled)

    async def remove_member(self, token: str, team: str, user: str) -> identity_pb2.Team:
        request = identity_pb2.RemoveTeamMemberRequest(team=team, user=user)
        return (await self.stub.RemoveTeamMember(request, metadata=auth(token))).team

    async def change_password(self, token: str, name: str, new: str, current: str = "") -> identity_pb2.User:
        request = identity_pb2.ChangePasswordRequest(name=name, current_password=current, new_password=new)
        return (await self.stub.ChangePassword(request, metadata=auth(token))).user


async def users_in_teams(platform, teams, users) -> dict[str, str]:
    """Create ``teams`` (names) and ``users`` (``(username, role, [team, ...])``, password
    :data:`PASSWORD`); the access tokens by username, the bootstrap admin's as ``"admin"``."""
    admin = await platform.login_admin()
    client = IdentityClient(platform)
    try:
        for team in teams:
            await client.stub.CreateTeam(identity_pb2.CreateTeamRequest(team=identity_pb2.Team(name=f"teams/{team}")),
                                         metadata=auth(admin))
        tokens = {"admin": admin}
        for username, role, member_of in users:
            tokens[username] = await client.create_and_login(admin, username, role,
                                                             teams=[f"teams/{t}" for t in member_of])
    finally:
        await client.close()
    return tokens
