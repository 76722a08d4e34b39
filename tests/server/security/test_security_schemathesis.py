"""Schemathesis against a live ``gatepass-server serve``: no 5xx, every answer as documented.

The document under test is the one the server serves (``/v1/openapi.json``, the checked-in
file). Each operation gets positive and negative cases (examples, coverage and fuzzing
phases); the stateful run follows the document's links (machine create → get, update,
delete, secret key, scopes; token create → get, revoke, verify). Checks: no server error,
status code, content type, body schema and headers as documented, negative data rejected,
and the stateful ``use_after_free`` / ``ensure_resource_availability``.

Keys: the instance ``sk_`` key by default; ``POST /m2m_tokens`` takes the ``ak_`` key of a
machine scoped to a second one, whose key verifies (the receiving side), and the other
token routes use the minting machine's key (a machine sees its own tokens). The rate
limiter is off (its 429 is documented; here it would only stop the exploration).

The default run covers the ``/v1`` routes and the root system routes on SQLite, small;
``@pytest.mark.long`` covers every route (the unprefixed twins too) on SQLite and
PostgreSQL, larger.
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.core.parameters import ParameterLocation

from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.domain.sealing import encode_master_key
from gatepass_server.web import openapi
from helpers import auth, live_server, throwaway_postgres_database

if TYPE_CHECKING:
    from collections.abc import Iterator

    from schemathesis.generation.stateful.state_machine import APIStateMachine
    from schemathesis.schemas import BaseSchema

OPENAPI_PATH: Final = Path(openapi.__file__).with_name(openapi.DOCUMENT_FILE)
DEFAULT_EXAMPLES: Final = 25
"""Fuzzing examples per operation in the default run (plus its coverage cases)."""
DEFAULT_SCENARIOS: Final = 50
DEFAULT_STEPS: Final = 10
LONG_EXAMPLES: Final = 120
LONG_SCENARIOS: Final = 150
LONG_STEPS: Final = 15

CHECKS: Final = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
)
"""Every check that fits. ``positive_data_acceptance`` does not: valid-looking ids of
machines that do not exist are 404 and claims over 8 KiB are 400, by design."""

# Operations whose key is a machine's, by operation id (the twin without /v1 too).
MINT: Final = ("createM2MToken",)
RECEIVE: Final = ("verifyM2MToken",)
OWN_TOKENS: Final = (
    "getM2MToken",
    "revokeM2MToken",
    "listM2MTokenRevocations",
    "getM2MTokenJwks",
)


@dataclass
class Target:
    """A live server with its keys and the objects that pinned cases address.

    The minter is scoped to the receiver; so is the pinned machine, which the cases that
    take a ``machine_id`` address, so that their bodies are read rather than 404'd.
    """

    url: str
    sk: str
    pinned_machine_id: str
    pinned_token_id: str
    minter_id: str = ""
    minter_key: str = ""
    receiver_id: str = ""
    receiver_key: str = ""

    def _machine(self, http: httpx.Client, name: str, *scoped: str) -> dict[str, Any]:
        response = http.post("/v1/machines", json={"name": name, "scoped_machines": list(scoped)})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def new_pair(self, http: httpx.Client) -> None:
        """A receiving machine and a minting one scoped to it."""
        receiver = self._machine(http, "receiver")
        minter = self._machine(http, "minter", receiver["id"])
        self.receiver_id, self.receiver_key = receiver["id"], receiver["secret_key"]
        self.minter_id, self.minter_key = minter["id"], minter["secret_key"]

    def refresh_keys(self) -> None:
        """Re-read both machines' keys, or make a new pair if one is gone.

        A stateful walk reaches them through ``GET /machines`` and may rotate or delete them.
        """
        with httpx.Client(base_url=self.url, headers=auth(self.sk), timeout=10) as http:
            keys = [
                http.get(f"/v1/machines/{m}/secret_key") for m in (self.minter_id, self.receiver_id)
            ]
            if all(r.status_code == 200 for r in keys):
                self.minter_key, self.receiver_key = (r.json()["secret"] for r in keys)
                return
            assert {r.status_code for r in keys} <= {200, 404}, [r.text for r in keys]
            self.new_pair(http)


def _server_env(data_dir: Path, database_url: str, sk: str) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return {
        # NOTE: no GATEPASS_* of the outer environment (a developer's Redis, a failpoint).
        **{name: "" for name in os.environ if name.startswith("GATEPASS_")},
        "GATEPASS_DATA_DIR": str(data_dir),
        "GATEPASS_DATABASE_URL": database_url,
        "GATEPASS_BOOTSTRAP_SECRET_KEY": sk,
        "GATEPASS_MASTER_KEY": encode_master_key(secrets.token_bytes(32)),
        # NOTE: limiter off: Schemathesis explores the routes, not the 429 (documented).
        "GATEPASS_AUTH_FAILURE_LIMIT": "0",
        "GATEPASS_VERIFY_MISS_LIMIT": "0",
        "GATEPASS_LOG_LEVEL": "warning",
    }


def _prepare(url: str, sk: str) -> Target:
    """Create the receiver, the minter and the pinned machine, and one token of the minter."""
    with httpx.Client(base_url=url, headers=auth(sk), timeout=10) as http:
        target = Target(url=url, sk=sk, pinned_machine_id="", pinned_token_id="")
        target.new_pair(http)
        target.pinned_machine_id = target._machine(http, "pinned", target.receiver_id)["id"]
        token = http.post("/v1/m2m_tokens", json={}, headers=auth(target.minter_key))
        assert token.status_code == 201, token.text
        target.pinned_token_id = token.json()["id"]
    return target


@contextlib.contextmanager
def _running(database_url: str, tmp: Path) -> Iterator[Target]:
    sk = generate_secret(SecretKind.INSTANCE_TEST)
    env = _server_env(tmp / "data", database_url, sk)
    with live_server(env, tmp / "server.log") as server:
        yield _prepare(server.url, sk)


def _pin(case: schemathesis.Case, target: Target) -> None:
    """Point a valid path at objects that exist (the delete keeps its random id).

    Only a path generated valid is changed, to another valid one: a negative path stays
    as generated, and so does what the case's metadata says about it.
    """
    operation_id = _operation_id(case)
    params = case.path_parameters
    if not params or operation_id == "deleteMachine":
        return
    if case.meta is None or case.meta.is_negative_at(ParameterLocation.PATH):
        return
    if "machine_id" in params:
        params["machine_id"] = target.pinned_machine_id
    if "other_machine_id" in params:
        params["other_machine_id"] = target.receiver_id
    if "token_id" in params:
        params["token_id"] = target.pinned_token_id


def _call(case: schemathesis.Case, target: Target, *, pin: bool) -> schemathesis.Response:
    if pin:
        _pin(case, target)
    return case.call_and_validate(base_url=target.url, headers=_key_for(case, target))


def _config(target: Target | None) -> schemathesis.Config:
    """The checks of this module; with a target, its instance key (``_key_for`` picks)."""
    keys = {} if target is None else {"headers": {"Authorization": f"Bearer {target.sk}"}}
    return schemathesis.Config.from_dict(
        {
            **keys,
            # NOTE: the key is this module's to choose per operation (the ignored_auth check
            # sends the cases without it); generated Authorization values would be replaced.
            "generation": {"with-security-parameters": False},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "operations": [
                {
                    # NOTE: ensure_resource_availability takes a 404 after a create for "the
                    # created object vanished". On a new scope the 404 is the body's unknown
                    # to_machine_id (CONTRACT.md §4), another machine no link can name; on
                    # verify it is a token revoked (POST .../revoke, Clerk's "delete") or
                    # expired since, which must be 404 token_invalid.
                    "include-operation-id": [
                        f"{name}{suffix}"
                        for name in ("createMachineScope", "verifyM2MToken")
                        for suffix in ("", "WithoutPrefix")
                    ],
                    "checks": {"ensure_resource_availability": {"enabled": False}},
                },
                {
                    # NOTE: the feed long-polls up to `wait` seconds when nothing is new;
                    # its bounds are tested in test_web_revocations.py, not here.
                    "include-operation-id": [
                        "listM2MTokenRevocations",
                        "listM2MTokenRevocationsWithoutPrefix",
                    ],
                    "parameters": {"query.wait": 0},
                },
            ],
        }
    )


def _served_schema(target: Target) -> BaseSchema:
    """The document as the server serves it, with the target's keys."""
    return schemathesis.openapi.from_url(f"{target.url}/v1/openapi.json", config=_config(target))


def _operation_id(case: schemathesis.Case) -> str:
    return str(case.operation.definition.raw["operationId"]).removesuffix("WithoutPrefix")


def _key_for(case: schemathesis.Case, target: Target) -> dict[str, str]:
    operation_id = _operation_id(case)
    if operation_id in MINT:
        return auth(target.minter_key)
    if operation_id in RECEIVE:
        return auth(target.receiver_key)
    if operation_id in OWN_TOKENS:
        return auth(target.minter_key)
    return auth(target.sk)


# NOTE: the checked-in file, loaded at collection (the server is not up yet); that the
# server serves exactly this file is test_web_openapi.py's to prove.
DOCUMENT: Final = schemathesis.openapi.from_path(OPENAPI_PATH, config=_config(None))


@dataclass
class Tally:
    """How much one run did: requests sent, stateful scenarios, wall-clock seconds."""

    label: str
    requests: int = 0
    scenarios: int = 0
    started: float = 0.0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)

    def report(self) -> str:
        """One line for the terminal (run with ``-s`` to see it)."""
        seconds = time.monotonic() - self.started
        return (
            f"schemathesis [{self.label}]: {self.requests} requests"
            f"{f', {self.scenarios} scenarios' if self.scenarios else ''} in {seconds:.1f} s;"
            f" statuses {dict(sorted(self.statuses.items()))}"
        )


def _settings(examples: int, *, derandomize: bool, **extra: Any) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
        **extra,
    )


# -- the default run: /v1 and the root routes on SQLite, small --------------------------------


@pytest.fixture(scope="module")
def sqlite_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A live server on a fresh SQLite file, with its two machines."""
    tmp = tmp_path_factory.mktemp("schemathesis-sqlite")
    with _running(f"sqlite:///{tmp / 'gatepass.db'}", tmp) as target:
        yield target


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    """Counts the default run's requests; prints them at the end (shown with ``-s``)."""
    counted = Tally("default, sqlite, /v1", started=time.monotonic())
    yield counted
    print(f"\n{counted.report()}")  # noqa: T201 - the run's size


@DOCUMENT.exclude(operation_id_regex="WithoutPrefix$").parametrize()
@_settings(DEFAULT_EXAMPLES, derandomize=True)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, sqlite_target: Target, tally: Tally
) -> None:
    """Positive and negative cases of each operation: no 5xx, every answer as documented."""
    tally.requests += 1
    tally.statuses[_call(case, sqlite_target, pin=True).status_code] += 1


def _state_machine(schema: BaseSchema, target: Target, tally: Tally) -> type[APIStateMachine]:
    base = schema.as_state_machine()

    class Counted(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            tally.scenarios += 1
            target.refresh_keys()

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": _key_for(case, target)}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case) -> None:
            tally.requests += 1
            tally.statuses[response.status_code] += 1
            super().after_call(response, case)

    return Counted


def test_stateful_sequences_follow_the_links(sqlite_target: Target) -> None:
    """Create → read/update/scope/rotate/delete and mint → get/revoke/verify, as linked."""
    schema = _served_schema(sqlite_target).exclude(operation_id_regex="WithoutPrefix$")
    counted = Tally("stateful, sqlite, /v1", started=time.monotonic())
    machine = _state_machine(schema, sqlite_target, counted)
    machine.run(
        settings=_settings(DEFAULT_SCENARIOS, derandomize=True, stateful_step_count=DEFAULT_STEPS)
    )
    print(f"\n{counted.report()}")  # noqa: T201 - the run's size, shown with -s
    assert counted.requests > counted.scenarios, "no scenario took a step"


# -- the long run: every route on SQLite and PostgreSQL, larger -------------------------------


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def long_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """A live server on a fresh database of either backend."""
    tmp = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    if request.param == "sqlite":
        with _running(f"sqlite:///{tmp / 'gatepass.db'}", tmp) as target:
            yield target
        return
    shared = str(request.getfixturevalue("postgres_server_url"))
    with (
        throwaway_postgres_database(shared, "gatepass_schemathesis") as url,
        _running(url, tmp) as target,
    ):
        yield target


@pytest.mark.long
@pytest.mark.parametrize("pin", [True, False], ids=["pinned", "random-ids"])
@DOCUMENT.parametrize()
@_settings(LONG_EXAMPLES, derandomize=False)
def test_long_every_operation_answers_as_documented(
    case: schemathesis.Case, long_target: Target, pin: bool
) -> None:
    """The same checks, every route with and without /v1, many more cases, both backends.

    Pinned: paths name existing objects; random: the generated ids, malformed ones too.
    """
    _call(case, long_target, pin=pin)


@pytest.mark.long
@pytest.mark.parametrize("family", ["/v1", "unprefixed"])
def test_long_stateful_sequences_follow_the_links(long_target: Target, family: str) -> None:
    """Longer linked sequences, both backends, over each family of routes on its own.

    NOTE: a walk over both would DELETE /v1/machines/{id} and then GET /machines/{id}, which
    Schemathesis takes for two resources (the 404 for "created, then not found"): the twins
    are one route, which the stateless pinned run exercises side by side.
    """
    schema = _served_schema(long_target)
    if family == "/v1":
        schema = schema.exclude(operation_id_regex="WithoutPrefix$")
    else:
        # NOTE: exclude, not include: include() keeps every operation when the config has
        # per-operation entries (Schemathesis 4.32).
        schema = schema.exclude(operation_id_regex="^(?!.*WithoutPrefix$)")
    counted = Tally(f"stateful, long, {family}", started=time.monotonic())
    machine = _state_machine(schema, long_target, counted)
    machine.run(
        settings=_settings(LONG_SCENARIOS, derandomize=False, stateful_step_count=LONG_STEPS)
    )
    print(f"\n{counted.report()}")  # noqa: T201 - the run's size, shown with -s
    assert counted.requests > counted.scenarios, "no scenario took a step"
