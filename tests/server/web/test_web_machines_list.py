"""Route 1, ``GET /v1/machines``: paging, search, ordering and their bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from web_support import (
    PREFIXES,
    SQLITE_ONLY,
    assert_api_headers,
    assert_machine,
    create_machine,
)

from helpers import assert_rejected, auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock


async def _names(client: httpx.AsyncClient, sk: str, **params: str) -> list[str]:
    response = await client.get("/v1/machines", params=params, headers=auth(sk))
    assert response.status_code == 200, response.text
    return [m["name"] for m in response.json()["data"]]


async def _create_named(
    client: httpx.AsyncClient, sk: str, clock: FixedClock, *names: str
) -> list[dict[str, object]]:
    made = []
    for name in names:
        made.append(await create_machine(client, sk, name=name))
        clock.advance(1000)
    return made


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_list_returns_complete_machines(
    client: httpx.AsyncClient, sk: str, prefix: str
) -> None:
    """The list is ``{"data": [Machine], "total_count": n}`` with full machines."""
    target = await create_machine(client, sk, name="API")
    caller = await create_machine(client, sk, name="Email", scoped_machines=[target["id"]])
    response = await client.get(f"{prefix}/machines", headers=auth(sk))
    assert response.status_code == 200
    assert_api_headers(response)
    body = response.json()
    assert set(body) == {"data", "total_count"}
    assert body["total_count"] == 2
    for machine in body["data"]:
        assert_machine(machine)
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id[target["id"]]["scoped_machines"] == []
    nested = by_id[caller["id"]]["scoped_machines"]
    assert [m["id"] for m in nested] == [target["id"]]
    assert "secret_key" not in response.text
    assert caller["secret_key"] not in response.text


async def test_list_empty(client: httpx.AsyncClient, sk: str) -> None:
    """An instance without machines lists an empty page and a zero total."""
    response = await client.get("/v1/machines", headers=auth(sk))
    assert response.status_code == 200
    assert response.json() == {"data": [], "total_count": 0}


async def test_list_default_order_is_newest_first(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """Without ``order_by`` the newest machine comes first (``-created_at``)."""
    await _create_named(client, sk, clock, "first", "second", "third")
    assert await _names(client, sk) == ["third", "second", "first"]


async def test_list_default_limit_is_ten(client: httpx.AsyncClient, sk: str) -> None:
    """Without ``limit`` a page holds ten machines; ``total_count`` counts them all."""
    for index in range(12):
        await create_machine(client, sk, name=f"m{index:02}")
    response = await client.get("/v1/machines", headers=auth(sk))
    assert len(response.json()["data"]) == 10
    assert response.json()["total_count"] == 12


async def test_list_limit_and_offset_page_through(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """``limit`` and ``offset`` select a window; the total stays the full count."""
    await _create_named(client, sk, clock, "a", "b", "c", "d", "e")
    response = await client.get("/v1/machines", params={"limit": 2, "offset": 1}, headers=auth(sk))
    assert [m["name"] for m in response.json()["data"]] == ["d", "c"]
    assert response.json()["total_count"] == 5
    assert await _names(client, sk, limit="2", offset="4") == ["a"]
    past_end = await client.get("/v1/machines", params={"offset": 99}, headers=auth(sk))
    assert past_end.json() == {"data": [], "total_count": 5}


async def test_list_limit_accepts_bounds_and_integral_floats(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """``limit`` 1 and 500 are allowed, and ``10.0`` reads as 10 (the SDKs send floats)."""
    await _create_named(client, sk, clock, "a", "b", "c")
    for limit, expected in (("1", 1), ("2.0", 2), ("10.0", 3), ("500", 3), ("+2", 2)):
        assert len(await _names(client, sk, limit=limit)) == expected, limit


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("param", "value", "code"),
    [
        ("limit", "0", "form_param_value_invalid"),
        ("limit", "501", "form_param_value_invalid"),
        ("limit", "-1", "form_param_value_invalid"),
        ("limit", "abc", "form_param_format_invalid"),
        ("limit", "10.5", "form_param_format_invalid"),
        ("limit", "1e400", "form_param_format_invalid"),
        ("limit", "nan", "form_param_format_invalid"),
        ("limit", "9" * 40, "form_param_format_invalid"),
        ("offset", "-1", "form_param_value_invalid"),
        ("offset", "abc", "form_param_format_invalid"),
        ("offset", str(2**63), "form_param_format_invalid"),
    ],
)
async def test_list_paging_out_of_bounds_is_422(
    client: httpx.AsyncClient, sk: str, param: str, value: str, code: str
) -> None:
    """Paging parameters outside their range or not integers are 422 naming the parameter."""
    response = await client.get("/v1/machines", params={param: value}, headers=auth(sk))
    await assert_rejected(response, status=422, code=code, param_name=param)


async def test_list_query_matches_exact_id(client: httpx.AsyncClient, sk: str) -> None:
    """``query`` equal to a machine id finds that machine."""
    wanted = await create_machine(client, sk, name="alpha")
    await create_machine(client, sk, name="beta")
    response = await client.get("/v1/machines", params={"query": wanted["id"]}, headers=auth(sk))
    assert [m["id"] for m in response.json()["data"]] == [wanted["id"]]
    assert response.json()["total_count"] == 1


async def test_list_query_is_partial_and_case_insensitive(
    client: httpx.AsyncClient, sk: str
) -> None:
    """``query`` matches any part of the name, ignoring case (Unicode case folding)."""
    for name in ("Email Server", "MAILER", "Straße", "API"):
        await create_machine(client, sk, name=name)
    cases = {
        "mail": ["Email Server", "MAILER"],
        "EMAIL": ["Email Server"],
        "server": ["Email Server"],
        "STRASSE": ["Straße"],
        "nothing": [],
    }
    for query, expected in cases.items():
        assert await _names(client, sk, query=query, order_by="name") == expected, query


async def test_list_query_wildcards_are_literal(client: httpx.AsyncClient, sk: str) -> None:
    """SQL ``LIKE`` wildcards and the escape character in ``query`` match only themselves."""
    for name in ("100%", "a_b", "axb", "back\\slash", "plain"):
        await create_machine(client, sk, name=name)
    cases = {"%": ["100%"], "_": ["a_b"], "\\": ["back\\slash"], "a%b": [], "*": []}
    for query, expected in cases.items():
        assert await _names(client, sk, query=query) == expected, query


async def test_list_order_by_allowlist(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """Each allowed ``order_by`` sorts as named; an empty value is the default."""
    await _create_named(client, sk, clock, "b", "a", "c")
    cases = {
        "name": ["a", "b", "c"],
        "+name": ["a", "b", "c"],
        "-name": ["c", "b", "a"],
        "created_at": ["b", "a", "c"],
        "+created_at": ["b", "a", "c"],
        "-created_at": ["c", "a", "b"],
        "": ["c", "a", "b"],
    }
    for order_by, expected in cases.items():
        assert await _names(client, sk, order_by=order_by) == expected, order_by


@SQLITE_ONLY
@pytest.mark.parametrize(
    "order_by",
    [
        "id",
        "updated_at",
        "NAME",
        "--name",
        "+-name",
        "name desc",
        "name,created_at",
        "created_at; DROP TABLE machines",
        "name\x00",
    ],
)
async def test_list_order_by_outside_allowlist_is_422(
    client: httpx.AsyncClient, sk: str, order_by: str
) -> None:
    """Any other ``order_by`` is 422 ``form_param_value_invalid``."""
    response = await client.get("/v1/machines", params={"order_by": order_by}, headers=auth(sk))
    await assert_rejected(
        response, status=422, code="form_param_value_invalid", param_name="order_by"
    )


async def test_list_shows_only_own_instance(
    client: httpx.AsyncClient, sk: str, other_sk: str
) -> None:
    """Each instance key lists only its own instance's machines."""
    mine = await create_machine(client, sk, name="mine")
    theirs = await create_machine(client, other_sk, name="theirs")
    for key, machine in ((sk, mine), (other_sk, theirs)):
        response = await client.get("/v1/machines", headers=auth(key))
        assert [m["id"] for m in response.json()["data"]] == [machine["id"]]
        assert response.json()["total_count"] == 1


@SQLITE_ONLY
@pytest.mark.parametrize("name", ["limit", "offset", "query", "order_by"])
async def test_list_refuses_a_repeated_query_parameter(
    client: httpx.AsyncClient, sk: str, name: str
) -> None:
    """``?offset=x&offset=0`` is 422, not the last value silently (Schemathesis finding)."""
    response = await client.get(f"/v1/machines?{name}=x&{name}=1", headers=auth(sk))
    await assert_rejected(response, status=422, code="form_param_format_invalid", param_name=name)
