"""Wire shapes of CONTRACT.md §3 and §5, exactly; and the mapping from domain values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from gatepass_server.domain.changes import RevocationPage
    from gatepass_server.domain.machines import Machine, MachineScope, MachineSummary
    from gatepass_server.domain.tokens import M2MToken

__all__ = [
    "ErrorBody",
    "ErrorsBody",
    "M2MTokenBody",
    "M2MTokenCreatedBody",
    "M2MTokenListBody",
    "M2MTokenRevocationBody",
    "M2MTokenRevocationsBody",
    "MachineBody",
    "MachineCreatedBody",
    "MachineDeletedBody",
    "MachineListBody",
    "MachineScopeBody",
    "MachineScopeDeletedBody",
    "MachineSecretKeyBody",
    "MachineSummaryBody",
    "machine_body",
    "machine_created_body",
    "revocations_body",
    "scope_body",
    "token_body",
    "token_created_body",
]


class MachineSummaryBody(msgspec.Struct, kw_only=True):
    """A machine inside ``scoped_machines``: no ``scoped_machines`` of its own."""

    object: str = "machine"
    id: str
    name: str
    instance_id: str
    created_at: int
    updated_at: int
    default_token_ttl: int


class MachineBody(MachineSummaryBody, kw_only=True):
    """A machine; ``scoped_machines`` is always an array (the JS SDK needs it)."""

    scoped_machines: list[MachineSummaryBody]


class MachineCreatedBody(MachineBody, kw_only=True):
    """The create response: the only one with the plaintext key."""

    secret_key: str


class MachineListBody(msgspec.Struct):
    """``GET /machines``."""

    data: list[MachineBody]
    total_count: int


class MachineDeletedBody(msgspec.Struct, kw_only=True):
    """``DELETE /machines/{id}``."""

    object: str = "machine"
    id: str
    deleted: bool = True


class MachineSecretKeyBody(msgspec.Struct, kw_only=True):
    """``GET /machines/{id}/secret_key`` and rotate."""

    object: str = "machine_secret_key"
    secret: str


class MachineScopeBody(msgspec.Struct, kw_only=True):
    """A scope: ``from`` may call ``to``."""

    object: str = "machine_scope"
    from_machine_id: str
    to_machine_id: str
    created_at: int


class MachineScopeDeletedBody(msgspec.Struct, kw_only=True):
    """The scope delete response: ``deleted`` instead of ``created_at``."""

    object: str = "machine_scope"
    from_machine_id: str
    to_machine_id: str
    deleted: bool = True


class M2MTokenBody(msgspec.Struct, kw_only=True):
    """An M2M token: every key always present, ``null`` included (the Python SDK needs it)."""

    object: str = "machine_to_machine_token"
    id: str
    subject: str
    claims: dict[str, Any] | None
    scopes: list[str]
    revoked: bool
    revocation_reason: str | None
    expired: bool
    expiration: int | None
    last_used_at: int | None
    created_at: int
    updated_at: int


class M2MTokenCreatedBody(M2MTokenBody, kw_only=True):
    """The create response: the only one carrying the bearer ``token``."""

    token: str


class M2MTokenListBody(msgspec.Struct):
    """``GET /m2m_tokens``."""

    m2m_tokens: list[M2MTokenBody]
    total_count: int


class M2MTokenRevocationBody(msgspec.Struct, kw_only=True):
    """One revoked token in the revocation feed: its id (a JWT's ``jti``), never a secret."""

    object: str = "m2m_token_revocation"
    id: str
    subject: str
    revoked_at: int
    expiration: int


class M2MTokenRevocationsBody(msgspec.Struct, kw_only=True):
    """``GET /m2m_tokens/revocations`` (Gatepass extension, CONTRACT.md §7)."""

    object: str = "m2m_token_revocations"
    data: list[M2MTokenRevocationBody]
    cursor: str
    has_more: bool


class ErrorBody(msgspec.Struct):
    """One error; ``long_message`` always present (the Python SDK requires it)."""

    message: str
    long_message: str
    code: str
    meta: dict[str, str]


class ErrorsBody(msgspec.Struct):
    """The error envelope."""

    errors: list[ErrorBody]
    clerk_trace_id: str


def _summary_body(machine: MachineSummary) -> MachineSummaryBody:
    return MachineSummaryBody(
        id=machine.id,
        name=machine.name,
        instance_id=machine.instance_id,
        created_at=machine.created_at,
        updated_at=machine.updated_at,
        default_token_ttl=machine.default_token_ttl,
    )


def machine_body(machine: Machine) -> MachineBody:
    """Render a machine with its scoped machines."""
    return MachineBody(
        id=machine.id,
        name=machine.name,
        instance_id=machine.instance_id,
        created_at=machine.created_at,
        updated_at=machine.updated_at,
        default_token_ttl=machine.default_token_ttl,
        scoped_machines=[_summary_body(m) for m in machine.scoped_machines],
    )


def machine_created_body(machine: Machine, secret_key: str) -> MachineCreatedBody:
    """Render the create response."""
    body = machine_body(machine)
    return MachineCreatedBody(**msgspec.structs.asdict(body), secret_key=secret_key)


def token_body(token: M2MToken, now_ms: int) -> M2MTokenBody:
    """Render a token as of ``now_ms``."""
    return M2MTokenBody(
        id=token.id,
        subject=token.subject,
        claims=token.claims,
        scopes=list(token.scopes),
        revoked=token.revoked,
        revocation_reason=token.revocation_reason,
        expired=token.expired(now_ms),
        expiration=token.expiration,
        last_used_at=token.last_used_at,
        created_at=token.created_at,
        updated_at=token.updated_at,
    )


def token_created_body(token: M2MToken, secret: str, now_ms: int) -> M2MTokenCreatedBody:
    """Render the create response with the bearer string."""
    body = token_body(token, now_ms)
    return M2MTokenCreatedBody(**msgspec.structs.asdict(body), token=secret)


def scope_body(scope: MachineScope) -> MachineScopeBody:
    """Render a scope."""
    return MachineScopeBody(
        from_machine_id=scope.from_machine_id,
        to_machine_id=scope.to_machine_id,
        created_at=scope.created_at,
    )


def revocations_body(page: RevocationPage) -> M2MTokenRevocationsBody:
    """Render a page of the revocation feed; the cursor is opaque to clients."""
    return M2MTokenRevocationsBody(
        data=[
            M2MTokenRevocationBody(
                id=r.token_id,
                subject=r.subject,
                revoked_at=r.revoked_at,
                expiration=r.expiration,
            )
            for r in page.revocations
        ],
        cursor=str(page.cursor),
        has_more=page.has_more,
    )
