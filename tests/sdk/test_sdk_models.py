"""The SDK's models read the wire JSON of CONTRACT.md §3, and refuse any other shape.

The ``*_JSON`` samples below are complete answers as CONTRACT.md §3 draws them;
``test_sdk_http.py`` serves them from its mock transport.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Final

import pytest

from gatepass import (
    APIResponseError,
    DeletedMachine,
    DeletedMachineScope,
    M2MToken,
    M2MTokenList,
    Machine,
    MachineList,
    MachineScope,
    MachineSecretKey,
    Revocation,
    RevocationPage,
    ScopedMachine,
)

MACHINE_ID: Final = "mch_" + "a" * 27
OTHER_ID: Final = "mch_" + "b" * 27
INSTANCE_ID: Final = "ins_" + "c" * 27
TOKEN_ID: Final = "mt_" + "d" * 32
SECRET_KEY: Final = "ak_" + "e" * 40
BEARER: Final = "mt_" + "f" * 40

SCOPED_JSON: Final[dict[str, Any]] = {
    "object": "machine",
    "id": OTHER_ID,
    "name": "API",
    "instance_id": INSTANCE_ID,
    "created_at": 1_754_938_436_000,
    "updated_at": 1_754_938_436_001,
    "default_token_ttl": 60,
}
MACHINE_JSON: Final[dict[str, Any]] = {
    "object": "machine",
    "id": MACHINE_ID,
    "name": "Email Server",
    "instance_id": INSTANCE_ID,
    "created_at": 1_754_938_436_732,
    "updated_at": 1_754_938_436_733,
    "default_token_ttl": 3600,
    "scoped_machines": [SCOPED_JSON],
}
MACHINE_CREATED_JSON: Final[dict[str, Any]] = {**MACHINE_JSON, "secret_key": SECRET_KEY}
MACHINE_LIST_JSON: Final[dict[str, Any]] = {"data": [MACHINE_JSON], "total_count": 7}
DELETED_MACHINE_JSON: Final[dict[str, Any]] = {
    "object": "machine",
    "id": MACHINE_ID,
    "deleted": True,
}
SECRET_KEY_JSON: Final[dict[str, Any]] = {"object": "machine_secret_key", "secret": SECRET_KEY}
SCOPE_JSON: Final[dict[str, Any]] = {
    "object": "machine_scope",
    "from_machine_id": MACHINE_ID,
    "to_machine_id": OTHER_ID,
    "created_at": 1_754_938_436_734,
}
DELETED_SCOPE_JSON: Final[dict[str, Any]] = {
    "object": "machine_scope",
    "from_machine_id": MACHINE_ID,
    "to_machine_id": OTHER_ID,
    "deleted": True,
}
TOKEN_JSON: Final[dict[str, Any]] = {
    "object": "machine_to_machine_token",
    "id": TOKEN_ID,
    "subject": MACHINE_ID,
    "claims": {"role": "reader"},
    "scopes": [OTHER_ID],
    "revoked": True,
    "revocation_reason": "leaked",
    "expired": False,
    "expiration": 1_754_942_036_732,
    "last_used_at": 1_754_938_437_000,
    "created_at": 1_754_938_436_732,
    "updated_at": 1_754_938_436_800,
}
TOKEN_CREATED_JSON: Final[dict[str, Any]] = {**TOKEN_JSON, "token": BEARER}
TOKEN_LIST_JSON: Final[dict[str, Any]] = {"m2m_tokens": [TOKEN_JSON], "total_count": 3}
REVOCATION_JSON: Final[dict[str, Any]] = {
    "object": "m2m_token_revocation",
    "id": TOKEN_ID,
    "subject": MACHINE_ID,
    "revoked_at": 1_754_938_436_800,
    "expiration": 1_754_942_036_732,
}
REVOCATION_PAGE_JSON: Final[dict[str, Any]] = {
    "object": "m2m_token_revocations",
    "data": [REVOCATION_JSON],
    "cursor": "42",
    "has_more": True,
}

SCOPED: Final = ScopedMachine(
    id=OTHER_ID,
    name="API",
    instance_id=INSTANCE_ID,
    created_at=1_754_938_436_000,
    updated_at=1_754_938_436_001,
    default_token_ttl=60,
)
MACHINE: Final = Machine(
    id=MACHINE_ID,
    name="Email Server",
    instance_id=INSTANCE_ID,
    created_at=1_754_938_436_732,
    updated_at=1_754_938_436_733,
    default_token_ttl=3600,
    scoped_machines=(SCOPED,),
)
TOKEN: Final = M2MToken(
    id=TOKEN_ID,
    subject=MACHINE_ID,
    scopes=(OTHER_ID,),
    claims={"role": "reader"},
    revoked=True,
    revocation_reason="leaked",
    expired=False,
    expiration=1_754_942_036_732,
    last_used_at=1_754_938_437_000,
    created_at=1_754_938_436_732,
    updated_at=1_754_938_436_800,
)
REVOCATION: Final = Revocation(
    id=TOKEN_ID,
    subject=MACHINE_ID,
    revoked_at=1_754_938_436_800,
    expiration=1_754_942_036_732,
)

READS: Final[list[tuple[Any, dict[str, Any], object]]] = [
    (ScopedMachine, SCOPED_JSON, SCOPED),
    (Machine, MACHINE_JSON, MACHINE),
    (Machine, MACHINE_CREATED_JSON, dataclasses.replace(MACHINE, secret_key=SECRET_KEY)),
    (MachineList, MACHINE_LIST_JSON, MachineList(data=(MACHINE,), total_count=7)),
    (DeletedMachine, DELETED_MACHINE_JSON, DeletedMachine(id=MACHINE_ID, deleted=True)),
    (MachineSecretKey, SECRET_KEY_JSON, MachineSecretKey(secret=SECRET_KEY)),
    (
        MachineScope,
        SCOPE_JSON,
        MachineScope(
            from_machine_id=MACHINE_ID, to_machine_id=OTHER_ID, created_at=1_754_938_436_734
        ),
    ),
    (
        DeletedMachineScope,
        DELETED_SCOPE_JSON,
        DeletedMachineScope(from_machine_id=MACHINE_ID, to_machine_id=OTHER_ID, deleted=True),
    ),
    (M2MToken, TOKEN_JSON, TOKEN),
    (M2MToken, TOKEN_CREATED_JSON, dataclasses.replace(TOKEN, token=BEARER)),
    (M2MTokenList, TOKEN_LIST_JSON, M2MTokenList(m2m_tokens=(TOKEN,), total_count=3)),
    (Revocation, REVOCATION_JSON, REVOCATION),
    (
        RevocationPage,
        REVOCATION_PAGE_JSON,
        RevocationPage(data=(REVOCATION,), cursor="42", has_more=True),
    ),
]
"""Each model, a complete answer, and the model it reads as."""

INT_FIELDS: Final[list[tuple[Any, dict[str, Any], str]]] = [
    (ScopedMachine, SCOPED_JSON, "default_token_ttl"),
    (Machine, MACHINE_JSON, "default_token_ttl"),
    (Machine, MACHINE_JSON, "created_at"),
    (MachineList, MACHINE_LIST_JSON, "total_count"),
    (MachineScope, SCOPE_JSON, "created_at"),
    (M2MToken, TOKEN_JSON, "expiration"),
    (M2MToken, TOKEN_JSON, "last_used_at"),
    (M2MToken, TOKEN_JSON, "updated_at"),
    (M2MTokenList, TOKEN_LIST_JSON, "total_count"),
    (Revocation, REVOCATION_JSON, "revoked_at"),
]
"""Integer fields, nullable or not."""


def _ids(cases: list[tuple[Any, ...]]) -> list[str]:
    return [f"{case[0].__name__}.{case[2]}" if isinstance(case[2], str) else "" for case in cases]


@pytest.mark.parametrize(("model", "data", "expected"), READS, ids=[r[0].__name__ for r in READS])
def test_from_json_reads_a_complete_answer(
    model: Any, data: dict[str, Any], expected: object
) -> None:
    """Every field lands in its attribute; ``object`` and unknown keys are ignored."""
    assert model.from_json(copy.deepcopy(data)) == expected
    assert model.from_json({**copy.deepcopy(data), "added_later": [1, 2]}) == expected


def test_sequences_are_tuples_and_timestamps_ints() -> None:
    """Lists become tuples (the models are frozen); whole numbers are ``int``."""
    machine = Machine.from_json(MACHINE_JSON)
    assert type(machine.scoped_machines) is tuple
    assert type(M2MToken.from_json(TOKEN_JSON).scopes) is tuple
    assert type(machine.created_at) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        machine.name = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(("model", "data", "name"), INT_FIELDS, ids=_ids(INT_FIELDS))
def test_whole_float_is_accepted_as_int(model: Any, data: dict[str, Any], name: str) -> None:
    """``3600.0`` reads as ``3600``, an ``int`` (CONTRACT.md §4: numbers may be floats)."""
    read = model.from_json({**data, name: 3600.0})
    assert getattr(read, name) == 3600
    assert type(getattr(read, name)) is int


@pytest.mark.parametrize("value", [3600.5, True, False, "3600", [3600], {"n": 1}])
@pytest.mark.parametrize(("model", "data", "name"), INT_FIELDS, ids=_ids(INT_FIELDS))
def test_other_value_for_an_int_is_refused(
    model: Any, data: dict[str, Any], name: str, value: object
) -> None:
    """A fraction, a boolean, a string or a container is not a whole number."""
    with pytest.raises(APIResponseError, match=rf"\.{name} (has the wrong type|is not a whole)"):
        model.from_json({**data, name: value})


@pytest.mark.parametrize(
    ("model", "data", "name", "value"),
    [
        (M2MToken, TOKEN_JSON, "revoked", 1),
        (M2MToken, TOKEN_JSON, "expired", "false"),
        (DeletedMachine, DELETED_MACHINE_JSON, "deleted", None),
        (RevocationPage, REVOCATION_PAGE_JSON, "has_more", 0),
        (Machine, MACHINE_JSON, "name", 5),
        (Machine, MACHINE_JSON, "id", None),
        (Machine, MACHINE_JSON, "scoped_machines", None),
        (Machine, MACHINE_JSON, "scoped_machines", {"id": OTHER_ID}),
        (Machine, MACHINE_JSON, "scoped_machines", [OTHER_ID]),
        (Machine, MACHINE_JSON, "secret_key", None),
        (M2MToken, TOKEN_JSON, "scopes", [OTHER_ID, 7]),
        (M2MToken, TOKEN_JSON, "scopes", OTHER_ID),
        (M2MToken, TOKEN_JSON, "claims", ["role"]),
        (M2MToken, TOKEN_JSON, "claims", "role"),
        (M2MToken, TOKEN_JSON, "revocation_reason", 3),
        (M2MToken, TOKEN_JSON, "token", None),
        (M2MToken, TOKEN_JSON, "created_at", None),
        (MachineSecretKey, SECRET_KEY_JSON, "secret", None),
        (RevocationPage, REVOCATION_PAGE_JSON, "cursor", 42),
        (RevocationPage, REVOCATION_PAGE_JSON, "data", [None]),
        (MachineList, MACHINE_LIST_JSON, "data", [{**MACHINE_JSON, "name": None}]),
        (M2MTokenList, TOKEN_LIST_JSON, "m2m_tokens", [{**TOKEN_JSON, "revoked": None}]),
    ],
)
def test_wrong_type_is_refused(model: Any, data: dict[str, Any], name: str, value: object) -> None:
    """A value of the wrong type, nested or not, is an APIResponseError, never a TypeError."""
    with pytest.raises(APIResponseError) as raised:
        model.from_json({**data, name: value})
    assert raised.value.status_code is None


@pytest.mark.parametrize(
    ("model", "data"),
    [(model, data) for model, data, _ in READS],
    ids=[f"{r[0].__name__}-{i}" for i, r in enumerate(READS)],
)
def test_missing_key_is_refused(model: Any, data: dict[str, Any]) -> None:
    """Every key the model reads is required (``object`` and the secrets excepted)."""
    optional = {"object", "secret_key", "token"}
    for name in set(data) - optional:
        partial = {key: value for key, value in data.items() if key != name}
        with pytest.raises(APIResponseError, match=f"lacks '{name}'"):
            model.from_json(partial)


def test_null_is_read_where_the_contract_allows_it() -> None:
    """``claims``, ``revocation_reason``, ``expiration`` and ``last_used_at`` may be null."""
    nullable = ("claims", "revocation_reason", "expiration", "last_used_at")
    token = M2MToken.from_json({**TOKEN_JSON, **dict.fromkeys(nullable)})
    assert (token.claims, token.revocation_reason, token.expiration, token.last_used_at) == (
        None,
        None,
        None,
        None,
    )
    assert token.token is None


@pytest.mark.parametrize("data", [None, [], "machine", 3, [MACHINE_JSON]])
@pytest.mark.parametrize("model", [Machine, M2MToken, MachineList, RevocationPage])
def test_not_an_object_is_refused(model: Any, data: object) -> None:
    """An answer that is not a JSON object at all says so."""
    with pytest.raises(APIResponseError, match=r"^expected a .* object, got "):
        model.from_json(data)


def test_error_message_names_the_model_and_field() -> None:
    """The message points at what was wrong, for a bug report."""
    with pytest.raises(APIResponseError, match=r"^machine lacks 'name'$"):
        Machine.from_json({k: v for k, v in MACHINE_JSON.items() if k != "name"})
    with pytest.raises(APIResponseError, match=r"^m2m token\.revoked has the wrong type$"):
        M2MToken.from_json({**TOKEN_JSON, "revoked": "yes"})
    with pytest.raises(APIResponseError, match=r"^machine\.created_at is not a whole number$"):
        Machine.from_json({**MACHINE_JSON, "created_at": 1.5})
    with pytest.raises(APIResponseError, match=r"^m2m token\.scopes must hold strings$"):
        M2MToken.from_json({**TOKEN_JSON, "scopes": [1]})
