"""Attack class: races (SECURITY.md principle 9).

Concurrent requests over HTTP against the in-process app, on both backends: every answer is
a success or a clean refusal (never a 500, which the ``client`` fixture fails on), and the
invariant of each race holds in storage afterwards. ``asyncio.gather`` interleaves the
requests at every await, so on PostgreSQL they overlap in the database; on SQLite
``BEGIN IMMEDIATE`` queues the writers.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from security_support import create_machine
from sqlalchemy import func, select

from gatepass_server.domain.machines import MAX_SCOPED_MACHINES
from gatepass_server.storage.tables import m2m_tokens, machine_scopes, machine_secret_keys
from helpers import assert_rejected, auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.runtime import Runtime

CONCURRENCY: Final = 8
"""Requests per race: below the SQLite pool's 15 connections, so none waits for a slot."""


async def _rows(runtime: Runtime, statement: Any) -> list[Any]:
    async with runtime.database.read() as conn:
        return list((await conn.execute(statement)).all())


async def _assert_clean(response: httpx.Response, *, allowed: dict[int, str]) -> None:
    """A non-success answer is one of the expected refusals, fully formed."""
    if response.status_code in allowed:
        await assert_rejected(
            response, status=response.status_code, code=allowed[response.status_code]
        )
        return
    assert response.status_code == 503, response.text
    await assert_rejected(response, status=503, code="service_unavailable")


async def test_race_concurrent_rotations_leave_exactly_one_current_key(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Concurrent rotations of one key: one current key, the one ``GET secret_key`` shows."""
    machine = await create_machine(client, sk)
    url = f"/v1/machines/{machine['id']}/secret_key/rotate"
    answers = await asyncio.gather(
        *(
            client.post(url, json={"previous_token_ttl": 0}, headers=auth(sk))
            for _ in range(CONCURRENCY)
        )
    )
    issued = []
    for answer in answers:
        if answer.status_code == 200:
            issued.append(answer.json()["secret"])
        else:
            await _assert_clean(answer, allowed={})
    assert issued, "no rotation succeeded"
    current = await _rows(
        runtime,
        select(machine_secret_keys.c.digest).where(
            machine_secret_keys.c.machine_id == machine["id"],
            machine_secret_keys.c.expires_at.is_(None),
        ),
    )
    assert len(current) == 1
    shown = (await client.get(f"/v1/machines/{machine['id']}/secret_key", headers=auth(sk))).json()
    assert shown["secret"] in issued
    # With no grace, every other key (the first one included) is refused at once.
    for key in [machine["secret_key"], *issued]:
        minted = await client.post("/v1/m2m_tokens", json={}, headers=auth(key))
        if key == shown["secret"]:
            assert minted.status_code == 201, minted.text
        else:
            await assert_rejected(minted, status=401, code="machine_secret_key_invalid")


async def test_race_rotate_while_deleting_leaves_no_key(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Rotations racing a delete: the delete wins in the end, no key of the machine survives."""
    machine = await create_machine(client, sk)
    rotations = [
        client.post(
            f"/v1/machines/{machine['id']}/secret_key/rotate",
            json={"previous_token_ttl": 28_800},
            headers=auth(sk),
        )
        for _ in range(CONCURRENCY - 1)
    ]
    half = CONCURRENCY // 2
    delete = client.delete(f"/v1/machines/{machine['id']}", headers=auth(sk))
    answers = await asyncio.gather(*rotations[:half], delete, *rotations[half:])
    deleted = answers[half]
    assert deleted.status_code == 200, deleted.text
    issued = [machine["secret_key"]]
    for answer in answers[:half] + answers[half + 1 :]:
        if answer.status_code == 200:
            issued.append(answer.json()["secret"])
        else:
            await _assert_clean(answer, allowed={404: "resource_not_found"})
    keys = await _rows(
        runtime,
        select(machine_secret_keys.c.digest).where(
            machine_secret_keys.c.machine_id == machine["id"]
        ),
    )
    assert keys == []
    for key in issued:
        await assert_rejected(
            await client.get("/v1/machines", headers=auth(key)),
            status=401,
            code="clerk_key_invalid",
        )


async def test_race_duplicate_scope_adds_one_wins_rest_conflict(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """The same scope added concurrently: one 200, every other answer 409 ``conflict``."""
    source = await create_machine(client, sk, name="source")
    target = await create_machine(client, sk, name="target")
    answers = await asyncio.gather(
        *(
            client.post(
                f"/v1/machines/{source['id']}/scopes",
                json={"to_machine_id": target["id"]},
                headers=auth(sk),
            )
            for _ in range(CONCURRENCY)
        )
    )
    assert [a.status_code for a in answers].count(200) == 1, [a.text for a in answers]
    for answer in answers:
        if answer.status_code != 200:
            await _assert_clean(answer, allowed={409: "conflict"})
    rows = await _rows(
        runtime,
        select(machine_scopes.c.to_machine_id).where(
            machine_scopes.c.from_machine_id == source["id"]
        ),
    )
    assert rows == [(target["id"],)]


async def test_race_scope_adds_around_the_cap_never_exceed_it(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Concurrent adds two short of the 150-scope cap: two succeed, the rest are 422."""
    room = 2
    targets = [
        (await create_machine(client, sk, name=f"t{i}"))["id"]
        for i in range(MAX_SCOPED_MACHINES - room + CONCURRENCY)
    ]
    source = await create_machine(
        client, sk, name="source", scoped_machines=targets[: MAX_SCOPED_MACHINES - room]
    )
    answers = await asyncio.gather(
        *(
            client.post(
                f"/v1/machines/{source['id']}/scopes",
                json={"to_machine_id": target},
                headers=auth(sk),
            )
            for target in targets[MAX_SCOPED_MACHINES - room :]
        )
    )
    assert [a.status_code for a in answers].count(200) == room, [a.status_code for a in answers]
    for answer in answers:
        if answer.status_code != 200:
            await _assert_clean(answer, allowed={422: "form_param_array_size_exceeded"})
    (count,) = await _rows(
        runtime,
        select(func.count())
        .select_from(machine_scopes)
        .where(machine_scopes.c.from_machine_id == source["id"]),
    )
    assert count == (MAX_SCOPED_MACHINES,)


async def test_race_delete_while_minting_leaves_no_live_token(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Mints racing the minter's deletion: no token of the deleted machine verifies."""
    receiver = await create_machine(client, sk, name="receiver")
    minter = await create_machine(client, sk, name="minter", scoped_machines=[receiver["id"]])
    key = minter["secret_key"]

    def mint(index: int) -> Any:
        body = {"token_format": "jwt"} if index % 2 else {}
        return client.post("/v1/m2m_tokens", json=body, headers=auth(key))

    half = CONCURRENCY // 2
    answers = await asyncio.gather(
        *(mint(i) for i in range(half)),
        client.delete(f"/v1/machines/{minter['id']}", headers=auth(sk)),
        *(mint(i) for i in range(half, CONCURRENCY)),
    )
    assert answers[half].status_code == 200, answers[half].text
    minted = []
    for answer in answers[:half] + answers[half + 1 :]:
        if answer.status_code == 201:
            minted.append(answer.json())
        else:
            await _assert_clean(answer, allowed={401: "machine_secret_key_invalid"})
    live = await _rows(
        runtime,
        select(m2m_tokens.c.id).where(
            m2m_tokens.c.subject == minter["id"], m2m_tokens.c.revoked_at.is_(None)
        ),
    )
    assert live == []
    for token in minted:
        response = await client.post(
            "/v1/m2m_tokens/verify", json={"token": token["token"]}, headers=auth(sk)
        )
        await assert_rejected(response, status=404, code="token_invalid")
    await assert_rejected(
        await client.post("/v1/m2m_tokens", json={}, headers=auth(key)),
        status=401,
        code="machine_secret_key_invalid",
    )


async def test_race_concurrent_double_revoke_keeps_one_first_reason(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Revokes with different reasons at once: all 200, all report the one reason stored."""
    minter = await create_machine(client, sk)
    token = (
        await client.post("/v1/m2m_tokens", json={}, headers=auth(minter["secret_key"]))
    ).json()
    reasons = [f"reason-{i}" for i in range(CONCURRENCY)]
    answers = await asyncio.gather(
        *(
            client.post(
                f"/v1/m2m_tokens/{token['id']}/revoke",
                json={"revocation_reason": reason},
                headers=auth(sk if i % 2 else minter["secret_key"]),
            )
            for i, reason in enumerate(reasons)
        )
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    reported = {a.json()["revocation_reason"] for a in answers}
    assert len(reported) == 1
    (winner,) = reported
    assert winner in reasons
    stored = await _rows(
        runtime,
        select(m2m_tokens.c.revocation_reason, m2m_tokens.c.revoked_at).where(
            m2m_tokens.c.id == token["id"]
        ),
    )
    assert [r.revocation_reason for r in stored] == [winner]
    assert {a.json()["updated_at"] for a in answers} == {stored[0].revoked_at}


async def test_race_concurrent_creates_with_one_name_all_succeed_apart(
    client: httpx.AsyncClient, sk: str
) -> None:
    """Names are not unique: concurrent creates of one name give distinct machines and keys."""
    answers = await asyncio.gather(
        *(
            client.post("/v1/machines", json={"name": "same"}, headers=auth(sk))
            for _ in range(CONCURRENCY)
        )
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    created = [a.json() for a in answers]
    assert len({m["id"] for m in created}) == CONCURRENCY
    assert len({m["secret_key"] for m in created}) == CONCURRENCY
    listed = await client.get(
        "/v1/machines", params={"query": "same", "limit": 100}, headers=auth(sk)
    )
    assert sorted(m["id"] for m in listed.json()["data"]) == sorted(m["id"] for m in created)
    for machine in created:  # each key is its own machine's, none another's
        page = await client.get(
            "/v1/m2m_tokens",
            params={"subject": machine["id"]},
            headers=auth(machine["secret_key"]),
        )
        assert page.status_code == 200, page.text
