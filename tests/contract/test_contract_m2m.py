"""Routes 10-13 (CONTRACT.md §2-6) through Clerk's Python SDK against the live server."""

from __future__ import annotations

import gc
import secrets
import warnings
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from clerk_backend_api import models
from clerk_backend_api.security import verify_token
from clerk_backend_api.security.types import TokenVerificationError, VerifyTokenOptions
from contract_support import sdk

if TYPE_CHECKING:
    from clerk_backend_api import Clerk
    from contract_support import Contract


class Machines:
    """A caller scoped to a receiver, a bystander, each with its ak_ key."""

    def __init__(self, clerk: Clerk, tag: str) -> None:
        self.receiver = clerk.machines.create(request={"name": f"{tag} receiver"})
        self.caller = clerk.machines.create(
            request={"name": f"{tag} caller", "scoped_machines": [self.receiver.id]}
        )
        self.bystander = clerk.machines.create(request={"name": f"{tag} bystander"})


@pytest.fixture
def machines(clerk: Clerk, tag: str) -> Machines:
    """Fresh machines for this test."""
    return Machines(clerk, tag)


def helper_verify(token: str, options: VerifyTokenOptions) -> dict[str, Any] | str:
    """The SDK's request-auth ``verify_token``: the payload, or the failure reason's code.

    NOTE: for opaque tokens the SDK opens an ``httpx.Client`` it never closes; its socket's
    ResourceWarning would fail a later test under ``-W error``, so it is collected here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return verify_token(token, options)
        except TokenVerificationError as exc:
            reason: str = exc.reason.value[0]
        finally:
            gc.collect()
    return reason


def _jwks(contract: Contract) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{contract.api_url}/jwks", headers={"Authorization": f"Bearer {contract.sk}"}
    )
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()["keys"]
    return keys


def test_create_opaque_token_with_the_machine_key(contract: Contract, machines: Machines) -> None:
    """create_token with bearer ak_ is a typed 201 body with every field the SDK needs."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        created = machine.m2m.create_token(seconds_until_expiration=120, claims={"role": "x"})
    assert isinstance(created, models.CreateM2MTokenResponseBody)
    assert created.object is models.CreateM2MTokenObject.MACHINE_TO_MACHINE_TOKEN
    assert created.id.startswith("mt_")
    assert created.token.startswith("mt_")
    assert created.token != created.id
    assert created.subject == machines.caller.id
    assert created.scopes == [machines.receiver.id]
    assert created.claims == {"role": "x"}
    assert (created.revoked, created.revocation_reason, created.expired) == (False, None, False)
    assert created.last_used_at is None
    assert created.expiration == created.created_at + 120_000


def test_create_reuses_with_min_remaining_ttl(contract: Contract, machines: Machines) -> None:
    """min_remaining_ttl_seconds hands back the same token through the SDK."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        first = machine.m2m.create_token(min_remaining_ttl_seconds=60)
        again = machine.m2m.create_token(min_remaining_ttl_seconds=60)
    assert (again.id, again.token) == (first.id, first.token)


def test_create_jwt_verifies_with_pyjwt_and_the_sdk_helper(
    contract: Contract, machines: Machines
) -> None:
    """A jwt-format token verifies with PyJWT against /v1/jwks and via the SDK's helper."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        created = machine.m2m.create_token(token_format=models.TokenFormat.JWT)
    header = jwt.get_unverified_header(created.token)
    (key,) = [k for k in _jwks(contract) if k["kid"] == header["kid"]]
    claims = jwt.decode(
        created.token, jwt.PyJWK(key), algorithms=["RS256"], audience=machines.receiver.id
    )
    assert (claims["jti"], claims["sub"]) == (created.id, machines.caller.id)
    assert claims["exp"] == created.expiration // 1000
    # NOTE: a JWT has no mt_ prefix, so the helper verifies it locally with /v1/jwks.
    payload = helper_verify(
        created.token,
        VerifyTokenOptions(
            api_url=contract.server.url, secret_key=contract.sk, audience=machines.receiver.id
        ),
    )
    assert isinstance(payload, dict), payload
    assert payload["jti"] == created.id


def test_create_with_the_instance_key_is_refused(contract: Contract, clerk: Clerk) -> None:
    """An sk_ key cannot mint: the SDK raises with status 401."""
    with pytest.raises(models.SDKError) as caught:
        clerk.m2m.create_token()
    assert caught.value.status_code == 401
    assert "machine_secret_key_invalid" in caught.value.body
    del contract


def test_create_with_a_reserved_claim_is_typed_400(contract: Contract, machines: Machines) -> None:
    """A reserved claim is the SDK's typed 400 error with code machine_token_reserved_claim."""
    with (
        sdk(contract.server.url, machines.caller.secret_key) as machine,
        pytest.raises(models.CreateM2MTokenM2mResponseBody) as caught,
    ):
        machine.m2m.create_token(claims={"sub": "mch_x"})
    assert caught.value.data.errors[0].code == "machine_token_reserved_claim"


def test_list_tokens_with_filters(contract: Contract, clerk: Clerk, machines: Machines) -> None:
    """list_tokens by sk and by the subject's own key; revoked=True includes revoked ones."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        kept = machine.m2m.create_token()
        dropped = machine.m2m.create_token()
        machine.m2m.create_token(token_format=models.TokenFormat.JWT)
        machine.m2m.revoke_token(m2m_token_id=dropped.id, revocation_reason="done")
        own = machine.m2m.list_tokens(subject=machines.caller.id)
    assert isinstance(own, models.GetM2MTokensResponseBody)
    assert [t.id for t in own.m2m_tokens] == [kept.id]
    assert own.total_count == 1
    everything = clerk.m2m.list_tokens(subject=machines.caller.id, revoked=True, expired=True)
    assert {t.id for t in everything.m2m_tokens} == {kept.id, dropped.id}
    listed = {t.id: t for t in everything.m2m_tokens}
    assert listed[dropped.id].revoked is True
    assert listed[dropped.id].revocation_reason == "done"
    explicit = clerk.m2m.list_tokens(subject=machines.caller.id, revoked=False, expired=False)
    assert [t.id for t in explicit.m2m_tokens] == [kept.id]


def test_list_another_subject_with_a_machine_key_is_typed_403(
    contract: Contract, machines: Machines
) -> None:
    """A machine key listing another machine's tokens: the SDK's typed 403."""
    with (
        sdk(contract.server.url, machines.receiver.secret_key) as machine,
        pytest.raises(models.GetM2MTokensM2mResponseResponseBody) as caught,
    ):
        machine.m2m.list_tokens(subject=machines.caller.id)
    assert caught.value.raw_response.status_code == 403
    assert caught.value.data.errors[0].code == "authorization_invalid"


def test_revoke_with_machine_and_instance_keys(
    contract: Contract, clerk: Clerk, machines: Machines
) -> None:
    """revoke_token by the subject's key and by sk; a second revoke keeps the first reason."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        mine = machine.m2m.create_token()
        theirs = machine.m2m.create_token()
        revoked = machine.m2m.revoke_token(m2m_token_id=mine.id, revocation_reason="rotated")
    assert isinstance(revoked, models.RevokeM2MTokenResponseBody)
    assert (revoked.id, revoked.revoked, revoked.revocation_reason) == (mine.id, True, "rotated")
    by_admin = clerk.m2m.revoke_token(m2m_token_id=theirs.id)
    assert (by_admin.revoked, by_admin.revocation_reason) == (True, None)
    again = clerk.m2m.revoke_token(m2m_token_id=mine.id, revocation_reason="other")
    assert again.revocation_reason == "rotated"


def test_revoke_another_machines_token_is_refused(
    contract: Contract, clerk: Clerk, machines: Machines
) -> None:
    """The receiver's key cannot revoke the caller's token: 404; the token stays valid."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        created = machine.m2m.create_token()
    with (
        sdk(contract.server.url, machines.receiver.secret_key) as receiver,
        pytest.raises(models.ClerkBaseError) as caught,
    ):
        receiver.m2m.revoke_token(m2m_token_id=created.id)
    assert caught.value.raw_response.status_code == 404
    assert clerk.m2m.verify_token(token=created.token).revoked is False


def test_verify_token_with_sk_and_receiver(
    contract: Contract, clerk: Clerk, machines: Machines
) -> None:
    """verify_token answers the typed record for sk and for the scoped receiver."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        created = machine.m2m.create_token()
    by_admin = clerk.m2m.verify_token(token=created.token)
    assert isinstance(by_admin, models.VerifyM2MTokenResponseBody)
    assert (by_admin.id, by_admin.subject) == (created.id, machines.caller.id)
    with sdk(contract.server.url, machines.receiver.secret_key) as receiver:
        assert receiver.m2m.verify_token(token=created.token).id == created.id


def test_verify_token_failures_are_404(
    contract: Contract, clerk: Clerk, machines: Machines
) -> None:
    """Unknown, revoked and out-of-scope tokens all raise with status 404 token_invalid."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        created = machine.m2m.create_token()
        revoked = machine.m2m.create_token()
    clerk.m2m.revoke_token(m2m_token_id=revoked.id)
    cases = [
        (contract.sk, "mt_" + secrets.token_hex(16)),
        (contract.sk, revoked.token),
        (machines.bystander.secret_key, created.token),
    ]
    for key, token in cases:
        with (
            sdk(contract.server.url, key) as client,
            pytest.raises(models.ClerkBaseError) as caught,
        ):
            client.m2m.verify_token(token=token)
        assert caught.value.raw_response.status_code == 404
        assert "token_invalid" in caught.value.raw_response.text
        assert token not in caught.value.raw_response.text


def test_request_auth_helper_verifies_opaque_tokens(
    contract: Contract, clerk: Clerk, machines: Machines
) -> None:
    """security.verify_token posts {"secret"} to /m2m_tokens/verify (no /v1): sk or ak."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        created = machine.m2m.create_token()
    as_admin = VerifyTokenOptions(api_url=contract.server.url, secret_key=contract.sk)
    by_admin = helper_verify(created.token, as_admin)
    assert isinstance(by_admin, dict), by_admin
    assert (by_admin["id"], by_admin["subject"]) == (created.id, machines.caller.id)
    by_receiver = helper_verify(
        created.token,
        VerifyTokenOptions(
            api_url=contract.server.url, machine_secret_key=machines.receiver.secret_key
        ),
    )
    assert isinstance(by_receiver, dict), by_receiver
    assert by_receiver["id"] == created.id
    clerk.m2m.revoke_token(m2m_token_id=created.id)
    assert helper_verify(created.token, as_admin) == "token-invalid"


def test_request_auth_helper_refuses_out_of_scope(contract: Contract, machines: Machines) -> None:
    """The bystander's key makes the helper fail with token-invalid."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        created = machine.m2m.create_token()
    options = VerifyTokenOptions(
        api_url=contract.server.url, machine_secret_key=machines.bystander.secret_key
    )
    assert helper_verify(created.token, options) == "token-invalid"


def test_deleted_machine_tokens_are_revoked(
    contract: Contract, clerk: Clerk, machines: Machines
) -> None:
    """After delete, list_tokens(revoked=True) shows machine_deleted and verify fails."""
    with sdk(contract.server.url, machines.caller.secret_key) as machine:
        created = machine.m2m.create_token()
    clerk.machines.delete(machine_id=machines.caller.id)
    listed = clerk.m2m.list_tokens(subject=machines.caller.id, revoked=True)
    assert [(t.id, t.revocation_reason) for t in listed.m2m_tokens] == [
        (created.id, "machine_deleted")
    ]
    with pytest.raises(models.ClerkBaseError) as caught:
        clerk.m2m.verify_token(token=created.token)
    assert caught.value.raw_response.status_code == 404
