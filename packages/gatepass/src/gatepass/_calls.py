"""Every API request the SDK makes, as a :class:`~gatepass._http.Call` (CONTRACT.md §2).

The sync and async resources both send these, so a route's path, key, body and answer
are written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote

from gatepass._exceptions import (
    APIError,
    APIResponseError,
    GatepassError,
    TokenVerificationError,
)
from gatepass._http import Call, Key
from gatepass._models import (
    DeletedMachine,
    DeletedMachineScope,
    M2MToken,
    M2MTokenList,
    Machine,
    MachineList,
    MachineScope,
    MachineSecretKey,
    RevocationPage,
)
from gatepass._state import AuthReason

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "UNSET",
    "MachineOrder",
    "TokenFormat",
    "create_machine",
    "create_scope",
    "create_token",
    "delete_machine",
    "delete_scope",
    "get_machine",
    "get_secret_key",
    "get_token",
    "jwks",
    "list_machines",
    "list_tokens",
    "revocations",
    "revoke_token",
    "rotate_secret_key",
    "update_machine",
    "verify_token",
]

MachineOrder = Literal["name", "+name", "-name", "created_at", "+created_at", "-created_at"]
TokenFormat = Literal["opaque", "jwt"]

UNSET: Final[Any] = object()
"""Marks an argument that was not given, where ``None`` is a value to send."""


def _id(value: str) -> str:
    # NOTE: an id goes into the path; quoting keeps "../" or "?" in it from choosing the route.
    # Dots are quoted too: URL normalisation (RFC 3986 §5.2.4, done by httpx) removes a bare
    # "." or ".." segment, so delete_scope(m, to_machine_id="..") would send DELETE /machines/m.
    return quote(value, safe="").replace(".", "%2E")


def _present(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not UNSET}


def list_machines(
    *, limit: int, offset: int, query: str | None, order_by: MachineOrder | None
) -> Call[MachineList]:
    """``GET /v1/machines``."""
    params: dict[str, str | int] = {"limit": limit, "offset": offset}
    if query is not None:
        params["query"] = query
    if order_by is not None:
        params["order_by"] = order_by
    return Call(
        "GET", "/v1/machines", Key.INSTANCE, MachineList.from_json, params=params, idempotent=True
    )


def create_machine(
    *, name: str, scoped_machines: Sequence[str] | None, default_token_ttl: int | None
) -> Call[Machine]:
    """``POST /v1/machines`` (200, with the new machine's ``secret_key``)."""
    body: dict[str, Any] = {"name": name}
    if scoped_machines is not None:
        body["scoped_machines"] = list(scoped_machines)
    if default_token_ttl is not None:
        body["default_token_ttl"] = default_token_ttl
    return Call("POST", "/v1/machines", Key.INSTANCE, Machine.from_json, body=body)


def get_machine(machine_id: str) -> Call[Machine]:
    """``GET /v1/machines/{id}``."""
    return Call(
        "GET", f"/v1/machines/{_id(machine_id)}", Key.INSTANCE, Machine.from_json, idempotent=True
    )


def update_machine(machine_id: str, *, name: Any, default_token_ttl: Any) -> Call[Machine]:
    """``PATCH /v1/machines/{id}``: only the fields given change."""
    return Call(
        "PATCH",
        f"/v1/machines/{_id(machine_id)}",
        Key.INSTANCE,
        Machine.from_json,
        body=_present(name=name, default_token_ttl=default_token_ttl),
        idempotent=True,
    )


def delete_machine(machine_id: str) -> Call[DeletedMachine]:
    """``DELETE /v1/machines/{id}``: also revokes its tokens and removes its scopes."""
    return Call("DELETE", f"/v1/machines/{_id(machine_id)}", Key.INSTANCE, DeletedMachine.from_json)


def get_secret_key(machine_id: str) -> Call[MachineSecretKey]:
    """``GET /v1/machines/{id}/secret_key``."""
    return Call(
        "GET",
        f"/v1/machines/{_id(machine_id)}/secret_key",
        Key.INSTANCE,
        MachineSecretKey.from_json,
        idempotent=True,
    )


def rotate_secret_key(machine_id: str, *, previous_token_ttl: int) -> Call[MachineSecretKey]:
    """``POST /v1/machines/{id}/secret_key/rotate``: never retried after a lost answer."""
    return Call(
        "POST",
        f"/v1/machines/{_id(machine_id)}/secret_key/rotate",
        Key.INSTANCE,
        MachineSecretKey.from_json,
        body={"previous_token_ttl": previous_token_ttl},
    )


def create_scope(machine_id: str, *, to_machine_id: str) -> Call[MachineScope]:
    """``POST /v1/machines/{id}/scopes``."""
    return Call(
        "POST",
        f"/v1/machines/{_id(machine_id)}/scopes",
        Key.INSTANCE,
        MachineScope.from_json,
        body={"to_machine_id": to_machine_id},
    )


def delete_scope(machine_id: str, *, to_machine_id: str) -> Call[DeletedMachineScope]:
    """``DELETE /v1/machines/{id}/scopes/{other_id}``."""
    return Call(
        "DELETE",
        f"/v1/machines/{_id(machine_id)}/scopes/{_id(to_machine_id)}",
        Key.INSTANCE,
        DeletedMachineScope.from_json,
    )


def create_token(
    *,
    token_format: TokenFormat | None,
    seconds_until_expiration: float | None,
    claims: Mapping[str, Any] | None,
    min_remaining_ttl_seconds: int | None,
) -> Call[M2MToken]:
    """``POST /v1/m2m_tokens`` with the machine key (201, with the bearer ``token``)."""
    body: dict[str, Any] = {}
    if token_format is not None:
        body["token_format"] = token_format
    if seconds_until_expiration is not None:
        body["seconds_until_expiration"] = seconds_until_expiration
    if claims is not None:
        body["claims"] = dict(claims)
    if min_remaining_ttl_seconds is not None:
        body["min_remaining_ttl_seconds"] = min_remaining_ttl_seconds
    return Call("POST", "/v1/m2m_tokens", Key.MACHINE, M2MToken.from_json, expect=201, body=body)


def list_tokens(
    *, subject: str, revoked: bool, expired: bool, limit: int, offset: int
) -> Call[M2MTokenList]:
    """``GET /v1/m2m_tokens?subject=…``, newest first."""
    params: dict[str, str | int] = {
        "subject": subject,
        "revoked": "true" if revoked else "false",
        "expired": "true" if expired else "false",
        "limit": limit,
        "offset": offset,
    }
    return Call(
        "GET",
        "/v1/m2m_tokens",
        Key.INSTANCE_FIRST,
        M2MTokenList.from_json,
        params=params,
        idempotent=True,
    )


def get_token(token_id: str) -> Call[M2MToken]:
    """``GET /v1/m2m_tokens/{id}`` (Gatepass)."""
    return Call(
        "GET",
        f"/v1/m2m_tokens/{_id(token_id)}",
        Key.INSTANCE_FIRST,
        M2MToken.from_json,
        idempotent=True,
    )


def revoke_token(token_id: str, *, revocation_reason: str | None) -> Call[M2MToken]:
    """``POST /v1/m2m_tokens/{id}/revoke``: idempotent, the first reason stays."""
    return Call(
        "POST",
        f"/v1/m2m_tokens/{_id(token_id)}/revoke",
        Key.INSTANCE_FIRST,
        M2MToken.from_json,
        body={"revocation_reason": revocation_reason},
        idempotent=True,
    )


def verify_token(token: str) -> Call[M2MToken]:
    """``POST /v1/m2m_tokens/verify``: as the receiving machine when the client has its key."""
    # NOTE: with the machine key the server also checks that the caller is in the token's
    # scopes (CONTRACT.md §4), as Clerk's JS SDK prefers it (CONTRACT.md §6).
    return Call(
        "POST",
        "/v1/m2m_tokens/verify",
        Key.MACHINE_FIRST,
        M2MToken.from_json,
        body={"token": token},
        idempotent=True,
        on_error=_token_invalid,
    )


def _token_invalid(error: APIError) -> GatepassError:
    if error.status_code == 404:  # noqa: PLR2004 - CONTRACT.md §5: every "no" is this 404
        return TokenVerificationError(
            AuthReason.TOKEN_INVALID, "the token is not valid", trace_id=error.trace_id
        )
    return error


def revocations(*, after: str, limit: int | None, wait: int | None) -> Call[RevocationPage]:
    """``GET /v1/m2m_tokens/revocations`` (Gatepass): revoked token ids after a cursor."""
    params: dict[str, str | int] = {"after": after}
    if limit is not None:
        params["limit"] = limit
    if wait:
        params["wait"] = wait
    return Call(
        "GET",
        "/v1/m2m_tokens/revocations",
        Key.MACHINE_FIRST,
        RevocationPage.from_json,
        params=params,
        idempotent=True,
        extra_timeout=wait or 0.0,
    )


def jwks() -> Call[dict[str, Any]]:
    """``GET /v1/m2m_tokens/jwks`` (Gatepass): the instance's public keys, for any key."""
    return Call("GET", "/v1/m2m_tokens/jwks", Key.MACHINE_FIRST, _object, idempotent=True)


def _object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise APIResponseError("expected a JSON object")
    return data
