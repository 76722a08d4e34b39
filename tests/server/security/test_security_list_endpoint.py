"""Attack class: list endpoint abuse.

``order_by`` is an allowlist, paging is bounded and ``query`` is matched literally, so the
list cannot inject SQL, dump everything at once or turn a search into a wildcard enumeration
(CONTRACT.md §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from security_support import SQLITE_ONLY, create_machine, refused

from helpers import auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.runtime import Runtime


@SQLITE_ONLY
@pytest.mark.parametrize(
    "order_by",
    [
        "name; DROP TABLE machines",
        "name)--",
        "(SELECT 1)",
        "CASE WHEN 1=1 THEN name ELSE id END",
        "machines.name",
        "instance_id",
        "name COLLATE nocase",
        "1",
        "-1",
        "+",
        "-",
    ],
)
async def test_order_by_cannot_inject_sql(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, order_by: str
) -> None:
    """Anything outside the ``order_by`` allowlist is 422 and never reaches SQL."""
    await refused(
        client,
        runtime,
        "GET",
        "/v1/machines",
        params={"order_by": order_by},
        headers=auth(sk),
        status=422,
        code="form_param_value_invalid",
        param_name="order_by",
    )


@SQLITE_ONLY
@pytest.mark.parametrize("limit", ["501", "1000000", str(2**62), "0", "-500"])
async def test_limit_cannot_dump_everything(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, limit: str
) -> None:
    """``limit`` above 500 (or below 1) is 422, not silently served or clamped."""
    await refused(
        client,
        runtime,
        "GET",
        "/v1/machines",
        params={"limit": limit},
        headers=auth(sk),
        status=422,
        code="form_param_value_invalid",
        param_name="limit",
    )


async def test_offset_extremes_do_not_fail(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """The largest offset is an empty page on both backends; beyond it and below 0 is 422."""
    await create_machine(client, sk)
    response = await client.get("/v1/machines", params={"offset": 2**62}, headers=auth(sk))
    assert response.status_code == 200
    assert response.json() == {"data": [], "total_count": 1}
    for offset in (2**62 + 1, -1):
        await refused(
            client,
            runtime,
            "GET",
            "/v1/machines",
            params={"offset": offset},
            headers=auth(sk),
            status=422,
            code="form_param_value_invalid",
            param_name="offset",
        )


async def test_query_wildcards_do_not_enumerate(client: httpx.AsyncClient, sk: str) -> None:
    """LIKE/GLOB/regex metacharacters in ``query`` match only names containing them."""
    for name in ("alpha", "beta", "gamma"):
        await create_machine(client, sk, name=name)
    for query in ("%", "_", "%%", "%_%", "*", ".*", "[a-z]", "\\", "' OR '1'='1"):
        response = await client.get("/v1/machines", params={"query": query}, headers=auth(sk))
        assert response.status_code == 200
        assert response.json() == {"data": [], "total_count": 0}, query


async def test_query_length_is_capped(client: httpx.AsyncClient, sk: str, runtime: Runtime) -> None:
    """``query`` may be as long as a name (255) and no longer."""
    response = await client.get("/v1/machines", params={"query": "q" * 255}, headers=auth(sk))
    assert response.status_code == 200
    await refused(
        client,
        runtime,
        "GET",
        "/v1/machines",
        params={"query": "q" * 256},
        headers=auth(sk),
        status=422,
        code="form_param_max_length_exceeded",
        param_name="query",
    )


async def test_total_count_counts_only_matches_of_own_instance(
    client: httpx.AsyncClient, sk: str, other_sk: str
) -> None:
    """``total_count`` reveals nothing about other instances or non-matching machines."""
    for name in ("shared-name", "other"):
        await create_machine(client, sk, name=name)
    for _ in range(3):
        await create_machine(client, other_sk, name="shared-name")
    response = await client.get("/v1/machines", params={"query": "shared"}, headers=auth(sk))
    assert response.json()["total_count"] == 1


# -- GET /v1/m2m_tokens ------------------------------------------------------------------------


async def _minter(client: httpx.AsyncClient, sk: str, tokens: int) -> dict[str, Any]:
    machine = await create_machine(client, sk, name="minter")
    for _ in range(tokens):
        minted = await client.post("/v1/m2m_tokens", json={}, headers=auth(machine["secret_key"]))
        assert minted.status_code == 201, minted.text
    return machine


@pytest.mark.parametrize(
    "subject",
    ["mch_%00", "%00", "{id}%00", "{id}%00%", "%ED%A0%80", "%FF", "m" * 5000, "mch_%", "{id}%25"],
)
async def test_token_list_subject_that_no_machine_can_have_lists_nothing(
    client: httpx.AsyncClient, sk: str, subject: str
) -> None:
    """NUL, undecodable bytes, wildcards or a huge ``subject``: an empty page, never a 500.

    Regression: a NUL in ``subject`` reached PostgreSQL, which refuses it in text, as a 500.
    """
    machine = await _minter(client, sk, 2)
    response = await client.get(
        f"/v1/m2m_tokens?subject={subject.format(id=machine['id'])}&revoked=true&expired=true",
        headers=auth(sk),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"m2m_tokens": [], "total_count": 0}


async def test_token_list_subject_is_required(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """No ``subject`` (or an empty one) is 400 ``missing_query_parameter``: no instance dump."""
    await _minter(client, sk, 1)
    for query in ("", "?subject=", "?limit=100", "?subject_id=x"):
        await refused(
            client,
            runtime,
            "GET",
            f"/v1/m2m_tokens{query}",
            headers=auth(sk),
            status=400,
            code="missing_query_parameter",
            param_name="subject",
        )


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("param", "value", "code"),
    [
        ("limit", "101", "form_param_value_invalid"),
        ("limit", "0", "form_param_value_invalid"),
        ("limit", str(2**62), "form_param_value_invalid"),
        ("limit", "1e400", "form_param_format_invalid"),
        ("limit", "nan", "form_param_format_invalid"),
        ("offset", "-1", "form_param_value_invalid"),
        ("offset", str(2**62 + 1), "form_param_value_invalid"),
        ("offset", "9" * 5000, "form_param_format_invalid"),
        ("revoked", "yes", "form_param_format_invalid"),
        ("expired", "null", "form_param_format_invalid"),
    ],
)
async def test_token_list_pagination_and_flags_are_bounded(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, param: str, value: str, code: str
) -> None:
    """``limit`` 1..100, ``offset`` 0..2**62, strict booleans: anything else is a 400."""
    machine = await _minter(client, sk, 1)
    await refused(
        client,
        runtime,
        "GET",
        "/v1/m2m_tokens",
        params={"subject": machine["id"], param: value},
        headers=auth(sk),
        status=400,
        code=code,
        param_name=param,
    )


async def test_token_list_offset_extremes_do_not_fail(client: httpx.AsyncClient, sk: str) -> None:
    """The largest offset is an empty page with the true count, on both backends."""
    machine = await _minter(client, sk, 3)
    response = await client.get(
        "/v1/m2m_tokens",
        params={"subject": machine["id"], "offset": 2**62, "limit": 100},
        headers=auth(sk),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"m2m_tokens": [], "total_count": 3}


@SQLITE_ONLY
@pytest.mark.parametrize(
    "order_by", ["created_at", "-created_at", "name; DROP TABLE m2m_tokens", "(SELECT 1)", "1"]
)
async def test_token_list_order_by_is_not_an_input(
    client: httpx.AsyncClient, sk: str, order_by: str
) -> None:
    """The token list takes no ``order_by``: whatever is sent, it is newest first, unchanged."""
    machine = await _minter(client, sk, 3)
    params = {"subject": machine["id"]}
    plain = await client.get("/v1/m2m_tokens", params=params, headers=auth(sk))
    ordered = await client.get(
        "/v1/m2m_tokens", params={**params, "order_by": order_by}, headers=auth(sk)
    )
    assert ordered.status_code == 200, ordered.text
    assert ordered.json() == plain.json()
    created = [(t["created_at"], t["id"]) for t in plain.json()["m2m_tokens"]]
    assert created == sorted(created, reverse=True)
    assert len(created) == 3
