"""Attack class: list endpoint abuse.

``order_by`` is an allowlist, paging is bounded and ``query`` is matched literally, so the
list cannot inject SQL, dump everything at once or turn a search into a wildcard enumeration
(CONTRACT.md §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
