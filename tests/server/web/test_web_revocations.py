"""The revocation feed (CONTRACT.md §7): ``GET /v1/m2m_tokens/revocations``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import jwt
import pytest
from sqlalchemy import event
from sqlalchemy.util import await_only
from web_support import PREFIXES, SQLITE_ONLY, assert_api_headers, create_machine
from web_tokens_support import case, make_pair, mint

from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime

BODY_KEYS: Final = frozenset({"object", "data", "cursor", "has_more"})
ITEM_KEYS: Final = frozenset({"object", "id", "subject", "revoked_at", "expiration"})
LONG_WAIT: Final = 10
"""Seconds a long poll may wait; the tests expect an answer well before that."""
ANSWER_TIMEOUT: Final = 5


async def _feed_response(
    client: httpx.AsyncClient, key: str, prefix: str = "/v1", **params: Any
) -> httpx.Response:
    return await client.get(f"{prefix}/m2m_tokens/revocations", params=params, headers=auth(key))


def _assert_feed(response: httpx.Response) -> dict[str, Any]:
    """A 200 feed page: exact keys of the page and of every item, and their types."""
    assert response.status_code == 200, response.text
    assert_api_headers(response)
    body: dict[str, Any] = response.json()
    assert set(body) == BODY_KEYS, body
    assert body["object"] == "m2m_token_revocations"
    assert isinstance(body["cursor"], str)
    assert body["cursor"].isdigit(), body["cursor"]
    assert type(body["has_more"]) is bool
    assert isinstance(body["data"], list)
    for item in body["data"]:
        assert set(item) == ITEM_KEYS, item
        assert item["object"] == "m2m_token_revocation"
        assert item["id"].startswith("mt_")
        assert item["subject"].startswith("mch_")
        assert type(item["revoked_at"]) is int
        assert type(item["expiration"]) is int
    return body


async def _feed(
    client: httpx.AsyncClient, key: str, prefix: str = "/v1", **params: Any
) -> dict[str, Any]:
    return _assert_feed(await _feed_response(client, key, prefix, **params))


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["data"]]


async def _revoke(client: httpx.AsyncClient, key: str, token_id: str) -> None:
    response = await client.post(f"/v1/m2m_tokens/{token_id}/revoke", json={}, headers=auth(key))
    assert response.status_code == 200, response.text


async def _cursor(client: httpx.AsyncClient, key: str) -> str:
    """The feed's current end for ``key``: everything so far is behind it."""
    body = await _feed(client, key, limit=1000)
    assert body["has_more"] is False
    return str(body["cursor"])


# -- content ----------------------------------------------------------------------------------


async def test_instance_key_sees_opaque_and_jwt_revocations(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """The instance key lists revoked opaque and JWT tokens by id (jti), subject and times."""
    pair = await make_pair(client, sk)
    opaque = await mint(client, pair.caller_key)
    signed = await mint(client, pair.caller_key, token_format="jwt")
    assert jwt.decode(signed["token"], options={"verify_signature": False})["jti"] == signed["id"]
    clock.advance(7)
    revoked_at = clock.now_ms()
    await _revoke(client, sk, opaque["id"])
    await _revoke(client, sk, signed["id"])
    for prefix in PREFIXES:
        body = await _feed(client, sk, prefix)
        assert body["data"] == [
            {
                "object": "m2m_token_revocation",
                "id": created["id"],
                "subject": pair.caller["id"],
                "revoked_at": revoked_at,
                "expiration": created["expiration"],
            }
            for created in (opaque, signed)
        ]
        assert body["has_more"] is False


async def test_feed_never_carries_a_secret(client: httpx.AsyncClient, sk: str) -> None:
    """No minted token string and no machine key appears in any caller's feed."""
    pair = await make_pair(client, sk)
    minted = [
        await mint(client, pair.caller_key),
        await mint(client, pair.caller_key, token_format="jwt"),
    ]
    for created in minted:
        await _revoke(client, sk, created["id"])
    secrets = [c["token"] for c in minted] + [pair.caller_key, pair.receiver_key, sk]
    for key in (sk, pair.caller_key, pair.receiver_key):
        response = await _feed_response(client, key)
        assert len(_assert_feed(response)["data"]) == 2
        for secret in secrets:
            assert secret not in response.text


async def test_empty_feed_has_a_cursor(client: httpx.AsyncClient, sk: str) -> None:
    """With nothing revoked: no data, a cursor, has_more false."""
    body = await _feed(client, sk)
    assert body["data"] == []
    assert body["has_more"] is False
    assert int(body["cursor"]) >= 0


async def test_revoking_twice_lists_the_token_once(client: httpx.AsyncClient, sk: str) -> None:
    """A second revoke of the same token adds nothing to the feed."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    await _revoke(client, sk, created["id"])
    cursor = await _cursor(client, sk)
    await _revoke(client, pair.caller_key, created["id"])
    assert _ids(await _feed(client, sk)) == [created["id"]]
    assert (await _feed(client, sk, after=cursor))["data"] == []


# -- cursor and paging ------------------------------------------------------------------------


async def test_cursor_returns_only_newer_revocations(client: httpx.AsyncClient, sk: str) -> None:
    """The cursor fed back as ``after`` lists only what was revoked since."""
    pair = await make_pair(client, sk)
    first = await mint(client, pair.caller_key)
    second = await mint(client, pair.caller_key)
    await _revoke(client, sk, first["id"])
    page = await _feed(client, sk)
    assert _ids(page) == [first["id"]]
    assert (await _feed(client, sk, after=page["cursor"]))["data"] == []
    await _revoke(client, sk, second["id"])
    newer = await _feed(client, sk, after=page["cursor"])
    assert _ids(newer) == [second["id"]]
    assert int(newer["cursor"]) > int(page["cursor"])
    assert (await _feed(client, sk, after=newer["cursor"]))["data"] == []


async def test_small_limit_pages_through_everything_once(
    client: httpx.AsyncClient, sk: str
) -> None:
    """limit=2 pages five revocations as 2, 2, 1 in revocation order, each exactly once."""
    pair = await make_pair(client, sk)
    minted = [(await mint(client, pair.caller_key))["id"] for _ in range(5)]
    for token_id in reversed(minted):  # revocation order differs from minting order
        await _revoke(client, sk, token_id)
    seen: list[str] = []
    pages: list[tuple[int, bool]] = []
    after = "0"
    while True:
        page = await _feed(client, sk, after=after, limit=2)
        seen.extend(_ids(page))
        pages.append((len(page["data"]), page["has_more"]))
        assert int(page["cursor"]) >= int(after)
        after = page["cursor"]
        if not page["has_more"]:
            break
    assert seen == minted[::-1]
    assert pages == [(2, True), (2, True), (1, False)]
    assert (await _feed(client, sk, after=after, limit=2))["data"] == []


async def test_cursor_advances_past_other_instances_changes(
    client: httpx.AsyncClient, sk: str, other_sk: str
) -> None:
    """Another instance's revocation moves sk's cursor on without listing anything."""
    mine = await _cursor(client, sk)
    pair = await make_pair(client, other_sk)
    created = await mint(client, pair.caller_key)
    await _revoke(client, other_sk, created["id"])
    body = await _feed(client, sk, after=mine)
    assert body["data"] == []
    assert body["has_more"] is False
    assert int(body["cursor"]) > int(mine)


async def test_cursor_advances_past_scope_removal(client: httpx.AsyncClient, sk: str) -> None:
    """A change that is no revocation (a removed scope) moves the cursor on, lists nothing."""
    pair = await make_pair(client, sk)
    mine = await _cursor(client, sk)
    removed = await client.delete(
        f"/v1/machines/{pair.caller['id']}/scopes/{pair.receiver['id']}", headers=auth(sk)
    )
    assert removed.status_code == 200, removed.text
    body = await _feed(client, sk, after=mine)
    assert body["data"] == []
    assert int(body["cursor"]) > int(mine)


async def test_after_beyond_the_log_keeps_the_cursor(client: httpx.AsyncClient, sk: str) -> None:
    """An ``after`` past the log's end lists nothing and never moves the cursor backwards."""
    body = await _feed(client, sk, after=2**62)
    assert body == {
        "object": "m2m_token_revocations",
        "data": [],
        "cursor": str(2**62),
        "has_more": False,
    }


# -- who sees what ----------------------------------------------------------------------------


async def test_instances_never_see_each_others_revocations(
    client: httpx.AsyncClient, sk: str, other_sk: str
) -> None:
    """Each instance key lists only its own instance's revocations."""
    listed = {}
    for key in (sk, other_sk):
        pair = await make_pair(client, key)
        created = await mint(client, pair.caller_key)
        await _revoke(client, key, created["id"])
        listed[key] = created["id"]
    assert _ids(await _feed(client, sk)) == [listed[sk]]
    assert _ids(await _feed(client, other_sk)) == [listed[other_sk]]


async def test_machine_keys_see_what_concerns_them(client: httpx.AsyncClient, sk: str) -> None:
    """The receiver in scopes and the minting caller list the revocation; the bystander not."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    other = await create_machine(client, sk, name="other")
    unrelated = await mint(client, other["secret_key"])
    await _revoke(client, sk, created["id"])
    await _revoke(client, sk, unrelated["id"])
    for label, key in (("receiver", pair.receiver_key), ("caller", pair.caller_key)):
        with case(label):
            assert _ids(await _feed(client, key)) == [created["id"]]
    with case("bystander"):
        body = await _feed(client, pair.bystander_key)
        assert body["data"] == []
        assert body["has_more"] is False
        assert body["cursor"] == (await _feed(client, sk))["cursor"]
    with case("other"):
        assert _ids(await _feed(client, other["secret_key"])) == [unrelated["id"]]


async def test_expired_tokens_are_not_listed(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """A revocation is listed until its token expires (expiration exclusive), then never."""
    pair = await make_pair(client, sk)
    short = await mint(client, pair.caller_key, seconds_until_expiration=60)
    long = await mint(client, pair.caller_key, seconds_until_expiration=3600)
    await _revoke(client, sk, short["id"])
    await _revoke(client, sk, long["id"])
    clock.set(short["expiration"] - 1)
    assert _ids(await _feed(client, sk)) == [short["id"], long["id"]]
    clock.set(short["expiration"])
    assert _ids(await _feed(client, sk)) == [long["id"]]
    clock.set(long["expiration"])
    assert (await _feed(client, sk))["data"] == []


async def test_revoking_an_expired_token_is_not_listed(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """A token revoked after it expired never shows up."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key, seconds_until_expiration=60)
    clock.set(created["expiration"] + 1)
    await _revoke(client, sk, created["id"])
    assert (await _feed(client, sk))["data"] == []


async def test_machine_deletion_lists_its_live_tokens(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """A machine delete lists its live opaque and JWT tokens; not expired or earlier ones."""
    pair = await make_pair(client, sk)
    expired = await mint(client, pair.caller_key, seconds_until_expiration=1)
    earlier = await mint(client, pair.caller_key)
    await _revoke(client, sk, earlier["id"])
    cursor = await _cursor(client, sk)
    opaque = await mint(client, pair.caller_key)
    signed = await mint(client, pair.caller_key, token_format="jwt")
    clock.set(expired["expiration"] + 1)
    deleted_at = clock.now_ms()
    response = await client.delete(f"/v1/machines/{pair.caller['id']}", headers=auth(sk))
    assert response.status_code == 200, response.text
    body = await _feed(client, sk, after=cursor)
    assert sorted(body["data"], key=lambda item: item["id"]) == sorted(
        (
            {
                "object": "m2m_token_revocation",
                "id": created["id"],
                "subject": pair.caller["id"],
                "revoked_at": deleted_at,
                "expiration": created["expiration"],
            }
            for created in (opaque, signed)
        ),
        key=lambda item: item["id"],
    )
    assert _ids(await _feed(client, pair.receiver_key, after=cursor)) == _ids(body)
    assert sorted(_ids(await _feed(client, sk))) == sorted(
        [earlier["id"], opaque["id"], signed["id"]]
    )


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        # NOTE: under READ COMMITTED each statement sees anew: reading the rows before the
        # log's end once let the cursor jump over a revocation committed in between.
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
    indirect=True,
)
async def test_revocation_committed_mid_read_is_not_skipped(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """A revocation committed while a page is being read is listed then or on the next page."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    cursor = await _cursor(client, sk)
    pending = [created["id"]]

    # A cursor-execute hook runs inside SQLAlchemy's greenlet, so await_only may await there:
    # another request's revocation commits between the feed's two reads of the log.
    reads: list[str] = []

    def revoke_before_reading_the_log_end(*args: Any) -> None:
        statement: str = args[2]
        if "FROM changes" in statement:
            reads.append(statement)
            if pending and len(reads) == 2:  # the second of the two reads
                await_only(_revoke(client, sk, pending.pop()))

    engine = runtime.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", revoke_before_reading_the_log_end)
    try:
        racing = await _feed(client, sk, after=cursor)
    finally:
        event.remove(engine, "before_cursor_execute", revoke_before_reading_the_log_end)
    assert not pending, "the revocation did not happen during the read"
    following = await _feed(client, sk, after=racing["cursor"])
    assert _ids(racing) + _ids(following) == [created["id"]]


# -- long poll --------------------------------------------------------------------------------


async def _until_waiting(task: asyncio.Task[Any]) -> None:
    """Give the long poll time to read an empty page and start waiting."""
    await asyncio.sleep(0.2)
    assert not task.done(), "the long poll answered before anything happened"


async def test_long_poll_answers_when_a_token_is_revoked(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """A waiting request answers with a revocation made while it waited, long before ``wait``."""
    pair = await make_pair(client, sk)
    for prefix, key in ((p, k) for p in PREFIXES for k in (sk, pair.receiver_key)):
        with case((prefix, key[:3])):
            created = await mint(client, pair.caller_key)
            cursor = await _cursor(client, sk)
            task = asyncio.create_task(
                _feed_response(client, key, prefix, after=cursor, wait=LONG_WAIT)
            )
            await _until_waiting(task)
            clock.advance(3)
            await _revoke(client, sk, created["id"])
            body = _assert_feed(await asyncio.wait_for(task, timeout=ANSWER_TIMEOUT))
            assert body["data"] == [
                {
                    "object": "m2m_token_revocation",
                    "id": created["id"],
                    "subject": pair.caller["id"],
                    "revoked_at": clock.now_ms(),
                    "expiration": created["expiration"],
                },
            ]
            assert body["has_more"] is False
            assert int(body["cursor"]) > int(cursor)


async def test_long_poll_with_something_to_list_answers_at_once(
    client: httpx.AsyncClient, sk: str
) -> None:
    """``wait`` only matters for an empty page: a page with revocations comes back at once."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    await _revoke(client, sk, created["id"])
    response = await asyncio.wait_for(
        _feed_response(client, sk, wait=LONG_WAIT), timeout=ANSWER_TIMEOUT
    )
    assert _ids(_assert_feed(response)) == [created["id"]]


async def test_long_poll_times_out_with_an_empty_page(client: httpx.AsyncClient, sk: str) -> None:
    """wait=1 with nothing happening answers an empty page with the same cursor."""
    cursor = await _cursor(client, sk)
    body = await _feed(client, sk, after=cursor, wait=1)
    assert body == {
        "object": "m2m_token_revocations",
        "data": [],
        "cursor": cursor,
        "has_more": False,
    }


async def test_long_poll_keeps_waiting_through_changes_it_may_not_see(
    client: httpx.AsyncClient, sk: str
) -> None:
    """A bystander's poll ignores a revocation not meant for it, then ends past it, empty."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    cursor = await _cursor(client, sk)
    task = asyncio.create_task(_feed_response(client, pair.bystander_key, after=cursor, wait=1))
    await _until_waiting(task)
    await _revoke(client, sk, created["id"])
    await asyncio.sleep(0)
    assert not task.done(), "the poll answered an empty page before its wait ended"
    body = _assert_feed(await asyncio.wait_for(task, timeout=ANSWER_TIMEOUT))
    assert body["data"] == []
    assert body["has_more"] is False
    assert int(body["cursor"]) > int(cursor)


# -- refusals ---------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_bad_parameters_are_400(client: httpx.AsyncClient, runtime: Runtime, sk: str) -> None:
    """Out of range or non-integer after, limit or wait: a 400 naming the field, no change."""
    for name, value, code in [
        ("after", "-1", "form_param_value_invalid"),
        ("after", str(2**62 + 1), "form_param_value_invalid"),
        ("after", f"{2**62 + 1}.0", "form_param_value_invalid"),  # read exactly, not as float
        ("after", "abc", "form_param_format_invalid"),
        ("after", "1e3", "form_param_format_invalid"),
        ("after", "9" * 30, "form_param_format_invalid"),
        ("limit", "0", "form_param_value_invalid"),
        ("limit", "1001", "form_param_value_invalid"),
        ("limit", "1.5", "form_param_format_invalid"),
        ("limit", "ten", "form_param_format_invalid"),
        ("wait", "21", "form_param_value_invalid"),
        ("wait", "-1", "form_param_value_invalid"),
        ("wait", "0.5", "form_param_format_invalid"),
        ("wait", "soon", "form_param_format_invalid"),
    ]:
        with case((name, value, code)):
            before = await storage_snapshot(runtime)
            response = await _feed_response(client, sk, **{name: value})
            await assert_rejected(
                response,
                status=400,
                code=code,
                param_name=name,
                runtime=runtime,
                before=before,
                not_echoed=[sk],
            )


@SQLITE_ONLY
async def test_edge_parameters_are_accepted(client: httpx.AsyncClient, sk: str) -> None:
    """The range ends and integral floats (the SDKs' ``10.0``) are fine; empty means default."""
    for params in [
        {"after": "0", "limit": "1", "wait": "0"},
        {"after": str(2**62), "limit": "1000"},
        {"limit": "10.0", "wait": "0.0"},
        {"after": "", "limit": "", "wait": ""},
    ]:
        with case(params):
            await _feed(client, sk, **params)


@SQLITE_ONLY
async def test_without_a_key_is_401(client: httpx.AsyncClient) -> None:
    """No Authorization header: 401 authentication_invalid, on both prefixes."""
    for prefix in PREFIXES:
        response = await client.get(f"{prefix}/m2m_tokens/revocations")
        await assert_rejected(response, status=401, code="authentication_invalid")


@SQLITE_ONLY
async def test_dead_machine_keys_are_401(client: httpx.AsyncClient, sk: str) -> None:
    """A deleted machine's key and a key rotated away are 401 clerk_key_invalid, not echoed."""
    deleted = await create_machine(client, sk, name="deleted")
    rotated = await create_machine(client, sk, name="rotated")
    assert (await client.delete(f"/v1/machines/{deleted['id']}", headers=auth(sk))).is_success
    rotation = await client.post(
        f"/v1/machines/{rotated['id']}/secret_key/rotate",
        json={"previous_token_ttl": 0},
        headers=auth(sk),
    )
    assert rotation.status_code == 200, rotation.text
    for label, machine in (("deleted", deleted), ("rotated", rotated)):
        with case(label):
            key = machine["secret_key"]
            response = await _feed_response(client, key)
            await assert_rejected(response, status=401, code="clerk_key_invalid", not_echoed=[key])


@SQLITE_ONLY
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_other_methods_are_405(client: httpx.AsyncClient, sk: str, method: str) -> None:
    """Only GET (and HEAD) read the feed: anything else is 405 with Allow, on both prefixes."""
    for prefix in PREFIXES:
        response = await client.request(
            method, f"{prefix}/m2m_tokens/revocations", headers=auth(sk)
        )
        await assert_rejected(response, status=405, code="method_not_allowed")
        assert_api_headers(response)
        assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "HEAD"}


@SQLITE_ONLY
@pytest.mark.parametrize("name", ["after", "limit", "wait"])
async def test_feed_refuses_a_repeated_query_parameter(
    client: httpx.AsyncClient, sk: str, name: str
) -> None:
    """``?after={}&after=0`` is 400, not the last value silently (Schemathesis finding)."""
    response = await client.get(f"/v1/m2m_tokens/revocations?{name}=x&{name}=0", headers=auth(sk))
    await assert_rejected(response, status=400, code="form_param_format_invalid", param_name=name)
