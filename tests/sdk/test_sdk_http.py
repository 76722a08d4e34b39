"""The transport layer of both clients: keys per route, URLs, retries, and odd answers.

The real server cannot produce a 503, a 429, a refused connection, a timeout or a
malformed answer on demand, so these tests put ``httpx.MockTransport`` in its place
(behaviour against the real server is in ``test_sdk_client_*.py``). Sleeps are recorded,
never slept.
"""

from __future__ import annotations

import email.utils
import inspect
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx
import pytest
from test_sdk_models import (
    DELETED_MACHINE_JSON,
    DELETED_SCOPE_JSON,
    MACHINE_CREATED_JSON,
    MACHINE_JSON,
    MACHINE_LIST_JSON,
    REVOCATION_PAGE_JSON,
    SCOPE_JSON,
    SECRET_KEY_JSON,
    TOKEN_CREATED_JSON,
    TOKEN_JSON,
    TOKEN_LIST_JSON,
)

import gatepass
import gatepass._http
from gatepass import (
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AsyncGatepass,
    AuthenticationError,
    ConfigurationError,
    Gatepass,
    MachineList,
    NotFoundError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TokenVerificationError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

SK: Final = "sk_test_" + "S" * 38
AK: Final = "ak_" + "A" * 40
URL: Final = "http://gatepass.test:8080"
MID: Final = "mch_" + "a" * 27
TID: Final = "mt_" + "d" * 32

Answer = httpx.Response | Exception


def answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    """A JSON answer."""
    return httpx.Response(status, json=body, headers=headers)


def failure(status: int, code: str, **headers: str) -> httpx.Response:
    """An error answer in Clerk's envelope."""
    body = {
        "errors": [{"message": code, "long_message": f"long {code}", "code": code, "meta": {}}],
        "clerk_trace_id": "t" * 32,
    }
    return httpx.Response(status, json=body, headers=headers)


@dataclass
class Script:
    """A fake server: gives its answers in order, repeating the last; records requests."""

    answers: list[Answer]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """The next scripted answer, or its exception raised."""
        self.requests.append(request)
        item = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(item, Exception):
            raise item
        return item


@dataclass
class Routes:
    """A fake server answering each route with its sample body; records requests."""

    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """The sample body of the route requested."""
        self.requests.append(request)
        path, method = request.url.path, request.method
        path = path[path.index("/v1/") :]  # under any prefix of api_url
        if path == "/v1/m2m_tokens" and method == "POST":
            return answer(201, TOKEN_CREATED_JSON)
        body = _BODIES.get((method, path.replace(MID, "{m}").replace(TID, "{t}")))
        assert body is not None, (method, path)
        return answer(200, body)


_BODIES: Final[dict[tuple[str, str], object]] = {
    ("GET", "/v1/machines"): MACHINE_LIST_JSON,
    ("POST", "/v1/machines"): MACHINE_CREATED_JSON,
    ("GET", "/v1/machines/{m}"): MACHINE_JSON,
    ("PATCH", "/v1/machines/{m}"): MACHINE_JSON,
    ("DELETE", "/v1/machines/{m}"): DELETED_MACHINE_JSON,
    ("GET", "/v1/machines/{m}/secret_key"): SECRET_KEY_JSON,
    ("POST", "/v1/machines/{m}/secret_key/rotate"): SECRET_KEY_JSON,
    ("POST", "/v1/machines/{m}/scopes"): SCOPE_JSON,
    ("DELETE", "/v1/machines/{m}/scopes/{m}"): DELETED_SCOPE_JSON,
    ("GET", "/v1/m2m_tokens"): TOKEN_LIST_JSON,
    ("GET", "/v1/m2m_tokens/{t}"): TOKEN_JSON,
    ("POST", "/v1/m2m_tokens/{t}/revoke"): TOKEN_JSON,
    ("POST", "/v1/m2m_tokens/verify"): TOKEN_JSON,
    ("GET", "/v1/m2m_tokens/revocations"): REVOCATION_PAGE_JSON,
    ("GET", "/v1/m2m_tokens/jwks"): {"keys": []},
}

# Every public request method: (name, call, route key, idempotent).
CALLS: Final[list[tuple[str, Callable[[Any], Any], str, bool]]] = [
    ("machines.list", lambda c: c.machines.list(), "sk", True),
    ("machines.create", lambda c: c.machines.create(name="n"), "sk", False),
    ("machines.get", lambda c: c.machines.get(MID), "sk", True),
    ("machines.update", lambda c: c.machines.update(MID, name="n"), "sk", True),
    ("machines.delete", lambda c: c.machines.delete(MID), "sk", False),
    ("machines.get_secret_key", lambda c: c.machines.get_secret_key(MID), "sk", True),
    (
        "machines.rotate_secret_key",
        lambda c: c.machines.rotate_secret_key(MID, previous_token_ttl=0),
        "sk",
        False,
    ),
    (
        "machines.create_scope",
        lambda c: c.machines.create_scope(MID, to_machine_id=MID),
        "sk",
        False,
    ),
    (
        "machines.delete_scope",
        lambda c: c.machines.delete_scope(MID, to_machine_id=MID),
        "sk",
        False,
    ),
    ("m2m_tokens.create", lambda c: c.m2m_tokens.create(), "ak", False),
    ("m2m_tokens.list", lambda c: c.m2m_tokens.list(subject=MID), "sk first", True),
    ("m2m_tokens.get", lambda c: c.m2m_tokens.get(TID), "sk first", True),
    ("m2m_tokens.revoke", lambda c: c.m2m_tokens.revoke(TID), "sk first", True),
    ("m2m_tokens.verify", lambda c: c.m2m_tokens.verify("mt_x"), "ak first", True),
    ("m2m_tokens.revocations", lambda c: c.m2m_tokens.revocations(), "ak first", True),
    ("m2m_tokens.jwks", lambda c: c.m2m_tokens.jwks(), "ak first", True),
]
IDEMPOTENT: Final = [pytest.param(c[1], id=c[0]) for c in CALLS if c[3]]
NOT_IDEMPOTENT: Final = [pytest.param(c[1], id=c[0]) for c in CALLS if not c[3]]


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which client is under test."""
    return str(request.param)


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the clients waited, recorded instead of slept (in every test here)."""
    recorded: list[float] = []

    async def asleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr("time.sleep", recorded.append)
    monkeypatch.setattr(anyio, "sleep", asleep)
    return recorded


@pytest.fixture
def jitter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """The jitter ranges drawn from; each draw returns its upper bound."""
    ranges: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        ranges.append((low, high))
        return high

    monkeypatch.setattr(gatepass._http.random, "uniform", uniform)
    return ranges


async def run(
    kind: str,
    handler: Callable[[httpx.Request], httpx.Response],
    call: Callable[[Any], Any],
    **options: Any,
) -> Any:
    """``call(client)`` with a client of ``kind`` on a mock transport, awaited if async."""
    settings = {"secret_key": SK, "machine_secret_key": AK, "api_url": URL, **options}
    transport = httpx.MockTransport(handler)
    if kind == "sync":
        with Gatepass(**settings, transport=transport) as client:
            return call(client)
    async with AsyncGatepass(**settings, transport=transport) as client:
        result = call(client)
        return await result if inspect.isawaitable(result) else result


# -- retries --------------------------------------------------------------------------------


async def test_get_is_retried_on_503_honouring_retry_after(kind: str, sleeps: list[float]) -> None:
    """A 503 with ``Retry-After: 1`` is retried after exactly one second, twice by default."""
    script = Script(
        [
            failure(503, "service_unavailable", **{"Retry-After": "1"}),
            failure(503, "service_unavailable", **{"Retry-After": "1"}),
            answer(200, MACHINE_LIST_JSON),
        ]
    )
    page = await run(kind, script, lambda c: c.machines.list())
    assert isinstance(page, MachineList)
    assert page.total_count == 7
    assert len(script.requests) == 3
    assert sleeps == [1.0, 1.0]


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_backoff_without_retry_after_is_full_jitter(
    kind: str, status: int, sleeps: list[float], jitter: list[tuple[float, float]]
) -> None:
    """Without ``Retry-After`` each wait is drawn from 0 to 0.25 s doubling, capped at 8 s."""
    script = Script([failure(status, "bad_gateway")])
    with pytest.raises(ServerError) as raised:
        await run(kind, script, lambda c: c.machines.get(MID), max_retries=7)
    assert raised.value.status_code == status
    assert len(script.requests) == 8
    assert jitter == [(0, 0.25), (0, 0.5), (0, 1.0), (0, 2.0), (0, 4.0), (0, 8.0), (0, 8.0)]
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


@pytest.mark.parametrize("max_retries", [0, 1, 2, 4])
async def test_retries_are_bounded_by_max_retries(
    kind: str, max_retries: int, sleeps: list[float]
) -> None:
    """``max_retries`` retries and not one more; the last error is raised with its details."""
    script = Script([failure(503, "service_unavailable", **{"Retry-After": "2"})])
    with pytest.raises(ServiceUnavailableError) as raised:
        await run(kind, script, lambda c: c.machines.list(), max_retries=max_retries)
    assert len(script.requests) == max_retries + 1
    assert sleeps == [2.0] * max_retries
    assert (raised.value.status_code, raised.value.code) == (503, "service_unavailable")
    assert raised.value.retry_after == 2.0
    assert raised.value.trace_id == "t" * 32


def test_negative_max_retries_is_refused() -> None:
    """A negative retry count is a configuration error."""
    with pytest.raises(ConfigurationError, match="max_retries"):
        Gatepass(secret_key=SK, max_retries=-1)
    with pytest.raises(ConfigurationError, match="max_retries"):
        AsyncGatepass(secret_key=SK, max_retries=-1)


@pytest.mark.parametrize("call", NOT_IDEMPOTENT)
@pytest.mark.parametrize("status", [502, 503, 504])
async def test_non_idempotent_call_is_not_retried_on_5xx(
    kind: str, call: Callable[[Any], Any], status: int, sleeps: list[float]
) -> None:
    """A 5xx may follow a commit: creating, rotating, deleting are sent once."""
    script = Script([failure(status, "x", **{"Retry-After": "1"})])
    with pytest.raises(ServerError) as raised:
        await run(kind, script, call)
    assert raised.value.status_code == status
    assert raised.value.retry_after == 1.0
    assert len(script.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize("call", IDEMPOTENT)
async def test_idempotent_call_is_retried_on_503(
    kind: str, call: Callable[[Any], Any], sleeps: list[float]
) -> None:
    """Reads, updates, revoking and verifying are retried after a 503 and then succeed."""
    routes = Routes()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return failure(503, "service_unavailable", **{"Retry-After": "1"})
        return routes(request)

    assert await run(kind, handler, call) is not None
    assert calls == 2
    assert sleeps == [1.0]


async def test_500_is_not_retried(kind: str, sleeps: list[float]) -> None:
    """Only 502, 503 and 504 are retried: a 500 is a bug, sending again will not help."""
    script = Script([failure(500, "internal_error")])
    with pytest.raises(ServerError) as raised:
        await run(kind, script, lambda c: c.machines.list())
    assert type(raised.value) is ServerError
    assert len(script.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize("call", [pytest.param(c[1], id=c[0]) for c in CALLS])
async def test_429_is_retried_for_any_call(
    kind: str, call: Callable[[Any], Any], sleeps: list[float]
) -> None:
    """A 429 was not processed, so even a create is sent again after ``Retry-After``."""
    routes = Routes()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return failure(429, "too_many_requests", **{"Retry-After": "3"})
        return routes(request)

    assert await run(kind, handler, call) is not None
    assert calls == 2
    assert sleeps == [3.0]


async def test_429_exhausted_raises_rate_limit_error(kind: str, sleeps: list[float]) -> None:
    """After the last retry the 429 surfaces with its ``retry_after``."""
    script = Script([failure(429, "too_many_requests", **{"Retry-After": "4"})])
    with pytest.raises(RateLimitError) as raised:
        await run(kind, script, lambda c: c.machines.create(name="n"))
    assert (raised.value.status_code, raised.value.retry_after) == (429, 4.0)
    assert len(script.requests) == 3
    assert sleeps == [4.0, 4.0]


@pytest.mark.parametrize(("offset", "delay"), [(12, 12.0), (-30, 0.0), (30, 30.0)])
async def test_retry_after_as_http_date(
    kind: str, monkeypatch: pytest.MonkeyPatch, sleeps: list[float], offset: int, delay: float
) -> None:
    """An HTTP date is read as seconds from now (RFC 9110 §10.2.3); a past one as zero."""
    now = 1_754_938_436.0
    monkeypatch.setattr(gatepass._http.time, "time", lambda: now)
    when = email.utils.formatdate(now + offset, usegmt=True)
    script = Script(
        [
            failure(429, "too_many_requests", **{"Retry-After": when}),
            answer(201, TOKEN_CREATED_JSON),
        ]
    )
    token = await run(kind, script, lambda c: c.m2m_tokens.create())
    assert token.id == TOKEN_JSON["id"]
    assert sleeps == [delay]


@pytest.mark.parametrize("retry_after", ["31", "3600"])
async def test_retry_after_above_the_cap_is_not_waited_for(
    kind: str, retry_after: str, sleeps: list[float]
) -> None:
    """Asked to wait more than 30 s, the client raises at once with ``retry_after`` set."""
    script = Script([failure(429, "too_many_requests", **{"Retry-After": retry_after})])
    with pytest.raises(RateLimitError) as raised:
        await run(kind, script, lambda c: c.machines.list())
    assert raised.value.retry_after == float(retry_after)
    assert len(script.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize("retry_after", ["soon", "", "-1", "1.5"])
async def test_unreadable_retry_after_falls_back_to_backoff(
    kind: str, retry_after: str, sleeps: list[float], jitter: list[tuple[float, float]]
) -> None:
    """A ``Retry-After`` that is neither whole seconds nor a date is ignored."""
    script = Script([failure(503, "x", **{"Retry-After": retry_after})])
    with pytest.raises(ServiceUnavailableError) as raised:
        await run(kind, script, lambda c: c.machines.list(), max_retries=1)
    assert raised.value.retry_after is None
    assert sleeps == [0.25]
    assert jitter == [(0, 0.25)]


# -- failures without an answer -------------------------------------------------------------


@pytest.mark.parametrize("call", [pytest.param(c[1], id=c[0]) for c in CALLS])
async def test_connect_error_is_retried_for_any_call(
    kind: str, call: Callable[[Any], Any], sleeps: list[float], jitter: list[tuple[float, float]]
) -> None:
    """A request that never left is safe to send again, a create included."""
    routes = Routes()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise httpx.ConnectError("connection refused")
        return routes(request)

    assert await run(kind, handler, call) is not None
    assert calls == 3
    assert sleeps == [0.25, 0.5]
    assert len(jitter) == 2


@pytest.mark.parametrize(
    ("error", "raised_type"),
    [
        (httpx.ConnectError("refused"), APIConnectionError),
        (httpx.ConnectTimeout("slow"), APITimeoutError),
        (httpx.PoolTimeout("busy"), APITimeoutError),
    ],
)
async def test_unsent_request_exhausts_retries(
    kind: str, error: Exception, raised_type: type[Exception], sleeps: list[float]
) -> None:
    """No answer after every retry is an APIConnectionError (APITimeoutError when slow)."""
    script = Script([error])
    with pytest.raises(raised_type) as raised:
        await run(kind, script, lambda c: c.machines.create(name="n"))
    assert type(raised.value) is raised_type
    assert str(error) in str(raised.value)
    assert len(script.requests) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("error", "raised_type"),
    [
        (httpx.ReadTimeout("slow"), APITimeoutError),
        (httpx.WriteTimeout("slow"), APITimeoutError),
        (httpx.ReadError("reset"), APIConnectionError),
        (httpx.RemoteProtocolError("closed"), APIConnectionError),
    ],
)
async def test_lost_answer_is_retried_only_for_idempotent_calls(
    kind: str, error: Exception, raised_type: type[Exception], sleeps: list[float]
) -> None:
    """After a read timeout the request may have been done: a GET is retried, a POST not."""
    read = Script([error])
    with pytest.raises(raised_type) as raised:
        await run(kind, read, lambda c: c.machines.get(MID))
    assert type(raised.value) is raised_type
    assert len(read.requests) == 3

    sleeps.clear()
    create = Script([error])
    with pytest.raises(raised_type):
        await run(kind, create, lambda c: c.machines.create(name="n"))
    assert len(create.requests) == 1
    assert sleeps == []

    recovered = Script([error, answer(200, MACHINE_JSON)])
    assert (await run(kind, recovered, lambda c: c.machines.get(MID))).id == MID


# -- malformed answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(lambda: httpx.Response(200, text="<html>ok</html>"), id="text"),
        pytest.param(
            lambda: httpx.Response(200, content=b"{", headers={"content-type": "application/json"}),
            id="broken-json",
        ),
        pytest.param(lambda: httpx.Response(200), id="empty"),
        pytest.param(
            lambda: httpx.Response(200, content=b"{}", headers={"content-type": "text/plain"}),
            id="json-as-text",
        ),
    ],
)
async def test_non_json_success_is_a_response_error(
    kind: str, response: Callable[[], httpx.Response], sleeps: list[float]
) -> None:
    """A success that is not JSON is an APIResponseError carrying the status, not retried."""
    script = Script([response()])
    with pytest.raises(APIResponseError) as raised:
        await run(kind, script, lambda c: c.machines.list())
    assert raised.value.status_code == 200
    assert "expected a JSON answer" in str(raised.value)
    assert len(script.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("call", "response"),
    [
        (lambda c: c.machines.list(), lambda: answer(200, {"data": "none", "total_count": 0})),
        (lambda c: c.machines.get(MID), lambda: answer(200, [MACHINE_JSON])),
        (lambda c: c.machines.create(name="n"), lambda: answer(200, {**MACHINE_JSON, "id": 5})),
        (lambda c: c.m2m_tokens.create(), lambda: answer(201, {"token": "mt_x"})),
        (lambda c: c.m2m_tokens.verify("mt_x"), lambda: answer(200, None)),
        (lambda c: c.m2m_tokens.jwks(), lambda: answer(200, [{"kty": "RSA"}])),
        (lambda c: c.m2m_tokens.revocations(), lambda: answer(200, {"data": [], "cursor": 1})),
    ],
)
async def test_json_of_the_wrong_shape_is_a_response_error(
    kind: str, call: Callable[[Any], Any], response: Callable[[], httpx.Response]
) -> None:
    """Valid JSON that is not the promised resource is an APIResponseError, never KeyError."""
    with pytest.raises(APIResponseError):
        await run(kind, Script([response()]), call)


@pytest.mark.parametrize(
    ("call", "response"),
    [
        (lambda c: c.machines.list(), lambda: answer(201, MACHINE_LIST_JSON)),
        (lambda c: c.machines.create(name="n"), lambda: answer(201, MACHINE_CREATED_JSON)),
        (lambda c: c.m2m_tokens.create(), lambda: answer(200, TOKEN_CREATED_JSON)),
        (lambda c: c.machines.delete(MID), lambda: httpx.Response(204)),
    ],
)
async def test_unexpected_success_status_is_a_response_error(
    kind: str, call: Callable[[Any], Any], response: Callable[[], httpx.Response]
) -> None:
    """A 2xx other than the route's (CONTRACT.md §2: 200, or 201 for a token) is refused."""
    sent = response()
    with pytest.raises(APIResponseError) as raised:
        await run(kind, Script([sent]), call)
    assert raised.value.status_code == sent.status_code


async def test_error_without_an_envelope_still_maps_by_status(kind: str) -> None:
    """A proxy's HTML error page still raises the status's class, with generic details."""
    page = httpx.Response(502, text="<html>Bad Gateway</html>")
    with pytest.raises(ServerError) as raised:
        await run(kind, Script([page]), lambda c: c.machines.create(name="n"))
    error = raised.value
    assert (error.status_code, error.code, error.message) == (502, "http_502", "HTTP 502")
    assert (error.long_message, error.param_name, error.trace_id, error.errors) == (
        None,
        None,
        None,
        (),
    )
    with pytest.raises(NotFoundError) as missing:
        await run(kind, Script([httpx.Response(404, text="nope")]), lambda c: c.machines.get(MID))
    assert missing.value.code == "http_404"


async def test_verify_maps_only_404_to_token_verification_error(kind: str) -> None:
    """A 404 is the token's "no"; a 401 is about the client's own key and stays an APIError."""
    with pytest.raises(TokenVerificationError) as invalid:
        await run(kind, Script([failure(404, "token_invalid")]), lambda c: c.m2m_tokens.verify("x"))
    assert invalid.value.trace_id == "t" * 32
    with pytest.raises(AuthenticationError):
        await run(
            kind,
            Script([failure(401, "clerk_key_invalid")]),
            lambda c: c.m2m_tokens.verify("x"),
        )
    with pytest.raises(NotFoundError):  # elsewhere a 404 is just a 404
        await run(
            kind, Script([failure(404, "resource_not_found")]), lambda c: c.m2m_tokens.get(TID)
        )


# -- what is sent ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "call", "route_key", "idempotent"), CALLS, ids=[c[0] for c in CALLS]
)
async def test_each_route_is_sent_the_key_it_needs(
    kind: str, name: str, call: Callable[[Any], Any], route_key: str, idempotent: bool
) -> None:
    """Machines take sk; minting ak; verifying, the feed and JWKS prefer ak; reading sk."""
    del name, idempotent
    # The key sent when the client holds (both keys, only sk, only ak); None: refused unsent.
    with_both, with_sk, with_ak = {
        "sk": (SK, SK, None),
        "ak": (AK, None, AK),
        "sk first": (SK, SK, AK),
        "ak first": (AK, SK, AK),
    }[route_key]
    for keys, used in (
        ({"secret_key": SK, "machine_secret_key": AK}, with_both),
        ({"secret_key": SK, "machine_secret_key": None}, with_sk),
        ({"secret_key": None, "machine_secret_key": AK}, with_ak),
    ):
        routes = Routes()
        if used is None:
            with pytest.raises(ConfigurationError, match="this call needs"):
                await run(kind, routes, call, **keys)
            assert routes.requests == []
        else:
            await run(kind, routes, call, **keys)
            assert [r.headers["authorization"] for r in routes.requests] == [f"Bearer {used}"]


@pytest.mark.parametrize(
    ("call", "raw_path"),
    [
        (lambda c: c.machines.get("../x"), b"/v1/machines/%2E%2E%2Fx"),
        (lambda c: c.machines.get("a/b?c=1#d"), b"/v1/machines/a%2Fb%3Fc%3D1%23d"),
        (lambda c: c.machines.get(".."), b"/v1/machines/%2E%2E"),
        (lambda c: c.machines.delete("."), b"/v1/machines/%2E"),
        (lambda c: c.machines.update("%2e%2e", name="n"), b"/v1/machines/%252e%252e"),
        (
            lambda c: c.machines.delete_scope(MID, to_machine_id=".."),
            f"/v1/machines/{MID}/scopes/%2E%2E".encode(),
        ),
        (
            lambda c: c.machines.rotate_secret_key("../../m2m_tokens", previous_token_ttl=0),
            b"/v1/machines/%2E%2E%2F%2E%2E%2Fm2m_tokens/secret_key/rotate",
        ),
        (lambda c: c.m2m_tokens.get("../verify"), b"/v1/m2m_tokens/%2E%2E%2Fverify"),
        (lambda c: c.m2m_tokens.revoke("x y"), b"/v1/m2m_tokens/x%20y/revoke"),
    ],
)
async def test_path_ids_stay_inside_their_segment(
    kind: str, call: Callable[[Any], Any], raw_path: bytes
) -> None:
    """An id is percent-quoted, dots included, so no id can pick another route."""
    script = Script([failure(404, "resource_not_found")])
    with pytest.raises(NotFoundError):
        await run(kind, script, call)
    assert [r.url.raw_path for r in script.requests] == [raw_path]


async def test_default_headers_and_bodies(kind: str) -> None:
    """Every request names the SDK and asks for JSON; a body is JSON, a GET has none."""
    routes = Routes()
    await run(kind, routes, lambda c: c.machines.list())
    await run(kind, routes, lambda c: c.machines.create(name="n", default_token_ttl=5))
    get, post = routes.requests
    for request in (get, post):
        assert request.headers["user-agent"] == f"gatepass-python/{gatepass.__version__}"
        assert request.headers["accept"] == "application/json"
    assert get.content == b""
    assert "content-type" not in get.headers
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.content) == {"name": "n", "default_token_ttl": 5}


@pytest.mark.parametrize(
    ("api_url", "expected"),
    [
        ("http://gatepass.test:8080", "http://gatepass.test:8080/v1/machines"),
        ("http://gatepass.test:8080/", "http://gatepass.test:8080/v1/machines"),
        ("http://gatepass.test:8080/v1", "http://gatepass.test:8080/v1/machines"),
        ("http://gatepass.test:8080/v1/", "http://gatepass.test:8080/v1/machines"),
        ("https://auth.example/gatepass/v1/", "https://auth.example/gatepass/v1/machines"),
    ],
)
async def test_api_url_with_or_without_v1(kind: str, api_url: str, expected: str) -> None:
    """Clerk-style URLs end in ``/v1`` and JS-style ones do not: both reach the same routes."""
    routes = Routes()
    await run(kind, routes, lambda c: c.machines.list(), api_url=api_url)
    assert str(routes.requests[0].url).split("?")[0] == expected


async def test_timeouts_and_long_poll(kind: str) -> None:
    """``timeout`` applies to every phase; a long poll's ``wait`` is added to the read."""
    routes = Routes()
    await run(kind, routes, lambda c: c.machines.list())
    await run(kind, routes, lambda c: c.m2m_tokens.revocations(wait=5), timeout=3.0)
    default, poll = (r.extensions["timeout"] for r in routes.requests)
    assert default == {"connect": 10.0, "read": 10.0, "write": 10.0, "pool": 10.0}
    assert poll == {"connect": 3.0, "read": 8.0, "write": 3.0, "pool": 3.0}
    assert routes.requests[1].url.params["wait"] == "5"
