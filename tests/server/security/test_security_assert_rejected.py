"""The shared refusal check itself: it must fail on each fault it promises to catch.

``assert_rejected`` is what every attack test leans on; a check that cannot fail would make
the whole suite vacuous. Built on hand-made responses, no server involved.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gatepass_server.domain.keys import SecretKind, generate_secret
from helpers import assert_rejected

TRACE = "0" * 32
KEY = generate_secret(SecretKind.INSTANCE_TEST)
TOKEN = generate_secret(SecretKind.TOKEN)


def _response(
    status: int,
    *,
    message: str = "Nope",
    headers: dict[str, str] | None = None,
    request_headers: dict[str, str] | None = None,
    request_body: Any = None,
) -> httpx.Response:
    body = {
        "errors": [{"message": message, "long_message": message, "code": "x", "meta": {}}],
        "clerk_trace_id": TRACE,
    }
    request = httpx.Request(
        "POST",
        "http://gatepass.test/v1/m2m_tokens/verify",
        headers=request_headers or {},
        json=request_body,
    )
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-request-id": TRACE, **(headers or {})},
        request=request,
    )


async def test_a_clean_refusal_passes() -> None:
    """The reference response passes, so the failures below are each one fault's doing."""
    response = _response(
        404, request_headers={"Authorization": f"Bearer {KEY}"}, request_body={"token": TOKEN}
    )
    error = await assert_rejected(response, status=404, code="x")
    assert error["code"] == "x"


async def test_an_echoed_authorization_credential_fails() -> None:
    """The request's own key in the body fails the check without being named by the test."""
    response = _response(401, message=f"bad key {KEY}", request_headers={"Authorization": KEY})
    with pytest.raises(AssertionError, match="echoed a secret"):
        await assert_rejected(response, status=401, code="x")


@pytest.mark.parametrize(
    "secret",
    [TOKEN, generate_secret(SecretKind.MACHINE), "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"],
)
async def test_an_echoed_body_secret_fails(secret: str) -> None:
    """A key, an opaque token or a JWT sent in the body and echoed back fails the check."""
    response = _response(404, message=f"no {secret}", request_body={"nested": [{"t": secret}]})
    with pytest.raises(AssertionError, match="echoed a secret"):
        await assert_rejected(response, status=404, code="x")


@pytest.mark.parametrize(
    ("status", "header"), [(405, "Allow"), (429, "Retry-After"), (503, "Retry-After")]
)
async def test_a_status_without_its_required_header_fails(status: int, header: str) -> None:
    """405 needs ``Allow``, 429 and 503 need ``Retry-After``."""
    with pytest.raises(AssertionError, match=header.lower()):
        await assert_rejected(_response(status), status=status, code="x")
    await assert_rejected(_response(status, headers={header: "1"}), status=status, code="x")


async def test_a_www_authenticate_challenge_fails() -> None:
    """Gatepass, as Clerk, sends no ``WWW-Authenticate``: one appearing anywhere is a change."""
    response = _response(401, headers={"WWW-Authenticate": 'Bearer realm="x"'})
    with pytest.raises(AssertionError):
        await assert_rejected(response, status=401, code="x")
