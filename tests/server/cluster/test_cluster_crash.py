"""Crash safety under ``kill -9`` on SQLite and PostgreSQL (SECURITY.md principle 8).

Nothing is returned before it commits, and nothing acknowledged is lost.

Every test kills a real server process with SIGKILL (no shutdown, no flush, no cleanup),
starts a new one on the same database, and checks what survived. The test-only failpoint
``token_insert_before_commit`` (failpoints.py) makes the server kill itself between a
token row's insert and its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from sqlalchemy import func, select

from gatepass_server.storage.database import Database
from gatepass_server.storage.tables import m2m_tokens
from helpers import auth, live_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from helpers import LiveServer

FORMATS: Final = ("opaque", "jwt")
CONCURRENT_REVOKES: Final = 20
KILL_AFTER_ACKS: Final = 10
"""In the race test, the kill comes as soon as this many revokes are acknowledged."""
CREATED_TOKENS: Final = 6
REQUEST_TIMEOUT_SECONDS: Final = 10.0
EXIT_TIMEOUT_SECONDS: Final = 10.0


@pytest.fixture
def start_node(
    empty_database_url: str,
    node_env: Callable[[Mapping[str, str], Path], dict[str, str]],
    tmp_path: Path,
) -> Iterator[Callable[..., LiveServer]]:
    """Start a server on this test's own database (extra ``GATEPASS_*`` as keywords).

    Each start logs to a file of its own; every server is stopped, by its PID, at the end.
    """
    env = node_env({"GATEPASS_DATABASE_URL": empty_database_url}, tmp_path / "data")
    starts = itertools.count(1)
    with contextlib.ExitStack() as stack:

        def start(**extra: str) -> LiveServer:
            log = tmp_path / f"start-{next(starts)}.log"
            return stack.enter_context(live_server({**env, **extra}, log))

        yield start


def _kill9(server: LiveServer) -> None:
    """SIGKILL the server process we started; it must be gone by that signal."""
    assert server.process is not None
    server.process.kill()
    assert server.process.wait(timeout=EXIT_TIMEOUT_SECONDS) == -signal.SIGKILL


def _client(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_SECONDS)


def _ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text)
    body: dict[str, Any] = response.json()
    return body


def _machine(http: httpx.Client, sk: str) -> dict[str, Any]:
    return _ok(http.post("/v1/machines", json={"name": "crash"}, headers=auth(sk)))


def _mint(http: httpx.Client, machine_key: str, token_format: str) -> dict[str, Any]:
    response = http.post(
        "/v1/m2m_tokens", json={"token_format": token_format}, headers=auth(machine_key)
    )
    return _ok(response, 201)


def _stored_tokens(http: httpx.Client, sk: str, machine_id: str) -> dict[str, Any]:
    """Every token of the machine, revoked and expired included."""
    return _ok(
        http.get(
            "/v1/m2m_tokens",
            params={"subject": machine_id, "revoked": "true", "expired": "true", "limit": 100},
            headers=auth(sk),
        ),
    )


def _token_rows(database_url: str, machine_id: str) -> int:
    """How many token rows of the machine storage holds, in any format (JWTs are not listed)."""

    async def count() -> int:
        database = Database(database_url)
        try:
            async with database.read() as conn:
                query = select(func.count()).where(m2m_tokens.c.subject == machine_id)
                return int((await conn.execute(query)).scalar_one())
        finally:
            await database.dispose()

    return asyncio.run(count())


def _verify_status(http: httpx.Client, sk: str, token: str) -> int:
    return http.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(sk)).status_code


def _reason(token_id: str) -> str:
    return f"crash test {token_id}"


def _revoke(url: str, sk: str, token_id: str) -> httpx.Response | None:
    """Revoke with a reason of the token's own; ``None`` if the server died under the call."""
    try:
        return httpx.post(
            f"{url}/v1/m2m_tokens/{token_id}/revoke",
            json={"revocation_reason": _reason(token_id)},
            headers=auth(sk),
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
    except httpx.TransportError:
        return None


@pytest.mark.parametrize("token_format", FORMATS)
def test_a_token_is_never_returned_before_its_row_commits(
    start_node: Callable[..., LiveServer],
    empty_database_url: str,
    bootstrap_key: str,
    token_format: str,
) -> None:
    """Killed between a token's insert and commit: the client got nothing, storage kept nothing."""
    server = start_node(GATEPASS_TEST_FAILPOINTS="token_insert_before_commit")
    with _client(server) as http:
        machine = _machine(http, bootstrap_key)  # writes no token: the failpoint stays quiet
        with pytest.raises(httpx.TransportError):
            http.post(
                "/v1/m2m_tokens",
                json={"token_format": token_format},
                headers=auth(machine["secret_key"]),
            )
    assert server.process is not None
    assert server.process.wait(timeout=EXIT_TIMEOUT_SECONDS) == -signal.SIGKILL

    with _client(start_node()) as http:
        assert _stored_tokens(http, bootstrap_key, machine["id"]) == {
            "m2m_tokens": [],
            "total_count": 0,
        }
        assert _token_rows(empty_database_url, machine["id"]) == 0
        # Nothing the dead transaction held (a row lock, a SQLite write lock) is left over.
        minted = _mint(http, machine["secret_key"], token_format)
        stored = _ok(http.get(f"/v1/m2m_tokens/{minted['id']}", headers=auth(bootstrap_key)))
        assert stored["revoked"] is False
    assert _token_rows(empty_database_url, machine["id"]) == 1


def test_every_acknowledged_revoke_survives_kill_9(
    start_node: Callable[..., LiveServer], bootstrap_key: str
) -> None:
    """Twenty concurrent revokes, acknowledged, then SIGKILL: all twenty hold after restart."""
    server = start_node()
    with _client(server) as http:
        machine = _machine(http, bootstrap_key)
        tokens = [
            _mint(http, machine["secret_key"], FORMATS[i % 2]) for i in range(CONCURRENT_REVOKES)
        ]
    with ThreadPoolExecutor(max_workers=CONCURRENT_REVOKES) as pool:
        responses = list(pool.map(lambda t: _revoke(server.url, bootstrap_key, t["id"]), tokens))
    _kill9(server)  # at once: the acknowledgements are in, nothing else has happened since

    for token, response in zip(tokens, responses, strict=True):
        assert response is not None
        revoked = _ok(response)
        assert (revoked["revoked"], revoked["revocation_reason"]) == (True, _reason(token["id"]))
    with _client(start_node()) as http:
        for token in tokens:
            assert _verify_status(http, bootstrap_key, token["token"]) == 404
            stored = _ok(http.get(f"/v1/m2m_tokens/{token['id']}", headers=auth(bootstrap_key)))
            assert (stored["revoked"], stored["revocation_reason"]) == (True, _reason(token["id"]))


def test_revokes_racing_kill_9_are_kept_if_acknowledged_and_all_or_nothing_otherwise(
    start_node: Callable[..., LiveServer], bootstrap_key: str
) -> None:
    """SIGKILL while revokes are in flight: every acknowledged one holds, none is half done."""
    server = start_node()
    with _client(server) as http:
        machine = _machine(http, bootstrap_key)
        tokens = [
            _mint(http, machine["secret_key"], FORMATS[i % 2]) for i in range(CONCURRENT_REVOKES)
        ]
    acknowledged: set[str] = set()
    with ThreadPoolExecutor(max_workers=CONCURRENT_REVOKES) as pool:
        futures = {
            pool.submit(_revoke, server.url, bootstrap_key, token["id"]): token["id"]
            for token in tokens
        }
        for future in as_completed(futures, timeout=4 * REQUEST_TIMEOUT_SECONDS):
            response = future.result()
            if response is None:
                continue
            assert _ok(response)["revoked"] is True
            acknowledged.add(futures[future])
            if len(acknowledged) == KILL_AFTER_ACKS:
                _kill9(server)
    assert len(acknowledged) >= KILL_AFTER_ACKS

    with _client(start_node()) as http:
        for token in tokens:
            stored = _ok(http.get(f"/v1/m2m_tokens/{token['id']}", headers=auth(bootstrap_key)))
            status = _verify_status(http, bootstrap_key, token["token"])
            if token["id"] in acknowledged or stored["revoked"]:
                assert stored["revocation_reason"] == _reason(token["id"])
                assert (stored["revoked"], status) == (True, 404)
            else:
                assert (stored["revocation_reason"], status) == (None, 200)


def test_an_acknowledged_create_survives_kill_9(
    start_node: Callable[..., LiveServer], bootstrap_key: str
) -> None:
    """Tokens answered 201, then SIGKILL: after restart every one of them verifies."""
    server = start_node()
    with _client(server) as http:
        machine = _machine(http, bootstrap_key)
        tokens = [_mint(http, machine["secret_key"], FORMATS[i % 2]) for i in range(CREATED_TOKENS)]
    _kill9(server)  # right after the last 201

    with _client(start_node()) as http:
        for token in tokens:
            verified = _ok(
                http.post(
                    "/v1/m2m_tokens/verify",
                    json={"token": token["token"]},
                    headers=auth(bootstrap_key),
                ),
            )
            assert (verified["id"], verified["revoked"]) == (token["id"], False)
        listed = _stored_tokens(http, bootstrap_key, machine["id"])  # opaque tokens only
        opaque = {t["id"] for i, t in enumerate(tokens) if FORMATS[i % 2] == "opaque"}
        assert {t["id"] for t in listed["m2m_tokens"]} == opaque
        _mint(http, machine["secret_key"], "opaque")  # the machine and its key survived too


def test_an_acknowledged_machine_delete_and_key_rotation_survive_kill_9(
    start_node: Callable[..., LiveServer], bootstrap_key: str
) -> None:
    """A machine deleted and another's key rotated without grace (both 200), then SIGKILL.

    After restart: the deleted machine, its key and its opaque and JWT tokens are gone, and
    the machine scoped to it no longer lists it; the rotated machine's old key is refused,
    its new key works, and a token it minted before the rotation still verifies.
    """
    server = start_node()
    with _client(server) as http:
        receiver = _machine(http, bootstrap_key)
        doomed = _ok(
            http.post(
                "/v1/machines",
                json={"name": "doomed", "scoped_machines": [receiver["id"]]},
                headers=auth(bootstrap_key),
            ),
        )
        tokens = [_mint(http, doomed["secret_key"], token_format) for token_format in FORMATS]
        for token in tokens:
            assert _verify_status(http, bootstrap_key, token["token"]) == 200
        before_rotation = _mint(http, receiver["secret_key"], "opaque")
        rotated = _ok(
            http.post(
                f"/v1/machines/{receiver['id']}/secret_key/rotate",
                json={"previous_token_ttl": 0},
                headers=auth(bootstrap_key),
            ),
        )
        deleted = _ok(http.delete(f"/v1/machines/{doomed['id']}", headers=auth(bootstrap_key)))
        assert deleted["deleted"] is True
    _kill9(server)  # right after the last acknowledgement

    with _client(start_node()) as http:
        gone = http.get(f"/v1/machines/{doomed['id']}", headers=auth(bootstrap_key))
        assert gone.status_code == 404, gone.text
        for token in tokens:
            assert _verify_status(http, bootstrap_key, token["token"]) == 404
        for old_key in (doomed["secret_key"], receiver["secret_key"]):
            refused = http.post(
                "/v1/m2m_tokens", json={"token_format": "opaque"}, headers=auth(old_key)
            )
            assert refused.status_code == 401, refused.text
        machines = _ok(http.get("/v1/machines", headers=auth(bootstrap_key)))
        assert {m["id"] for m in machines["data"]} == {receiver["id"]}
        _mint(http, rotated["secret"], "jwt")
        assert _verify_status(http, bootstrap_key, before_rotation["token"]) == 200
        shown = _ok(
            http.get(f"/v1/machines/{receiver['id']}/secret_key", headers=auth(bootstrap_key))
        )
        assert shown["secret"] == rotated["secret"]
