"""``client.machines`` of ``Gatepass`` and ``AsyncGatepass`` against the real server.

Each scenario runs once per client: ``Gatepass`` over a TCP socket to the live server,
``AsyncGatepass`` in process through ``httpx.ASGITransport``, on SQLite and PostgreSQL.
The :class:`Api` facade lets one ``async`` test body drive either client; a pass-through
:class:`Wire` records what each client sent and got, so a test can compare an exception
with the very answer it came from. ``test_sdk_client_tokens.py`` imports both, and the
``served``/``connect``/``api`` fixtures (defined under ``*_fixture`` names so that importing
them does not shadow a test's parameters).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import httpx
import pytest

import gatepass._client
from gatepass import (
    AsyncGatepass,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    DeletedMachine,
    DeletedMachineScope,
    Gatepass,
    MachineScope,
    MachineSecretKey,
    NotFoundError,
    ScopedMachine,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from gatepass import APIError
    from gatepass_server.config import Settings
    from gatepass_server.domain.clock import FixedClock

START_MS: Final = 1_754_938_436_732
"""The injected clock's start (``tests/conftest.py``): timestamps are exact."""
UNKNOWN_MACHINE_ID: Final = "mch_" + "0" * 27
"""Well-formed, never issued."""
SQLITE_ONLY: Final = pytest.mark.parametrize("backend", ["sqlite"])
"""For checks where the storage backend makes no difference: one is enough."""
ASYNC_ONLY: Final = pytest.mark.parametrize("served", ["async"], indirect=True)
"""For server behaviour seen through the SDK: the in-process client is enough (and cheap)."""


@dataclass
class Wire:
    """Every request a client sent and the answer it got, in order."""

    exchanges: list[tuple[httpx.Request, httpx.Response]] = field(default_factory=list)

    @property
    def requests(self) -> list[httpx.Request]:
        """The requests sent."""
        return [request for request, _ in self.exchanges]

    @property
    def last(self) -> httpx.Response:
        """The last answer."""
        return self.exchanges[-1][1]

    @property
    def sent(self) -> Any:
        """The JSON body of the last request."""
        return json.loads(self.exchanges[-1][0].content)

    def reset(self) -> None:
        """Forget what was recorded so far."""
        self.exchanges.clear()


class _SyncSpy(httpx.BaseTransport):
    """Passes requests to the real transport and records each exchange."""

    def __init__(self, inner: httpx.BaseTransport, wire: Wire) -> None:
        self._inner = inner
        self._wire = wire

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        response.read()
        self._wire.exchanges.append((request, response))
        return response

    def close(self) -> None:
        self._inner.close()


class _AsyncSpy(httpx.AsyncBaseTransport):
    """The async twin of :class:`_SyncSpy`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, wire: Wire) -> None:
        self._inner = inner
        self._wire = wire

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        await response.aread()
        self._wire.exchanges.append((request, response))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Awaited:
    """A resource whose every method is awaited; an iterator comes back as a list."""

    def __init__(self, resource: object) -> None:
        self._resource = resource

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._resource, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                return await result
            if isinstance(result, AsyncIterator):
                return [item async for item in result]
            if isinstance(result, Iterator):
                return list(result)
            return result

        return call


class Api:
    """One client under test, sync or async, driven the same way: ``await api.machines.get(…)``.

    ``client`` is the real ``Gatepass`` or ``AsyncGatepass``; ``wire`` what it exchanged.
    """

    def __init__(self, client: Gatepass | AsyncGatepass, wire: Wire) -> None:
        self.client = client
        self.wire = wire
        self.machines = _Awaited(client.machines)
        self.m2m_tokens = _Awaited(client.m2m_tokens)


class Connect(Protocol):
    """Builds a client of the kind under test with the given keys."""

    def __call__(
        self, *, secret_key: str | None = None, machine_secret_key: str | None = None
    ) -> Api:
        """A new client; closed when the test ends."""


@pytest.fixture(name="served", params=["sync", "async"])
def served_fixture(request: pytest.FixtureRequest, settings: Settings) -> tuple[str, Any]:
    """The client kind under test and its server: the live socket or the in-process app."""
    del settings  # both servers use it; named here so the backend parameter reaches them
    kind = str(request.param)
    # NOTE: only the server the kind needs is started: both on one database would be two
    # nodes, and twice the cost.
    return kind, request.getfixturevalue("live_server" if kind == "sync" else "app")


@pytest.fixture(name="connect")
async def connect_fixture(served: tuple[str, Any]) -> AsyncIterator[Connect]:
    """A factory of clients of the kind under test, all closed at the end."""
    kind, server = served
    sync_clients: list[Gatepass] = []
    async_clients: list[AsyncGatepass] = []

    def make(*, secret_key: str | None = None, machine_secret_key: str | None = None) -> Api:
        wire = Wire()
        client: Gatepass | AsyncGatepass
        if kind == "sync":
            client = Gatepass(
                secret_key=secret_key,
                machine_secret_key=machine_secret_key,
                api_url=server.url,
                transport=_SyncSpy(httpx.HTTPTransport(), wire),
            )
            sync_clients.append(client)
        else:
            app: ASGIApp = server
            client = AsyncGatepass(
                secret_key=secret_key,
                machine_secret_key=machine_secret_key,
                api_url="http://gatepass.test",
                transport=_AsyncSpy(httpx.ASGITransport(app=app), wire),
            )
            async_clients.append(client)
        return Api(client, wire)

    yield make
    for sync_client in sync_clients:
        sync_client.close()
    for async_client in async_clients:
        await async_client.aclose()


@pytest.fixture(name="api")
def api_fixture(connect: Connect, bootstrap_key: str) -> Api:
    """A client of the kind under test holding the instance secret key."""
    return connect(secret_key=bootstrap_key)


def assert_error_from(error: APIError, wire: Wire, *, status: int, code: str) -> None:
    """``error`` carries exactly what the server's last error envelope said."""
    response = wire.last
    body = response.json()
    first = body["errors"][0]
    assert error.status_code == status == response.status_code
    assert error.code == code == first["code"]
    assert error.message == first["message"]
    assert error.long_message == first["long_message"]
    assert error.param_name == first["meta"].get("param_name")
    assert error.trace_id == body["clerk_trace_id"] == response.headers["x-request-id"]
    assert len(error.trace_id) == 32
    assert error.errors == tuple(body["errors"])
    assert str(error) == f"{status} {code}: {first['long_message']}"


# -- create, get, delete --------------------------------------------------------------------


async def test_create_get_and_delete_machine(api: Api) -> None:
    """Create returns the machine with its key and scopes; get omits the key; delete ends it."""
    target = await api.machines.create(name="API")
    assert api.wire.sent == {"name": "API"}  # only what was given
    assert (target.default_token_ttl, target.scoped_machines) == (3600, ())
    caller = await api.machines.create(
        name="Email Server", scoped_machines=[target.id], default_token_ttl=120
    )
    assert caller.name == "Email Server"
    assert caller.id.startswith("mch_")
    assert len(caller.id) == 31
    assert caller.instance_id.startswith("ins_")
    assert caller.instance_id == target.instance_id
    assert (caller.created_at, caller.updated_at) == (START_MS, START_MS)
    assert caller.default_token_ttl == 120
    assert caller.scoped_machines == (
        ScopedMachine(
            id=target.id,
            name="API",
            instance_id=target.instance_id,
            created_at=START_MS,
            updated_at=START_MS,
            default_token_ttl=3600,
        ),
    )
    assert caller.secret_key is not None
    assert caller.secret_key.startswith("ak_")
    assert api.wire.sent == {
        "name": "Email Server",
        "scoped_machines": [target.id],
        "default_token_ttl": 120,
    }

    fetched = await api.machines.get(caller.id)
    assert fetched.secret_key is None
    assert fetched.scoped_machines == caller.scoped_machines
    assert (fetched.id, fetched.name, fetched.default_token_ttl) == (caller.id, caller.name, 120)

    assert await api.machines.delete(target.id) == DeletedMachine(id=target.id, deleted=True)
    assert (await api.machines.get(caller.id)).scoped_machines == ()
    with pytest.raises(NotFoundError) as raised:
        await api.machines.get(target.id)
    assert_error_from(raised.value, api.wire, status=404, code="resource_not_found")
    with pytest.raises(NotFoundError):
        await api.machines.delete(target.id)


# -- list and iterate -----------------------------------------------------------------------


async def test_list_machines_limit_offset_query_order(api: Api, clock: FixedClock) -> None:
    """``list`` passes limit, offset, query and order_by, and reads the page and total."""
    ids = {}
    for name in ("alpha", "beta", "gamma"):
        ids[name] = (await api.machines.create(name=name)).id
        clock.advance(1)

    async def names(**kwargs: Any) -> tuple[list[str], int]:
        page = await api.machines.list(**kwargs)
        return [m.name for m in page.data], page.total_count

    assert await names() == (["gamma", "beta", "alpha"], 3)
    assert dict(api.wire.requests[-1].url.params) == {"limit": "10", "offset": "0"}
    assert await names(limit=2) == (["gamma", "beta"], 3)
    assert await names(limit=2, offset=2) == (["alpha"], 3)
    assert await names(offset=3) == ([], 3)
    assert await names(query="ET") == (["beta"], 1)
    assert await names(query=ids["alpha"]) == (["alpha"], 1)
    assert await names(query="nothing-like-it") == ([], 0)
    assert await names(order_by="name") == (["alpha", "beta", "gamma"], 3)
    assert await names(order_by="-name") == (["gamma", "beta", "alpha"], 3)
    assert await names(order_by="+created_at", limit=1, offset=1, query="a") == (["beta"], 3)
    assert dict(api.wire.requests[-1].url.params) == {
        "limit": "1",
        "offset": "1",
        "query": "a",
        "order_by": "+created_at",
    }
    listed = (await api.machines.list(query=ids["gamma"])).data[0]
    assert listed == await api.machines.get(ids["gamma"])


async def test_iterate_machines_fetches_every_page(
    api: Api, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``iterate`` walks the pages (size 2 here) until the total is reached, in order."""
    monkeypatch.setattr(gatepass._client, "_PAGE", 2)
    created = []
    for number in range(5):
        created.append((await api.machines.create(name=f"worker-{number}")).id)
        clock.advance(1)
    await api.machines.create(name="other")
    api.wire.reset()

    found = await api.machines.iterate(query="worker", order_by="created_at")
    assert [m.id for m in found] == created
    assert [dict(r.url.params) for r in api.wire.requests] == [
        {"limit": "2", "offset": str(offset), "query": "worker", "order_by": "created_at"}
        for offset in (0, 2, 4)
    ]
    assert len(await api.machines.iterate()) == 6
    assert await api.machines.iterate(query="nobody") == []


# -- update ---------------------------------------------------------------------------------


async def test_update_changes_only_the_fields_given(api: Api, clock: FixedClock) -> None:
    """A field not passed is not sent and does not change; ``updated_at`` moves."""
    machine = await api.machines.create(name="before", default_token_ttl=100)
    clock.advance(5)

    renamed = await api.machines.update(machine.id, name="after")
    assert api.wire.sent == {"name": "after"}
    assert (renamed.name, renamed.default_token_ttl) == ("after", 100)
    assert (renamed.created_at, renamed.updated_at) == (START_MS, START_MS + 5)

    retimed = await api.machines.update(machine.id, default_token_ttl=200)
    assert api.wire.sent == {"default_token_ttl": 200}
    assert (retimed.name, retimed.default_token_ttl) == ("after", 200)

    same = await api.machines.update(machine.id)
    assert api.wire.sent == {}
    assert (same.name, same.default_token_ttl) == ("after", 200)
    assert await api.machines.get(machine.id) == same

    with pytest.raises(NotFoundError):
        await api.machines.update(UNKNOWN_MACHINE_ID, name="x")


# -- secret keys ----------------------------------------------------------------------------


async def test_get_and_rotate_secret_key(api: Api, connect: Connect, clock: FixedClock) -> None:
    """The old key works within ``previous_token_ttl`` and not after; the new one works."""
    machine = await api.machines.create(name="rotating")
    assert machine.secret_key is not None
    assert await api.machines.get_secret_key(machine.id) == MachineSecretKey(machine.secret_key)

    rotated = await api.machines.rotate_secret_key(machine.id, previous_token_ttl=60)
    assert api.wire.sent == {"previous_token_ttl": 60}
    assert rotated.secret.startswith("ak_")
    assert rotated.secret != machine.secret_key
    assert await api.machines.get_secret_key(machine.id) == rotated

    old = connect(machine_secret_key=machine.secret_key)
    new = connect(machine_secret_key=rotated.secret)
    clock.advance(59_999)
    assert (await old.m2m_tokens.create()).subject == machine.id
    clock.advance(2)
    with pytest.raises(AuthenticationError) as raised:
        await old.m2m_tokens.create()
    assert_error_from(raised.value, old.wire, status=401, code="machine_secret_key_invalid")
    assert (await new.m2m_tokens.create()).subject == machine.id

    at_once = await api.machines.rotate_secret_key(machine.id, previous_token_ttl=0)
    with pytest.raises(AuthenticationError):
        await new.m2m_tokens.create()
    newest = connect(machine_secret_key=at_once.secret)
    assert (await newest.m2m_tokens.create()).subject == machine.id

    with pytest.raises(NotFoundError):
        await api.machines.get_secret_key(UNKNOWN_MACHINE_ID)
    with pytest.raises(NotFoundError):
        await api.machines.rotate_secret_key(UNKNOWN_MACHINE_ID, previous_token_ttl=0)


# -- scopes ---------------------------------------------------------------------------------


async def test_create_and_delete_scope(api: Api, clock: FixedClock) -> None:
    """A scope appears in ``scoped_machines``; twice is a conflict; deleting removes it."""
    caller = await api.machines.create(name="caller")
    target = await api.machines.create(name="target")
    clock.advance(7)

    scope = await api.machines.create_scope(caller.id, to_machine_id=target.id)
    assert scope == MachineScope(
        from_machine_id=caller.id, to_machine_id=target.id, created_at=START_MS + 7
    )
    assert [m.id for m in (await api.machines.get(caller.id)).scoped_machines] == [target.id]

    with pytest.raises(ConflictError) as raised:
        await api.machines.create_scope(caller.id, to_machine_id=target.id)
    assert_error_from(raised.value, api.wire, status=409, code="conflict")
    with pytest.raises(NotFoundError):
        await api.machines.create_scope(caller.id, to_machine_id=UNKNOWN_MACHINE_ID)
    with pytest.raises(BadRequestError) as self_scope:
        await api.machines.create_scope(caller.id, to_machine_id=caller.id)
    assert_error_from(self_scope.value, api.wire, status=422, code="form_param_value_invalid")

    deleted = await api.machines.delete_scope(caller.id, to_machine_id=target.id)
    assert deleted == DeletedMachineScope(
        from_machine_id=caller.id, to_machine_id=target.id, deleted=True
    )
    assert (await api.machines.get(caller.id)).scoped_machines == ()
    with pytest.raises(NotFoundError) as gone:
        await api.machines.delete_scope(caller.id, to_machine_id=target.id)
    assert_error_from(gone.value, api.wire, status=404, code="resource_not_found")

    # Regression: ".." was dropped by URL normalisation, making this DELETE /machines/{caller}.
    with pytest.raises(NotFoundError):
        await api.machines.delete_scope(caller.id, to_machine_id="..")
    assert (await api.machines.get(caller.id)).id == caller.id


# -- errors ---------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_field_error_is_bad_request_with_param_name(api: Api) -> None:
    """An empty name is a 422 naming the field, with the server's messages and trace id."""
    with pytest.raises(BadRequestError) as raised:
        await api.machines.create(name="")
    assert_error_from(raised.value, api.wire, status=422, code="form_param_value_invalid")
    assert raised.value.param_name == "name"
    assert raised.value.retry_after is None

    with pytest.raises(BadRequestError) as ttl:
        await api.machines.update(UNKNOWN_MACHINE_ID, default_token_ttl=0)
    assert_error_from(ttl.value, api.wire, status=422, code="form_param_value_invalid")
    assert ttl.value.param_name == "default_token_ttl"


@SQLITE_ONLY
async def test_oversized_body_is_bad_request_413(api: Api) -> None:
    """A body over the server's size limit is refused as ``request_body_too_large``."""
    with pytest.raises(BadRequestError) as raised:
        await api.machines.create(name="x" * 70_000)
    assert_error_from(raised.value, api.wire, status=413, code="request_body_too_large")


@SQLITE_ONLY
@ASYNC_ONLY
async def test_unknown_instance_key_is_authentication_error(connect: Connect) -> None:
    """A well-formed ``sk_`` key the server does not know is a 401 ``clerk_key_invalid``."""
    stranger = connect(secret_key="sk_test_" + "A" * 38)
    with pytest.raises(AuthenticationError) as raised:
        await stranger.machines.list()
    assert_error_from(raised.value, stranger.wire, status=401, code="clerk_key_invalid")
    assert len(stranger.wire.requests) == 1  # an error answer is not retried


@SQLITE_ONLY
@ASYNC_ONLY
async def test_machine_routes_need_the_instance_key(api: Api, connect: Connect) -> None:
    """Without an ``sk_`` key every machine call raises ConfigurationError and sends nothing."""
    machine = await api.machines.create(name="m")
    assert machine.secret_key is not None
    calls = {
        "list": {},
        "iterate": {},
        "create": {"name": "x"},
        "get": {"machine_id": machine.id},
        "update": {"machine_id": machine.id, "name": "x"},
        "delete": {"machine_id": machine.id},
        "get_secret_key": {"machine_id": machine.id},
        "rotate_secret_key": {"machine_id": machine.id, "previous_token_ttl": 0},
        "create_scope": {"machine_id": machine.id, "to_machine_id": machine.id},
        "delete_scope": {"machine_id": machine.id, "to_machine_id": machine.id},
    }
    for client in (connect(machine_secret_key=machine.secret_key), connect()):
        for name, kwargs in calls.items():
            with pytest.raises(ConfigurationError, match="needs an instance secret key"):
                await getattr(client.machines, name)(**kwargs)
        assert client.wire.requests == []
    assert (await api.machines.get(machine.id)).name == "m"
