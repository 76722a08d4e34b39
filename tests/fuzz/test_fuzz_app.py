"""Fuzzing every route of the app in process: generated paths, queries, headers and bodies.

Requests go through ``httpx.ASGITransport`` to ``create_app(runtime)`` on SQLite and
PostgreSQL, with real keys, ids and tokens among the generated ones so that requests get
past authentication and validation into the services. For each answer: never a 500,
every rejection is the Clerk error envelope as exactly ``application/json`` (429 and 503
with ``Retry-After``), no secret is echoed in an error, and every success is JSON.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from fuzz_support import (
    ANY_TEXT,
    ASCII_TEXT,
    BUDGETS,
    HOSTILE_JSON,
    JSON_VALUES,
    assert_envelope,
    draw_examples,
    json_text,
    mutations,
)
from hypothesis import strategies as st

from gatepass_server.app import create_app
from gatepass_server.domain.keys import BASE62
from gatepass_server.domain.tokens import TokenFormat
from gatepass_server.services.auth import MachinePrincipal

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from gatepass_server.runtime import Runtime


@dataclass(frozen=True)
class World:
    """What the generated requests draw their real values from."""

    sk: str
    ak: str
    machine_ids: tuple[str, ...]
    token_ids: tuple[str, ...]
    opaque: str
    jwt: str

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret no error body may contain."""
        return (self.sk, self.ak, self.opaque, self.jwt)


@pytest.fixture
async def world(runtime: Runtime, sk: str) -> World:
    """Two machines (the caller scoped to the receiver), an opaque token and a JWT."""
    instance_id = (await runtime.instances.default()).id
    receiver = (await runtime.machines.create(instance_id, name="receiver")).machine
    caller = await runtime.machines.create(
        instance_id, name="caller", scoped_machine_ids=[receiver.id]
    )
    principal = MachinePrincipal(instance_id, caller.machine.id)
    minted = [
        await runtime.tokens.create(
            principal,
            token_format=token_format,
            seconds_until_expiration=None,
            claims={"team": "billing"},
            min_remaining_ttl_seconds=None,
        )
        for token_format in (TokenFormat.OPAQUE, TokenFormat.JWT)
    ]
    return World(
        sk=sk,
        ak=caller.secret_key,
        machine_ids=(caller.machine.id, receiver.id),
        token_ids=tuple(m.token.id for m in minted),
        opaque=minted[0].secret,
        jwt=minted[1].secret,
    )


@pytest.fixture
async def raw_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client without the shared 500 hook: this suite reports the failing request itself."""
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gatepass.test") as http:
        yield http


# -- the request generator ----------------------------------------------------------------

# Each path template with the methods it serves (CONTRACT.md §2 and §7).
_ROUTES: Final = {
    "/machines": ("GET", "POST"),
    "/machines/{m}": ("GET", "PATCH", "DELETE"),
    "/machines/{m}/secret_key": ("GET",),
    "/machines/{m}/secret_key/rotate": ("POST",),
    "/machines/{m}/scopes": ("POST",),
    "/machines/{m}/scopes/{m}": ("DELETE",),
    "/m2m_tokens": ("GET", "POST"),
    "/m2m_tokens/verify": ("POST",),
    "/m2m_tokens/revocations": ("GET",),
    "/m2m_tokens/{t}": ("GET",),
    "/m2m_tokens/{t}/revoke": ("POST",),
    "/jwks": ("GET",),
    "/m2m_tokens/jwks": ("GET",),
    "/healthz": ("GET",),
    "/readyz": ("GET",),
    "/metrics": ("GET",),
    "/{x}": ("GET",),
    "/v1/{x}": ("POST",),
}
_PATHS: Final = tuple(_ROUTES)
_SYSTEM: Final = ("/healthz", "/readyz", "/metrics")
_METHODS: Final = ("GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS")
_FIELDS: Final = (
    "name",
    "scoped_machines",
    "default_token_ttl",
    "previous_token_ttl",
    "to_machine_id",
    "token_format",
    "seconds_until_expiration",
    "claims",
    "min_remaining_ttl_seconds",
    "revocation_reason",
    "token",
    "secret",
    "id",
    "instance_id",
    "subject",
    "scopes",
)
# NOTE: no "wait": a long poll of the revocation feed would hold an example for seconds.
_QUERY_NAMES: Final = (
    "limit",
    "offset",
    "query",
    "order_by",
    "subject",
    "revoked",
    "expired",
    "after",
)
_NUMBERS: Final = st.one_of(
    st.integers(-5, 600),
    st.integers(),
    st.floats(),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, 3600.0, 1e308]),
)


@dataclass(frozen=True)
class _Values:
    """The strategies a request's parts draw from, around one world's real values."""

    machine_ids: st.SearchStrategy[str]
    token_ids: st.SearchStrategy[str]
    secrets: st.SearchStrategy[str]
    fields: st.SearchStrategy[Any]

    @classmethod
    def of(cls, world: World) -> _Values:
        machine_ids = st.one_of(
            st.sampled_from(world.machine_ids),
            st.sampled_from(world.machine_ids).flatmap(lambda m: mutations(m, BASE62)),
            ANY_TEXT.filter(bool),
        )
        token_ids = st.one_of(
            st.sampled_from(world.token_ids),
            st.sampled_from(world.token_ids).flatmap(lambda t: mutations(t, "0123456789abcdef")),
            ANY_TEXT.filter(bool),
        )
        secrets = st.one_of(
            st.sampled_from(world.secrets),
            st.sampled_from(world.secrets).flatmap(lambda s: mutations(s, BASE62 + ".-_")),
            ASCII_TEXT,
        )
        # NOTE: no secrets among field values: a key stored as a machine's name would be
        # a secret the test itself put in a response, which the hygiene plugin (rightly)
        # cannot tell from a leak. Secrets go only where they belong: headers and verify.
        fields = st.one_of(
            JSON_VALUES,
            _NUMBERS,
            machine_ids,
            token_ids,
            st.lists(machine_ids, max_size=4),
            st.sampled_from(["opaque", "jwt", "name", "-created_at", "+name", "created_at"]),
        )
        return cls(machine_ids, token_ids, secrets, fields)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _draw_path(draw: st.DrawFn, values: _Values, template: str) -> str:
    bare = template in _SYSTEM or template.startswith(("/{", "/v1"))
    path = ("" if bare else draw(st.sampled_from(["/v1", "/v1", ""]))) + template
    for marker, ids in (("{m}", values.machine_ids), ("{t}", values.token_ids), ("{x}", ANY_TEXT)):
        while marker in path:
            path = path.replace(marker, urllib.parse.quote(_utf8(draw(ids)), safe=""), 1)
    return path


def _draw_query(draw: st.DrawFn, values: _Values) -> str:
    names = st.one_of(st.sampled_from(_QUERY_NAMES), ASCII_TEXT.filter(lambda n: n != "wait"))
    texts = st.one_of(
        values.fields.map(lambda v: v if isinstance(v, str) else json_text(v)), ANY_TEXT
    )
    pairs = draw(st.lists(st.tuples(names, texts), max_size=4))
    return urllib.parse.urlencode([(_utf8(n), _utf8(v)) for n, v in pairs])


def _draw_credential(draw: st.DrawFn, values: _Values, world: World, right: str) -> bytes:
    pick = draw(st.integers(0, 9))
    if pick <= 5:
        return b"Bearer " + right.encode()
    if pick == 6:
        return b"Bearer " + _utf8(draw(values.secrets))
    if pick == 7:
        return b"bearer  " + draw(st.sampled_from(world.secrets)).encode()
    return draw(st.binary(max_size=60))


def _draw_body(draw: st.DrawFn, values: _Values) -> bytes | None:
    kind = draw(st.sampled_from(["form", "form", "form", "none", "json", "hostile", "bytes"]))
    if kind == "form":
        form = draw(st.dictionaries(st.sampled_from(_FIELDS), values.fields, max_size=4))
        for name in ("token", "secret"):
            if name in form and draw(st.booleans()):
                form[name] = draw(values.secrets)
        return json_text(form).encode()
    if kind == "json":
        return json_text(draw(JSON_VALUES)).encode()
    if kind == "hostile":
        return _utf8(draw(HOSTILE_JSON))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    return None


_CONTENT_TYPES: Final = (
    b"application/json",
    b"application/json; charset=utf-8",
    b"text/plain",
    b"\xff",
)
_OTHER_HEADERS: Final = (b"clerk-api-version", b"x-clerk-sdk", b"origin", b"x-forwarded-for")


@st.composite
def _requests(draw: st.DrawFn, world: World) -> dict[str, Any]:
    values = _Values.of(world)
    template = draw(st.sampled_from(_PATHS))
    method = draw(st.sampled_from(_ROUTES[template] * 8 + _METHODS))
    # The key this route wants comes first (Hypothesis favours first choices): most
    # requests authenticate, so that validation and the services are reached too.
    right = world.ak if template == "/m2m_tokens" and method == "POST" else world.sk
    if template.startswith("/m2m_tokens") and template != "/m2m_tokens/jwks":
        right = draw(st.sampled_from([right, world.ak]))
    headers = [
        (b"authorization", _draw_credential(draw, values, world, right))
        for _ in range(draw(st.sampled_from([1, 1, 1, 1, 1, 1, 0, 2])))
    ]
    body = _draw_body(draw, values)
    if body is not None or draw(st.booleans()):
        headers.append((b"content-type", draw(st.sampled_from(_CONTENT_TYPES))))
    other = st.tuples(st.sampled_from(_OTHER_HEADERS), st.binary(max_size=30))
    headers += draw(st.lists(other, max_size=2))
    return {
        "method": method,
        "path": _draw_path(draw, values, template),
        "query": _draw_query(draw, values),
        "headers": headers,
        "body": body,
    }


# -- the check ------------------------------------------------------------------------------


async def _send(client: httpx.AsyncClient, case: dict[str, Any]) -> httpx.Response | None:
    """Send one generated request; ``None`` if httpx itself refuses to build it."""
    try:
        request = client.build_request(
            case["method"],
            httpx.URL(
                "http://gatepass.test",
                raw_path=(case["path"] + "?" + case["query"]).encode("ascii"),
            ),
            headers=case["headers"],
            content=case["body"],
        )
    except (httpx.InvalidURL, ValueError, TypeError):
        return None
    return await client.send(request)


def check_response(case: dict[str, Any], response: httpx.Response, world: World) -> None:
    """Never a 500; rejections in the envelope, without secrets; successes are JSON."""
    status = response.status_code
    assert status < 500 or status == 503, (status, response.text)
    if case["method"] == "HEAD":
        return
    if status >= 400:
        error = assert_envelope(response)
        if status == 405:
            assert response.headers.get("allow"), response.headers
        for secret in world.secrets:
            assert secret not in response.text, (error, "echoed a secret")
        return
    if response.request.url.path == "/metrics":
        return
    assert response.headers.get("content-type") == "application/json", response.headers
    json.loads(response.content)


async def run_app_fuzz(
    client: httpx.AsyncClient, world: World, *, examples: int, budget: int
) -> dict[int, int]:
    """Send the generated requests one by one; return how many got each status."""
    cases = draw_examples(_requests(world), examples=examples, budget=budget)
    statuses: dict[int, int] = {}
    for case in cases:
        response = await _send(client, case)
        if response is None:
            continue
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        try:
            check_response(case, response, world)
        except AssertionError as exc:
            shown = {**case, "body": (case["body"] or b"")[:300]}
            msg = f"{shown!r}\n-> {response.status_code} {response.headers} {response.text[:500]}"
            raise AssertionError(msg) from exc
    return statuses


@pytest.mark.parametrize("budget", BUDGETS)
async def test_fuzz_every_route_answers_4xx_in_the_envelope_never_500(
    raw_client: httpx.AsyncClient, world: World, budget: int
) -> None:
    """Generated requests across every route: the app's answers keep the contract."""
    statuses = await run_app_fuzz(raw_client, world, examples=300, budget=budget)
    # NOTE: the generator must reach past authentication and validation, or it tests nothing.
    assert any(200 <= s < 300 for s in statuses), statuses
    assert sum(statuses.values()) >= 100 * budget, statuses
