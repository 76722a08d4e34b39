"""The public API as a customer types it, checked by ``mypy --strict`` (never run, never collected).

``test_sdk_public_api.py`` runs mypy on this file. Each ``assert_type`` pins the type a
customer sees; each ``# type: ignore[...]`` pins a mistake mypy must catch (strict mode
reports an ignore that is no longer needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_type

import httpx

import gatepass
from gatepass import (
    APIConnectionError,
    APIError,
    APIResponseError,
    AsyncGatepass,
    AsyncM2MTokens,
    AsyncMachines,
    AuthReason,
    DeletedMachine,
    DeletedMachineScope,
    Gatepass,
    GatepassError,
    M2MToken,
    M2MTokenList,
    M2MTokens,
    Machine,
    MachineList,
    Machines,
    MachineScope,
    MachineSecretKey,
    RateLimitError,
    Revocation,
    RevocationPage,
    ScopedMachine,
    TokenVerificationError,
)


def machines_sync(client: Gatepass) -> None:
    assert_type(client.machines, Machines)
    created = client.machines.create(name="n", scoped_machines=("mch_x",), default_token_ttl=60)
    assert_type(created, Machine)
    assert_type(created.id, str)
    assert_type(created.name, str)
    assert_type(created.instance_id, str)
    assert_type(created.created_at, int)
    assert_type(created.updated_at, int)
    assert_type(created.default_token_ttl, int)
    assert_type(created.secret_key, str | None)
    assert_type(created.scoped_machines, tuple[ScopedMachine, ...])
    assert_type(created.scoped_machines[0].default_token_ttl, int)

    page = client.machines.list(limit=5, offset=10, query="api", order_by="-name")
    assert_type(page, MachineList)
    assert_type(page.data, tuple[Machine, ...])
    assert_type(page.total_count, int)
    for machine in client.machines.iterate(query="api", order_by="created_at"):
        assert_type(machine, Machine)

    assert_type(client.machines.get(created.id), Machine)
    assert_type(client.machines.update(created.id, name="m"), Machine)
    assert_type(client.machines.update(created.id, default_token_ttl=30), Machine)
    assert_type(client.machines.update(created.id), Machine)
    deleted = client.machines.delete(created.id)
    assert_type(deleted, DeletedMachine)
    assert_type(deleted.deleted, bool)
    key = client.machines.get_secret_key(created.id)
    assert_type(key, MachineSecretKey)
    assert_type(key.secret, str)
    assert_type(
        client.machines.rotate_secret_key(created.id, previous_token_ttl=0), MachineSecretKey
    )
    scope = client.machines.create_scope(created.id, to_machine_id="mch_y")
    assert_type(scope, MachineScope)
    assert_type(scope.created_at, int)
    unscoped = client.machines.delete_scope(created.id, to_machine_id="mch_y")
    assert_type(unscoped, DeletedMachineScope)
    assert_type(unscoped.to_machine_id, str)


def tokens_sync(client: Gatepass) -> None:
    assert_type(client.m2m_tokens, M2MTokens)
    token = client.m2m_tokens.create(
        token_format="jwt",
        seconds_until_expiration=1.5,
        claims={"role": "reader"},
        min_remaining_ttl_seconds=10,
    )
    assert_type(token, M2MToken)
    assert_type(token.token, str | None)
    assert_type(token.scopes, tuple[str, ...])
    assert_type(token.claims, dict[str, Any] | None)
    assert_type(token.revoked, bool)
    assert_type(token.revocation_reason, str | None)
    assert_type(token.expiration, int | None)
    assert_type(token.last_used_at, int | None)
    page = client.m2m_tokens.list(subject="mch_x", revoked=True, expired=True, limit=2, offset=4)
    assert_type(page, M2MTokenList)
    assert_type(page.m2m_tokens, tuple[M2MToken, ...])
    for listed in client.m2m_tokens.iterate(subject="mch_x", revoked=True):
        assert_type(listed, M2MToken)
    assert_type(client.m2m_tokens.get(token.id), M2MToken)
    assert_type(client.m2m_tokens.revoke(token.id, revocation_reason="leaked"), M2MToken)
    assert_type(client.m2m_tokens.revoke(token.id), M2MToken)
    assert_type(client.m2m_tokens.verify("mt_x"), M2MToken)
    feed = client.m2m_tokens.revocations(after="0", limit=10, wait=5)
    assert_type(feed, RevocationPage)
    assert_type(feed.data, tuple[Revocation, ...])
    assert_type(feed.cursor, str)
    assert_type(feed.has_more, bool)
    assert_type(client.m2m_tokens.jwks(), dict[str, Any])


async def both_async(client: AsyncGatepass) -> None:
    assert_type(client.machines, AsyncMachines)
    assert_type(client.m2m_tokens, AsyncM2MTokens)
    created = await client.machines.create(name="n")
    assert_type(created, Machine)
    assert_type(await client.machines.list(order_by="+created_at"), MachineList)
    async for machine in client.machines.iterate():
        assert_type(machine, Machine)
    assert_type(await client.machines.get(created.id), Machine)
    assert_type(await client.machines.update(created.id, name="m"), Machine)
    assert_type(await client.machines.delete(created.id), DeletedMachine)
    assert_type(await client.machines.get_secret_key(created.id), MachineSecretKey)
    rotated = await client.machines.rotate_secret_key(created.id, previous_token_ttl=60)
    assert_type(rotated, MachineSecretKey)
    assert_type(await client.machines.create_scope(created.id, to_machine_id="m"), MachineScope)
    deleted = await client.machines.delete_scope(created.id, to_machine_id="m")
    assert_type(deleted, DeletedMachineScope)

    token = await client.m2m_tokens.create()
    assert_type(token, M2MToken)
    assert_type(await client.m2m_tokens.list(subject="mch_x"), M2MTokenList)
    async for listed in client.m2m_tokens.iterate(subject="mch_x"):
        assert_type(listed, M2MToken)
    assert_type(await client.m2m_tokens.get(token.id), M2MToken)
    assert_type(await client.m2m_tokens.revoke(token.id), M2MToken)
    assert_type(await client.m2m_tokens.verify("mt_x"), M2MToken)
    assert_type(await client.m2m_tokens.revocations(), RevocationPage)
    assert_type(await client.m2m_tokens.jwks(), dict[str, Any])


def construction() -> None:
    with Gatepass(
        secret_key="sk_test_x",
        machine_secret_key="ak_x",
        api_url="http://127.0.0.1:8080",
        timeout=5.0,
        max_retries=0,
        transport=httpx.MockTransport(lambda _: httpx.Response(200)),
    ) as client:
        assert_type(client, Gatepass)
        assert_type(client.api_url, str)
        assert_type(client.has_secret_key, bool)
        assert_type(client.has_machine_secret_key, bool)
    Gatepass(transport=httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    assert_type(gatepass.__version__, str)


async def construction_async() -> None:
    async with AsyncGatepass(transport=httpx.AsyncHTTPTransport()) as client:
        assert_type(client, AsyncGatepass)
    AsyncGatepass(transport=httpx.HTTPTransport())  # type: ignore[arg-type]


def errors(client: Gatepass) -> None:
    try:
        client.machines.get("mch_x")
    except RateLimitError as error:
        assert_type(error.retry_after, float | None)
    except APIError as error:
        assert_type(error.status_code, int)
        assert_type(error.code, str)
        assert_type(error.message, str)
        assert_type(error.long_message, str | None)
        assert_type(error.param_name, str | None)
        assert_type(error.trace_id, str | None)
        assert_type(error.errors, tuple[Mapping[str, Any], ...])
    except TokenVerificationError as error:
        assert_type(error.reason, AuthReason)
        assert_type(error.message, str)
        assert_type(error.trace_id, str | None)
    except APIResponseError as error:
        assert_type(error.status_code, int | None)
    except (APIConnectionError, GatepassError) as error:
        assert_type(error, APIConnectionError | GatepassError)


def mistakes(client: Gatepass, machine: Machine) -> None:
    client.machines.list(order_by="size")  # type: ignore[arg-type]
    client.machines.update("mch_x", name=None)  # type: ignore[arg-type]
    client.machines.create()  # type: ignore[call-arg]
    client.machines.rotate_secret_key("mch_x")  # type: ignore[call-arg]
    client.machines.get_secret_key("mch_x", 60)  # type: ignore[call-arg]
    client.m2m_tokens.create(token_format="xml")  # type: ignore[arg-type]
    client.m2m_tokens.list()  # type: ignore[call-arg]
    machine.name = "renamed"  # type: ignore[misc]
