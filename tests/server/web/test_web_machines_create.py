"""Route 2, ``POST /v1/machines``: the create response and every rule on its body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from web_support import (
    PREFIXES,
    SQLITE_ONLY,
    UNKNOWN_MACHINE_ID,
    assert_api_headers,
    assert_machine,
    create_machine,
)

from gatepass_server.domain.keys import SecretKind, is_well_formed
from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime


async def _reject_create(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    body: Any,
    *,
    code: str,
    param_name: str | None,
) -> None:
    before = await storage_snapshot(runtime)
    response = await client.post("/v1/machines", json=body, headers=auth(sk))
    await assert_rejected(
        response,
        status=422,
        code=code,
        param_name=param_name,
        runtime=runtime,
        before=before,
        not_echoed=[sk],
    )


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_create_returns_200_machine_with_secret_key(
    client: httpx.AsyncClient, sk: str, clock: FixedClock, prefix: str
) -> None:
    """Create answers 200 (not 201) with the full machine and its ``ak_`` key."""
    response = await client.post(f"{prefix}/machines", json={"name": "Email"}, headers=auth(sk))
    assert response.status_code == 200
    assert_api_headers(response)
    body = response.json()
    assert_machine(body, with_secret=True)
    assert body["name"] == "Email"
    assert body["default_token_ttl"] == 3600
    assert body["created_at"] == body["updated_at"] == clock.now_ms()
    assert body["scoped_machines"] == []
    assert is_well_formed(body["secret_key"], SecretKind.MACHINE)


async def test_create_secret_key_is_only_in_the_create_response(
    client: httpx.AsyncClient, sk: str
) -> None:
    """The plaintext key is absent from get and list; ``secret_key`` is not a Machine key."""
    created = await create_machine(client, sk)
    got = await client.get(f"/v1/machines/{created['id']}", headers=auth(sk))
    listed = await client.get("/v1/machines", headers=auth(sk))
    for response in (got, listed):
        assert created["secret_key"] not in response.text
        assert "secret_key" not in response.text
    assert_machine(got.json())


async def test_create_with_scoped_machines(client: httpx.AsyncClient, sk: str) -> None:
    """``scoped_machines`` ids become nested summaries; duplicates count once."""
    api = await create_machine(client, sk, name="API")
    db = await create_machine(client, sk, name="DB")
    body = await create_machine(
        client, sk, name="Email", scoped_machines=[api["id"], db["id"], api["id"]]
    )
    assert_machine(body, with_secret=True)
    assert sorted(m["id"] for m in body["scoped_machines"]) == sorted([api["id"], db["id"]])
    nested = {m["id"]: m for m in body["scoped_machines"]}[api["id"]]
    assert nested == {k: v for k, v in api.items() if k not in {"scoped_machines", "secret_key"}}


@pytest.mark.parametrize("name", ["x", "n" * 255, " padded ", "Ünïcødé 🚀", "100%_\\"])
async def test_create_accepts_names_within_rules(
    client: httpx.AsyncClient, sk: str, name: str
) -> None:
    """Names of 1..255 characters are stored exactly as sent."""
    body = await create_machine(client, sk, name=name)
    assert body["name"] == name
    got = await client.get(f"/v1/machines/{body['id']}", headers=auth(sk))
    assert got.json()["name"] == name


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "form_param_missing"),
        ({"name": None}, "form_param_missing"),
        ({"name": ""}, "form_param_value_invalid"),
        ({"name": "   "}, "form_param_value_invalid"),
        ({"name": "\t\n"}, "form_param_value_invalid"),
        ({"name": "n" * 256}, "form_param_max_length_exceeded"),
        ({"name": 5}, "form_param_format_invalid"),
        ({"name": True}, "form_param_format_invalid"),
        ({"name": ["a"]}, "form_param_format_invalid"),
        ({"name": {"a": "b"}}, "form_param_format_invalid"),
        ({"name": "a\x00b"}, "form_param_value_invalid"),
    ],
)
async def test_create_rejects_bad_names(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, body: dict[str, Any], code: str
) -> None:
    """A missing, empty, blank, too long, non-string or NUL-bearing name is 422."""
    await _reject_create(client, sk, runtime, body, code=code, param_name="name")


@SQLITE_ONLY
async def test_create_rejects_lone_surrogate_name(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A lone surrogate in the name cannot be UTF-8: the body is refused as invalid."""
    before = await storage_snapshot(runtime)
    response = await client.post(
        "/v1/machines",
        content=b'{"name": "a\\ud800b"}',
        headers={**auth(sk), "Content-Type": "application/json"},
    )
    await assert_rejected(
        response, status=400, code="request_body_invalid", runtime=runtime, before=before
    )


@pytest.mark.parametrize(("sent", "stored"), [(1, 1), (315_360_000, 315_360_000), (3600.0, 3600)])
async def test_create_accepts_ttl_bounds_and_integral_floats(
    client: httpx.AsyncClient, sk: str, sent: float, stored: int
) -> None:
    """``default_token_ttl`` 1..315360000 is accepted; ``3600.0`` is read as 3600."""
    body = await create_machine(client, sk, default_token_ttl=sent)
    assert body["default_token_ttl"] == stored
    assert type(body["default_token_ttl"]) is int


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("ttl", "code"),
    [
        (0, "form_param_value_invalid"),
        (-1, "form_param_value_invalid"),
        (315_360_001, "form_param_value_invalid"),
        (2**62, "form_param_value_invalid"),
        (3600.5, "form_param_format_invalid"),
        (True, "form_param_format_invalid"),
        (False, "form_param_format_invalid"),
        ("3600", "form_param_format_invalid"),
        ([3600], "form_param_format_invalid"),
        (2**63, "form_param_format_invalid"),
        (-(2**63) - 1, "form_param_format_invalid"),
        (1e300, "form_param_format_invalid"),
    ],
)
async def test_create_rejects_bad_ttl(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, ttl: Any, code: str
) -> None:
    """Out-of-range, fractional, boolean, string and oversized TTLs are 422."""
    await _reject_create(
        client,
        sk,
        runtime,
        {"name": "m", "default_token_ttl": ttl},
        code=code,
        param_name="default_token_ttl",
    )


async def test_create_accepts_150_scoped_machines_and_rejects_151(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """150 scoped machines is the most; 151 is 422 ``form_param_array_size_exceeded``."""
    instance_id = (await create_machine(client, sk))["instance_id"]
    targets = [
        (await runtime.machines.create(instance_id, name=f"t{i}")).machine.id for i in range(151)
    ]
    body = await create_machine(client, sk, scoped_machines=targets[:150])
    assert len(body["scoped_machines"]) == 150
    await _reject_create(
        client,
        sk,
        runtime,
        {"name": "m", "scoped_machines": targets},
        code="form_param_array_size_exceeded",
        param_name="scoped_machines",
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("scoped", "code"),
    [
        ("mch_x", "form_param_format_invalid"),
        ({"id": "mch_x"}, "form_param_format_invalid"),
        ([1, 2], "form_param_format_invalid"),
        ([None], "form_param_format_invalid"),
        ([""], "form_param_value_invalid"),
        (["mch_\x00"], "form_param_value_invalid"),
        (["m" * 65], "form_param_max_length_exceeded"),
        ([UNKNOWN_MACHINE_ID] * 151, "form_param_array_size_exceeded"),
    ],
)
async def test_create_rejects_malformed_scoped_machines(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, scoped: Any, code: str
) -> None:
    """``scoped_machines`` must be an array of at most 150 id strings."""
    await _reject_create(
        client,
        sk,
        runtime,
        {"name": "m", "scoped_machines": scoped},
        code=code,
        param_name="scoped_machines",
    )


@pytest.mark.parametrize("target", ["unknown", "malformed", "other_instance", "one_bad_of_two"])
async def test_create_with_unknown_scoped_machine_stores_nothing(
    client: httpx.AsyncClient, sk: str, other_sk: str, runtime: Runtime, target: str
) -> None:
    """A scoped machine that is not in this instance is 422 and nothing is created."""
    mine = await create_machine(client, sk)
    theirs = await create_machine(client, other_sk)
    scoped = {
        "unknown": [UNKNOWN_MACHINE_ID],
        "malformed": ["not-a-machine"],
        "other_instance": [theirs["id"]],
        "one_bad_of_two": [mine["id"], UNKNOWN_MACHINE_ID],
    }[target]
    await _reject_create(
        client,
        sk,
        runtime,
        {"name": "m", "scoped_machines": scoped},
        code="form_param_value_invalid",
        param_name="scoped_machines",
    )


async def test_create_null_optional_fields_use_defaults(client: httpx.AsyncClient, sk: str) -> None:
    """``null`` for the optional fields means their defaults."""
    body = await create_machine(client, sk, scoped_machines=None, default_token_ttl=None)
    assert body["scoped_machines"] == []
    assert body["default_token_ttl"] == 3600
