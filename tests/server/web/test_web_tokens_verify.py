"""Route 13 (CONTRACT.md §4): verify, and one byte-identical 404 for every kind of "no"."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from web_support import PREFIXES, SQLITE_ONLY, assert_api_headers
from web_tokens_support import Pair, assert_token, case, get_token, make_pair, mint, verify

from gatepass_server.domain.keys import SecretKind, generate_secret
from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime


def _without_trace(response: httpx.Response) -> bytes:
    """The body bytes with the per-request trace id blanked out."""
    trace = response.json()["clerk_trace_id"]
    return response.content.replace(trace.encode(), b"TRACE")


async def _assert_all_identical_404(
    responses: dict[str, httpx.Response], secrets: list[str]
) -> None:
    """Every response is 404 token_invalid, byte for byte the same apart from the trace id."""
    for response in responses.values():
        await assert_rejected(response, status=404, code="token_invalid", not_echoed=secrets)
    bodies = {name: _without_trace(r) for name, r in responses.items()}
    reference = next(iter(bodies.values()))
    assert all(body == reference for body in bodies.values()), bodies
    assert len({r.json()["clerk_trace_id"] for r in responses.values()}) == len(responses)


async def test_verify_succeeds_for_admin_and_receiver(client: httpx.AsyncClient, sk: str) -> None:
    """An sk and the scoped receiver get 200 and the record, for {"token"} or {"secret"}."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key, claims={"role": "mailer"})
    for prefix in PREFIXES:
        for field in ("token", "secret"):
            for key in (sk, pair.receiver_key):
                response = await verify(client, key, created["token"], field=field, prefix=prefix)
                assert response.status_code == 200, response.text
                assert_api_headers(response)
                body = response.json()
                assert_token(body)
                assert {k: v for k, v in created.items() if k != "token"} == body
                assert created["token"] not in response.text


async def test_verify_refuses_machines_outside_scopes(client: httpx.AsyncClient, sk: str) -> None:
    """The bystander and the subject itself are not in scopes: 404 token_invalid."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    responses = {
        "bystander": await verify(client, pair.bystander_key, created["token"]),
        "subject": await verify(client, pair.caller_key, created["token"]),
    }
    await _assert_all_identical_404(responses, [created["token"]])


async def test_subject_cannot_scope_itself(client: httpx.AsyncClient, sk: str) -> None:
    """A machine can never be in its own token's scopes: self-scope is refused."""
    pair = await make_pair(client, sk)
    response = await client.post(
        f"/v1/machines/{pair.caller['id']}/scopes",
        json={"to_machine_id": pair.caller["id"]},
        headers=auth(sk),
    )
    assert response.status_code == 422


async def test_expiry_boundary(client: httpx.AsyncClient, sk: str, clock: FixedClock) -> None:
    """Valid at expiration - 1 ms; invalid at expiration and at expiration + 1 ms."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key, seconds_until_expiration=10)
    clock.set(created["expiration"] - 1)
    alive = await verify(client, pair.receiver_key, created["token"])
    assert alive.status_code == 200, alive.text
    assert alive.json()["expired"] is False
    clock.advance(1)
    at = await verify(client, pair.receiver_key, created["token"])
    clock.advance(1)
    after = await verify(client, sk, created["token"])
    await _assert_all_identical_404({"at": at, "after": after}, [created["token"]])
    assert (await get_token(client, sk, created["id"]))["expired"] is True


async def _every_no(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, other_sk: str, clock: FixedClock
) -> tuple[dict[str, httpx.Response], list[str]]:
    """One verify for each reason a token is invalid, all asked by the receiver or sk."""
    pair: Pair = await make_pair(client, sk)
    good = await mint(client, pair.caller_key)
    revoked = await mint(client, pair.caller_key)
    await client.post(f"/v1/m2m_tokens/{revoked['id']}/revoke", json={}, headers=auth(sk))
    expiring = await mint(client, pair.caller_key, seconds_until_expiration=1)
    doomed = await make_pair(client, sk)
    deleted = await mint(client, doomed.caller_key)
    await client.delete(f"/v1/machines/{doomed.caller['id']}", headers=auth(sk))
    unscoped = await make_pair(client, sk)
    removed = await mint(client, unscoped.caller_key)
    await client.delete(
        f"/v1/machines/{unscoped.caller['id']}/scopes/{unscoped.receiver['id']}", headers=auth(sk)
    )
    foreign_machine = (
        await client.post("/v1/machines", json={"name": "foreign"}, headers=auth(other_sk))
    ).json()
    foreign = await mint(client, foreign_machine["secret_key"])
    clock.advance(1_000)
    wrong_checksum = good["token"][:-1] + ("A" if good["token"][-1] != "A" else "B")
    cases: dict[str, tuple[str, str]] = {
        "unknown": (sk, generate_secret(SecretKind.TOKEN)),
        "wrong-checksum": (sk, wrong_checksum),
        "garbage": (sk, "garbage"),
        "empty": (sk, ""),
        "huge": (sk, "mt_" + "a" * 20_000),
        "non-ascii": (sk, "mt_é" + good["token"][4:]),
        "nul": (sk, "mt_\x00"),
        "id-not-secret": (sk, good["id"]),
        "machine-key": (sk, pair.caller_key),
        "revoked": (sk, revoked["token"]),
        "expired": (sk, expiring["token"]),
        "deleted-machine": (sk, deleted["token"]),
        "removed-scope": (unscoped.receiver_key, removed["token"]),
        "other-instance": (sk, foreign["token"]),
        "out-of-scope": (pair.bystander_key, good["token"]),
    }
    snapshot = await storage_snapshot(runtime)
    responses = {}
    for name, (key, token) in cases.items():
        responses[name] = await client.post(
            "/v1/m2m_tokens/verify",
            content=_json_token(token),
            headers={**auth(key), "Content-Type": "application/json"},
        )
    assert await storage_snapshot(runtime) == snapshot, "a failed verify wrote to storage"
    ok = await verify(client, pair.receiver_key, good["token"])
    assert ok.status_code == 200, ok.text
    secrets = [good["token"], revoked["token"], expiring["token"], deleted["token"]]
    return responses, secrets


def _json_token(token: str) -> bytes:
    """``{"token": …}`` as ASCII JSON: lone surrogates and NUL travel as escapes."""
    return json.dumps({"token": token}).encode("ascii")


async def test_every_failure_is_the_same_404(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, other_sk: str, clock: FixedClock
) -> None:
    """Every kind of "no" is one 404 token_invalid, byte-identical but for the trace id.

    Unknown, malformed, revoked, expired, deleted machine, removed scope, other instance,
    out of scope; and nothing stored by any of them.
    """
    responses, secrets = await _every_no(client, runtime, sk, other_sk, clock)
    await _assert_all_identical_404(responses, secrets)


@SQLITE_ONLY
async def test_bad_verify_body_is_400(client: httpx.AsyncClient, runtime: Runtime, sk: str) -> None:
    """No token is form_param_missing; a non-string or another field is a 400 naming it."""
    labels = ["missing", "null", "number", "secret-array", "unknown-field"]
    for index, (body, code, param) in enumerate(
        [
            ({}, "form_param_missing", "token"),
            ({"token": None}, "form_param_missing", "token"),
            ({"token": 5}, "form_param_format_invalid", "token"),
            ({"secret": ["mt_x"]}, "form_param_format_invalid", "secret"),
            ({"token": "x", "subject": "y"}, "form_param_unknown", "subject"),
        ]
    ):
        with case(labels[index]):
            before = await storage_snapshot(runtime)
            response = await client.post("/v1/m2m_tokens/verify", json=body, headers=auth(sk))
            await assert_rejected(
                response, status=400, code=code, param_name=param, runtime=runtime, before=before
            )


@SQLITE_ONLY
async def test_lone_surrogate_escape_is_an_unreadable_body(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """The JSON decoder refuses a lone-surrogate escape: request_body_invalid, never a 500."""
    before = await storage_snapshot(runtime)
    response = await client.post(
        "/v1/m2m_tokens/verify",
        content=_json_token("mt_\ud800"),
        headers={**auth(sk), "Content-Type": "application/json"},
    )
    await assert_rejected(
        response, status=400, code="request_body_invalid", runtime=runtime, before=before
    )


@SQLITE_ONLY
async def test_verify_needs_a_key(client: httpx.AsyncClient) -> None:
    """Without a key, verify is 401 before the token is even read."""
    response = await client.post(
        "/v1/m2m_tokens/verify", json={"token": generate_secret(SecretKind.TOKEN)}
    )
    await assert_rejected(response, status=401, code="authentication_invalid")


async def test_token_wins_over_secret(client: httpx.AsyncClient, sk: str) -> None:
    """When both are sent, ``token`` is the one verified."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    both = await client.post(
        "/v1/m2m_tokens/verify",
        json={"token": created["token"], "secret": "garbage"},
        headers=auth(sk),
    )
    assert both.status_code == 200, both.text


async def test_last_used_at_is_batched(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, clock: FixedClock
) -> None:
    """Verify writes nothing itself; the flush records the latest use, never going back."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    before = await storage_snapshot(runtime)
    clock.advance(100)
    assert (await verify(client, sk, created["token"])).status_code == 200
    clock.advance(100)
    assert (await verify(client, pair.receiver_key, created["token"])).status_code == 200
    assert await storage_snapshot(runtime) == before, "verify wrote before a flush"
    assert (await get_token(client, sk, created["id"]))["last_used_at"] is None
    await runtime.tokens.flush_last_used()
    used = created["created_at"] + 200
    assert (await get_token(client, sk, created["id"]))["last_used_at"] == used
    await runtime.tokens.flush_last_used()
    assert (await get_token(client, sk, created["id"]))["last_used_at"] == used


async def test_failed_verify_does_not_count_as_use(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """An out-of-scope verify leaves last_used_at alone, also after a flush."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    assert (await verify(client, pair.bystander_key, created["token"])).status_code == 404
    await runtime.tokens.flush_last_used()
    assert (await get_token(client, sk, created["id"]))["last_used_at"] is None


async def test_machine_key_verifies_after_scope_is_restored(
    client: httpx.AsyncClient, sk: str
) -> None:
    """Removing then re-adding the scope lets the receiver verify the old token again."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    scope_url = f"/v1/machines/{pair.caller['id']}/scopes"
    await client.delete(f"{scope_url}/{pair.receiver['id']}", headers=auth(sk))
    assert (await verify(client, pair.receiver_key, created["token"])).status_code == 404
    assert (await verify(client, sk, created["token"])).status_code == 200
    await client.post(scope_url, json={"to_machine_id": pair.receiver["id"]}, headers=auth(sk))
    assert (await verify(client, pair.receiver_key, created["token"])).status_code == 200


async def test_new_scope_does_not_widen_an_old_token(client: httpx.AsyncClient, sk: str) -> None:
    """A scope added after minting does not let the new target verify the old token."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    await client.post(
        f"/v1/machines/{pair.caller['id']}/scopes",
        json={"to_machine_id": pair.bystander["id"]},
        headers=auth(sk),
    )
    await assert_rejected(
        await verify(client, pair.bystander_key, created["token"]),
        status=404,
        code="token_invalid",
    )


async def test_verify_refuses_a_mistyped_secret_beside_a_valid_token(
    client: httpx.AsyncClient, sk: str
) -> None:
    """``{"token": <valid>, "secret": true}`` is 400, not a 200 that ignores the bad field.

    Schemathesis finding: the legacy field was type-checked only when ``token`` was absent.
    """
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    for bad in (True, 5, {}, ["x"]):
        response = await client.post(
            "/v1/m2m_tokens/verify",
            json={"token": created["token"], "secret": bad},
            headers=auth(pair.receiver_key),
        )
        await assert_rejected(
            response,
            status=400,
            code="form_param_format_invalid",
            param_name="secret",
            not_echoed=[created["token"]],
        )
    both = await client.post(
        "/v1/m2m_tokens/verify",
        json={"token": created["token"], "secret": "ignored"},
        headers=auth(pair.receiver_key),
    )
    assert both.status_code == 200, both.text
