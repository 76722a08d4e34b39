from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import jwt
import pytest

from bench import micro
from gatepass import Gatepass, VerificationOptions
from gatepass._auth import Verification
from gatepass_server.domain.keys import is_machine_id

if TYPE_CHECKING:
    from collections.abc import Callable

SECONDS = 0.02
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def jwts() -> micro.Jwts:
    return micro.make_jwts(8)


@pytest.fixture(scope="module")
def other_jwts() -> micro.Jwts:
    return micro.make_jwts(1)


def test_jwts_are_shaped_like_the_servers(jwts: micro.Jwts) -> None:
    tokens, jwks, _ = jwts
    assert len(set(tokens)) == len(tokens) == 8
    (jwk,) = jwks["keys"]
    assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}
    header = jwt.get_unverified_header(tokens[0])
    assert header == {"alg": "RS256", "kid": jwk["kid"], "typ": "JWT"}
    claims = jwt.decode(tokens[0], options={"verify_signature": False})
    assert set(claims) == {"jti", "sub", "aud", "scopes", "iat", "nbf", "exp"}
    assert claims["jti"].startswith("mt_")
    assert is_machine_id(claims["sub"])
    assert claims["aud"] == [micro.RECEIVER]
    assert is_machine_id(micro.RECEIVER)
    assert claims["scopes"] == micro.RECEIVER
    assert claims["iat"] == claims["nbf"] < claims["exp"]


def test_jwts_verify_with_pyjwt(jwts: micro.Jwts) -> None:
    for token in jwts.tokens:
        claims = jwt.decode(token, jwts.public_key, algorithms=["RS256"], audience=micro.RECEIVER)
        assert claims["sub"] == micro.SENDER


def test_jwts_verify_with_the_sdk_core(jwts: micro.Jwts) -> None:
    verification = Verification(VerificationOptions())
    verification.jwks_loaded(jwts.jwks)
    micro._feed_read(verification)
    for token in jwts.tokens:
        state = micro.core_authenticate(verification, token, micro.RECEIVER)
        assert state.is_authenticated
        assert state.subject == micro.SENDER
        assert state.scopes == (micro.RECEIVER,)


def test_jwts_verify_with_the_sdk_client(jwts: micro.Jwts) -> None:
    with micro._client(jwts.jwks) as client:
        for token in jwts.tokens:
            state = client.authenticate_token(token, audience=micro.RECEIVER)
            assert state.is_authenticated
            assert state.subject == micro.SENDER


def test_the_client_reads_jwks_and_feed_from_the_fake_server(jwts: micro.Jwts) -> None:
    server = micro._FakeServer(jwts.jwks)
    transport = httpx.MockTransport(server.handle)
    client = Gatepass(machine_secret_key="ak_test", api_url="http://x", transport=transport)
    try:
        assert client.authenticate_token(jwts.tokens[0]).is_authenticated
        assert client.authenticate_token(jwts.tokens[1]).is_authenticated
        assert server.jwks_fetches == 1
    finally:
        client.close()
        server.stop()


def test_rates_are_positive(jwts: micro.Jwts) -> None:
    tokens, jwks, public_key = jwts
    rates = [
        micro.rs256_sign_rate(SECONDS),
        micro.pyjwt_decode_rate(SECONDS, tokens, public_key),
        micro.sdk_first_sight_rate(SECONDS, tokens, jwks),
        micro.sdk_cached_rate(SECONDS, tokens[0], jwks),
        micro.client_first_sight_rate(SECONDS, tokens, jwks),
        micro.client_cached_rate(SECONDS, tokens[0], jwks),
    ]
    assert all(rate > 0 for rate in rates)


def test_first_sight_ratio(jwts: micro.Jwts) -> None:
    ratio = micro.first_sight_ratio(SECONDS, jwts, rounds=2)
    assert ratio.rounds == 2
    values = ratio.to_json()
    assert set(values) == {
        "rounds",
        "pyjwt_decode",
        "sdk_first_sight",
        "client_first_sight",
        "sdk_ratio",
        "client_ratio",
    }
    assert all(value > 0 for value in values.values())


@pytest.mark.parametrize(
    "measure",
    [
        lambda j, o: micro.pyjwt_decode_rate(SECONDS, j.tokens, o.public_key),
        lambda j, o: micro.sdk_first_sight_rate(SECONDS, j.tokens, o.jwks),
        lambda j, o: micro.sdk_cached_rate(SECONDS, j.tokens[0], o.jwks),
        lambda j, o: micro.client_first_sight_rate(SECONDS, j.tokens, o.jwks),
        lambda j, o: micro.client_cached_rate(SECONDS, j.tokens[0], o.jwks),
    ],
    ids=["pyjwt", "sdk_first_sight", "sdk_cached", "client_first_sight", "client_cached"],
)
def test_a_failing_verification_raises(
    jwts: micro.Jwts,
    other_jwts: micro.Jwts,
    measure: Callable[[micro.Jwts, micro.Jwts], float],
) -> None:
    """Tokens checked against another key's JWKS must stop the benchmark, not be timed."""
    with pytest.raises((micro.VerificationFailedError, jwt.InvalidTokenError)):
        measure(jwts, other_jwts)


def test_a_wrong_audience_raises(jwts: micro.Jwts) -> None:
    with pytest.raises(micro.VerificationFailedError, match=r"audience|not meant"):
        micro.sdk_cached_rate(SECONDS, jwts.tokens[0], jwts.jwks, audience=micro.SENDER)


def test_cli_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert micro.main(["sdk_cached", "--seconds", str(SECONDS)]) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    result = json.loads(line)
    assert result["name"] == "sdk_cached"
    assert result["ops_per_s"] > 0


def test_cli_all_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["all", "--seconds", str(SECONDS), "--tokens", "4", "--rounds", "1"]
    assert micro.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"rs256_sign", "sdk_cached", "client_cached", "first_sight_ratio"}
    assert result["first_sight_ratio"]["sdk_ratio"] > 0


def test_cli_as_a_module() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.micro", "rs256_sign", "--seconds", str(SECONDS)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(done.stdout)
    assert result["name"] == "rs256_sign"
    assert result["ops_per_s"] > 0


def test_cli_refuses_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        micro.main(["rs256_sign", "--seconds", "0"])
