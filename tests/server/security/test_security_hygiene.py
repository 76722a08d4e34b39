"""Secrets are shown once and never logged (SECURITY.md principle 3).

The suite-wide check lives in ``tests/hygiene.py``. The first tests here leak on purpose,
through a log line, a library logger, a traceback, a bogus route and a server's log
file, and show the checker catches each; the rest drive the real app through failed
authentication, verify, revoke, list and a forced 500, and find no secret in any log
line or later response.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import structlog
from security_support import SQLITE_ONLY, create_machine
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import hygiene
from gatepass_server.app import _handlers, create_app
from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.observability import logger
from gatepass_server.services.instances import Bootstrap
from gatepass_server.services.tokens import CreatedToken, TokenService
from helpers import LiveServer, auth

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request

    from gatepass_server.runtime import Runtime
    from hygiene import Hygiene


async def _mint(client: httpx.AsyncClient, machine_key: str, token_format: str) -> str:
    response = await client.post(
        "/v1/m2m_tokens", json={"token_format": token_format}, headers=auth(machine_key)
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


# --- the checker catches what it should ------------------------------------------------


@SQLITE_ONLY
async def test_a_logged_secret_fragment_is_caught(
    client: httpx.AsyncClient, sk: str, secret_hygiene: Hygiene
) -> None:
    """A machine key's body logged without its prefix escapes redaction, not the check."""
    machine = await create_machine(client, sk)
    logger.info("oops", fragment=machine["secret_key"].removeprefix("ak_"))
    problems = secret_hygiene.take_problems()
    assert len(problems) == 1, problems
    assert problems[0].startswith("a secret in a log line: ")
    assert machine["secret_key"][3:] not in problems[0], "the report masks the secret"


@SQLITE_ONLY
async def test_a_redacted_secret_is_not_a_problem(
    client: httpx.AsyncClient, sk: str, secret_hygiene: Hygiene
) -> None:
    """The server's redaction of a whole key in a log line is what production writes."""
    machine = await create_machine(client, sk)
    logger.info("redacted", header=f"Bearer {machine['secret_key']}")
    assert any('"Bearer ak_[REDACTED]"' in line for line in secret_hygiene.lines)
    assert secret_hygiene.take_problems() == []


def _raise(message: str) -> None:
    raise ValueError(message)


@SQLITE_ONLY
async def test_a_jwt_or_a_traceback_in_a_library_log_is_caught(
    client: httpx.AsyncClient, sk: str, secret_hygiene: Hygiene
) -> None:
    """Stdlib loggers are captured at DEBUG, tracebacks included, as production renders them."""
    machine = await create_machine(client, sk)
    jwt = await _mint(client, machine["secret_key"], "jwt")
    logging.getLogger("some.library").debug("presented %s", jwt)
    try:
        _raise(jwt.rsplit(".", 1)[1])
    except ValueError:
        logging.getLogger("other.library").exception("failed")
    problems = secret_hygiene.take_problems()
    assert [p.split(": ", 1)[1].split()[:2] for p in problems] == [
        ["DEBUG", "some.library"],
        ["ERROR", "other.library"],
    ], problems
    assert "Traceback" in problems[1]


def _bogus_app(secret: str) -> Starlette:
    async def listed(_request: Request) -> JSONResponse:
        return JSONResponse({"data": [{"id": "mt_x", "token": secret}]})

    async def created(_request: Request) -> JSONResponse:
        return JSONResponse({"token": secret}, status_code=201)

    async def created_with_echo(_request: Request) -> JSONResponse:
        return JSONResponse({"token": secret}, status_code=201, headers={"x-echo": secret})

    async def error(_request: Request) -> JSONResponse:
        return JSONResponse({"errors": [{"message": f"bad key {secret[3:]}"}]}, status_code=401)

    return Starlette(
        routes=[
            Route("/v1/m2m_tokens", listed, methods=["GET"]),
            Route("/v1/m2m_tokens", created, methods=["POST"]),
            Route("/m2m_tokens", created_with_echo, methods=["POST"]),
            Route("/v1/machines", error, methods=["GET"]),
        ]
    )


async def test_a_secret_in_the_wrong_response_is_caught(secret_hygiene: Hygiene) -> None:
    """Only the create response's own field may carry a token: lists, headers, errors may not."""
    secret = generate_secret(SecretKind.TOKEN)
    transport = httpx.ASGITransport(app=_bogus_app(secret))
    async with httpx.AsyncClient(transport=transport, base_url="http://bogus.test") as http:
        assert (await http.post("/v1/m2m_tokens")).status_code == 201  # allowed: records it
        assert secret_hygiene.take_problems() == []
        await http.get("/v1/m2m_tokens")
        await http.post("/m2m_tokens")
        await http.get("/v1/machines")
    problems = secret_hygiene.take_problems()
    assert [p.split(" -> ")[0] for p in problems] == [
        "a secret in the response to GET http://bogus.test/v1/m2m_tokens",
        "a secret in the response to POST http://bogus.test/m2m_tokens",
        "a secret in the response to GET http://bogus.test/v1/machines",
    ], problems


async def test_a_key_shown_for_another_machine_is_caught(secret_hygiene: Hygiene) -> None:
    """``GET …/secret_key`` may show a machine's own key only, never another machine's."""
    secret = generate_secret(SecretKind.MACHINE)
    first, second = "mch_" + "a1" * 13 + "b", "mch_" + "c2" * 13 + "d"

    async def created(_request: Request) -> JSONResponse:
        return JSONResponse({"id": first, "secret_key": secret})

    async def shown(_request: Request) -> JSONResponse:
        return JSONResponse({"object": "machine_secret_key", "secret": secret})

    app = Starlette(
        routes=[
            Route("/v1/machines", created, methods=["POST"]),
            Route("/v1/machines/{machine_id}/secret_key", shown, methods=["GET"]),
        ]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bogus.test") as http:
        await http.post("/v1/machines")
        await http.get(f"/v1/machines/{first}/secret_key")
        assert secret_hygiene.take_problems() == []
        await http.get(f"/v1/machines/{second}/secret_key")
    (problem,) = secret_hygiene.take_problems()
    assert problem.startswith(f"the key of {first} was shown for {second}: ")


async def test_an_authorization_value_echoed_is_caught(secret_hygiene: Hygiene) -> None:
    """Every key a request sends is a secret: a response echoing it fails the test."""
    key = generate_secret(SecretKind.INSTANCE_TEST)
    transport = httpx.ASGITransport(app=_bogus_app(key))
    async with httpx.AsyncClient(transport=transport, base_url="http://bogus.test") as http:
        await http.get("/v1/machines", headers=auth(key))
    (problem,) = secret_hygiene.take_problems()
    assert problem.startswith("a secret in the response to GET http://bogus.test/v1/machines")


def test_a_server_log_file_is_checked_against_the_session(secret_hygiene: Hygiene) -> None:
    """A process's log is checked against every secret the session saw; the banner is not."""
    key = generate_secret(SecretKind.INSTANCE_TEST)
    secret_hygiene.saw_secret(key, "test")
    banner = f"Its secret key is shown only this once; store it now:\n\n    {key}\n"
    hygiene.check_server_log(banner, "a server")
    assert secret_hygiene.take_problems() == []
    hygiene.check_server_log(banner + f'{{"event":"x","k":"{key[8:]}"}}\n', "a server")
    (problem,) = secret_hygiene.take_problems()
    assert problem.startswith("a secret in the log of a server: ")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("sk_test_" + "A" * 38, None),  # made up, low entropy: not a secret
        ("mt_" + "0123456789abcdef" * 2, None),  # a token id: a handle
        ("Bearer", None),
        ("ak_short", None),
    ],
)
def test_needles_skip_what_is_not_a_secret(value: str, needle: str | None) -> None:
    """Ids, words and made-up strings are not tracked, so they raise no false alarm."""
    assert hygiene.needle_of(value) == needle


def test_needles_of_real_secrets_are_their_random_part() -> None:
    """A key's needle is its random body: the whole key and the body alone both contain it."""
    for kind in SecretKind:
        secret = generate_secret(kind)
        needle = hygiene.needle_of(secret)
        assert needle == secret.removeprefix(kind.value)[:32]
        assert hygiene.needles_in(f"x {secret[len(kind.value) :]} y", {needle}) == {needle}


# --- no cache keeps a response ---------------------------------------------------------


@SQLITE_ONLY
async def test_every_route_and_method_answers_no_store(client: httpx.AsyncClient, sk: str) -> None:
    """Every route the app serves, each method, success or error, sends ``no-store``.

    Driven by the route table, so a new route (``/v1/openapi.json``…) is covered unasked.
    """
    target = await create_machine(client, sk)
    caller = await create_machine(client, sk, scoped_machines=[target["id"]])
    token = await _mint(client, caller["secret_key"], "opaque")
    verified = await client.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(sk))
    values = {
        "machine_id": caller["id"],
        "other_machine_id": target["id"],
        "token_id": verified.json()["id"],
    }
    seen = 0
    for path, handlers in _handlers().items():
        url = path.format(**values)
        for method in [*handlers, "HEAD", "OPTIONS"]:
            key = caller["secret_key"] if method == "POST" and url.endswith("m2m_tokens") else sk
            response = await client.request(method, url, headers=auth(key), json={})
            assert response.headers.get_list("cache-control") == ["no-store"], (method, url)
            seen += 1
    assert seen > 50


# --- the real app leaks nothing --------------------------------------------------------


def _assert_clean(secret_hygiene: Hygiene, *secrets: str) -> None:
    """Logs were captured, every secret is tracked, and none leaked."""
    assert any('"event":"request"' in line for line in secret_hygiene.lines)
    assert secret_hygiene.records, "stdlib records are captured too"
    for secret in secrets:
        assert hygiene.needle_of(secret) in secret_hygiene.needles, secret[:8]
    assert secret_hygiene.take_problems() == []


async def test_failed_authentication_logs_no_key(
    client: httpx.AsyncClient, sk: str, secret_hygiene: Hygiene
) -> None:
    """Wrong, retired and mistyped keys, and a token as a key, leave no trace of themselves."""
    machine = await create_machine(client, sk)
    token = await _mint(client, machine["secret_key"], "opaque")
    await client.post(
        f"/v1/machines/{machine['id']}/secret_key/rotate",
        json={"previous_token_ttl": 0},
        headers=auth(sk),
    )
    unknown = generate_secret(SecretKind.INSTANCE_TEST)
    for key in (machine["secret_key"], unknown, sk[:-1] + "x", token):
        response = await client.get("/v1/machines", headers=auth(key))
        assert response.status_code in {401, 403}
    response = await client.post("/v1/m2m_tokens", headers=auth(sk))
    assert response.status_code == 401
    _assert_clean(secret_hygiene, machine["secret_key"], unknown, token)


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
async def test_verify_revoke_and_list_log_no_token(
    client: httpx.AsyncClient, sk: str, secret_hygiene: Hygiene, token_format: str
) -> None:
    """A token verified, revoked, verified again and listed appears only in its create."""
    target = await create_machine(client, sk)
    caller = await create_machine(client, sk, scoped_machines=[target["id"]])
    token = await _mint(client, caller["secret_key"], token_format)
    for key in (sk, target["secret_key"]):
        verified = await client.post(
            "/v1/m2m_tokens/verify", json={"token": token}, headers=auth(key)
        )
        assert verified.status_code == 200
    legacy = await client.post("/m2m_tokens/verify", json={"secret": token}, headers=auth(sk))
    assert legacy.status_code == 200
    token_id = verified.json()["id"]
    revoked = await client.post(
        f"/v1/m2m_tokens/{token_id}/revoke",
        json={"revocation_reason": "done"},
        headers=auth(caller["secret_key"]),
    )
    assert revoked.status_code == 200
    again = await client.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(sk))
    assert again.status_code == 404
    listed = await client.get(
        "/v1/m2m_tokens",
        params={"subject": caller["id"], "revoked": "true"},
        headers=auth(sk),
    )
    listed_ids = [t["id"] for t in listed.json()["m2m_tokens"]]
    assert listed_ids == ([token_id] if token_format == "opaque" else [])  # JWTs are not listed
    machines = await client.get("/v1/machines", headers=auth(sk))
    assert machines.status_code == 200
    _assert_clean(secret_hygiene, token, caller["secret_key"])


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
async def test_a_forced_500_logs_no_secret(
    runtime: Runtime,
    client: httpx.AsyncClient,
    sk: str,
    secret_hygiene: Hygiene,
    monkeypatch: pytest.MonkeyPatch,
    token_format: str,
) -> None:
    """A bug whose exception message holds the token is logged with its traceback, redacted."""
    machine = await create_machine(client, sk)
    token = await _mint(client, machine["secret_key"], token_format)

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        msg = f"a library choked on {token}"
        raise RuntimeError(msg)

    monkeypatch.setattr(TokenService, "verify", broken)
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gatepass.test") as http:
        response = await http.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(sk))
    assert response.status_code == 500
    errors = [line for line in secret_hygiene.lines if '"event":"unhandled_error"' in line]
    assert len(errors) == 1
    assert "Traceback" in errors[0]
    assert "a library choked on" in errors[0]
    _assert_clean(secret_hygiene, token)


@SQLITE_ONLY
async def test_capture_survives_a_test_that_reconfigures_structlog(
    client: httpx.AsyncClient, sk: str, secret_hygiene: Hygiene
) -> None:
    """Lines logged inside ``capture_logs`` are the test's own; capture resumes after it."""
    with structlog.testing.capture_logs():
        await client.get("/v1/machines", headers=auth(sk))
    assert not secret_hygiene.lines
    await client.get("/v1/machines", headers=auth(sk))
    assert len([line for line in secret_hygiene.lines if '"event":"request"' in line]) == 1


@SQLITE_ONLY
async def test_service_results_keep_their_secret_out_of_repr(runtime: Runtime) -> None:
    """A created instance, machine or token logged by its ``repr`` shows no plaintext."""
    instance = await runtime.instances.create("repr")
    machine = await runtime.machines.create(instance.instance.id, name="repr")
    for result, secret in [(instance, instance.secret_key), (machine, machine.secret_key)]:
        assert secret[3:] not in repr(result)
    token = CreatedToken(token=None, secret=generate_secret(SecretKind.TOKEN))  # type: ignore[arg-type]
    assert token.secret[3:] not in repr(token)
    bootstrap = Bootstrap(instance=instance.instance, generated_secret_key=instance.secret_key)
    assert instance.secret_key[3:] not in repr(bootstrap)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_live_server_logs_at_debug_and_its_log_is_checked_at_stop(
    database_url: str, tmp_path: Path, bootstrap_key: str, secret_hygiene: Hygiene
) -> None:
    """``LiveServer`` runs at DEBUG; a secret in its log file is reported when it stops."""
    env = {
        "GATEPASS_DATA_DIR": str(tmp_path / "data"),
        "GATEPASS_DATABASE_URL": database_url,
        "GATEPASS_BOOTSTRAP_SECRET_KEY": bootstrap_key,
    }
    server = LiveServer(env=env)
    log_path = tmp_path / "server.log"
    server.start(log_path)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            created = http.post("/v1/machines", json={"name": "x"}, headers=auth(bootstrap_key))
            assert created.status_code == 200
            minted = http.post(
                "/v1/m2m_tokens", json={}, headers=auth(created.json()["secret_key"])
            )
            assert minted.status_code == 201
    finally:
        server.stop()
    log = log_path.read_text()
    assert "\nDEBUG aiosqlite " in log, "the server ran at DEBUG"
    assert secret_hygiene.take_problems() == [], "the real server leaked nothing"
    with log_path.open("a") as file:  # now as if it had logged the token's body
        file.write(f"DEBUG leak {minted.json()['token'][3:]}\n")
    server.start(log_path)
    server.stop()
    (problem,) = secret_hygiene.take_problems()
    assert problem.startswith(f"a secret in the log of the server on port {server.port}: ")


async def test_sql_echo_carries_no_plaintext(
    client: httpx.AsyncClient, sk: str, secret_hygiene: Hygiene
) -> None:
    """With SQL echo on (statements and bound parameters), no route writes a plaintext.

    Creates, shows, rotates, mints both formats, verifies and revokes: every statement
    that touches a secret's digest, sealed copy or hint is echoed and checked.
    """
    engine = logging.getLogger("sqlalchemy.engine")
    level = engine.level
    engine.setLevel(logging.INFO)
    try:
        target = await create_machine(client, sk)
        caller = await create_machine(client, sk, scoped_machines=[target["id"]])
        path = f"/v1/machines/{caller['id']}/secret_key"
        shown = await client.get(path, headers=auth(sk))
        rotated = await client.post(
            f"{path}/rotate", json={"previous_token_ttl": 60}, headers=auth(sk)
        )
        key = rotated.json()["secret"]
        tokens = [await _mint(client, key, token_format) for token_format in ("opaque", "jwt")]
        reused = await client.post(
            "/v1/m2m_tokens", json={"min_remaining_ttl_seconds": 10}, headers=auth(key)
        )
        assert reused.status_code == 201
        for token in tokens:
            verified = await client.post(
                "/v1/m2m_tokens/verify", json={"token": token}, headers=auth(target["secret_key"])
            )
            assert verified.status_code == 200
            revoked = await client.post(
                f"/v1/m2m_tokens/{verified.json()['id']}/revoke", json={}, headers=auth(sk)
            )
            assert revoked.status_code == 200
    finally:
        engine.setLevel(level)
    echoed = [r for r in secret_hygiene.records if r.name.startswith("sqlalchemy.engine")]
    assert any("INSERT INTO m2m_tokens" in r.getMessage() for r in echoed)
    assert any(r.getMessage().startswith(("[generated", "[cached")) for r in echoed), "params"
    _assert_clean(secret_hygiene, shown.json()["secret"], key, *tokens)
